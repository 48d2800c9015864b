"""Classification rows as multiple-choice items whose options are the label names (the paper's
"question-answering-based task transformation"); :meth:`Task.from_classification` is the public entry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tl_neuronllm.data.tasks.items import Item, TaskError

__all__ = ["classification_items", "records_list"]


def records_list(records: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """``records`` as given, or a Hugging Face ``datasets.Dataset`` as its list of rows."""
    to_list = getattr(records, "to_list", None)
    if to_list is None:
        return records
    rows: list[Mapping[str, Any]] = to_list()
    return rows


def classification_items(
    records: Iterable[Mapping[str, Any]],
    *,
    label_names: Sequence[str] | Mapping[Any, str],
    text: str = "text",
    label: str = "label",
    question: str | None = None,
    context: str | None = None,
) -> list[Item]:
    """The items of :meth:`Task.from_classification` (which documents the arguments).

    Raises:
        TaskError: as :meth:`Task.from_classification`.
    """
    keys, opts, lookup = _label_lookup(label_names)
    if question is not None and (not isinstance(question, str) or not question.strip()):
        raise TaskError(f"question must be a non-empty string (the stem of every item), got {question!r}")
    if question is not None and context is not None:
        raise TaskError(
            "give either question= (a fixed stem; the text field becomes the passage) or context= "
            "(a passage field; the text field is the stem), not both"
        )
    out = []
    for i, rec in enumerate(records_list(records)):
        if not isinstance(rec, Mapping):
            raise TaskError(f"record {i}: expected a dict, got {type(rec).__name__}")
        rid = str(rec.get("id", i))
        where = f"item {rid!r} (record {i})"
        for fld in (text, label) + ((context,) if context is not None else ()):
            if fld not in rec or rec[fld] is None:
                raise TaskError(f"{where}: missing field {fld!r}")
            if fld != label and isinstance(rec[fld], str) and not rec[fld].strip():
                raise TaskError(f"{where}: field {fld!r} is empty")
        raw = rec[label]
        idx = lookup.get(raw) if not isinstance(raw, (list, dict)) else None
        if idx is None and not isinstance(raw, (list, dict)):
            idx = lookup.get(str(raw).strip())
        if idx is None:
            allowed = [str(k) for k in keys]
            raise TaskError(f"{where}: field {label!r} = {raw!r} is not one of the labels {allowed}")
        if question is not None:
            stem, passage = question, rec[text]
        else:
            stem, passage = rec[text], rec[context] if context is not None else None
        try:
            out.append(Item(question=stem, options=tuple(opts), answer=idx, context=passage, id=rid))
        except TaskError as e:  # a field of the wrong type: name the record's field, not the item's
            fields_of = {"context": text if question is not None else context, "question": text}
            msg = str(e).replace(f"item {rid!r}", where, 1)
            for item_field, rec_field in fields_of.items():
                msg = msg.replace(f"field '{item_field}'", f"field {rec_field!r}")
            raise TaskError(msg) from None
    return out


def _label_lookup(label_names: Sequence[str] | Mapping[Any, str]) -> tuple[list[Any], list[str], dict[Any, int]]:
    """``(raw labels, option texts, raw label or its string or option text -> option index)``."""
    if isinstance(label_names, Mapping):
        keys: list[Any] = list(label_names)
        opts = [label_names[k] for k in keys]
    elif isinstance(label_names, (str, bytes)) or not isinstance(label_names, Sequence):
        raise TaskError(f"label_names must be a list of option texts or a mapping label -> text, got {label_names!r}")
    else:
        keys, opts = list(range(len(label_names))), list(label_names)
    if len(opts) < 2:
        raise TaskError(f"label_names has {len(opts)} name(s); a classification task needs at least 2")
    bad = [o for o in opts if not isinstance(o, str) or not o.strip()]
    if bad:
        raise TaskError(f"label_names: option text {bad[0]!r} must be a non-empty string")
    if len({o.strip() for o in opts}) != len(opts):
        raise TaskError(f"label_names has duplicate option texts: {opts}")
    lookup: dict[Any, int] = {}
    for i, key in enumerate(keys):
        lookup.setdefault(key, i)
        lookup.setdefault(str(key).strip(), i)
    if not isinstance(label_names, Mapping):
        for i, o in enumerate(opts):
            lookup.setdefault(o.strip(), i)
    return keys, opts, lookup
