"""Classification rows as multiple-choice items whose options are the label names (the paper's
"question-answering-based task transformation"); :meth:`Task.from_classification` is the public entry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tl_neuronllm.data.tasks.items import Item, TaskError, canon

__all__ = ["classification_items", "records_list"]


def records_list(records: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """``records`` as given, or a Hugging Face ``datasets.Dataset`` as its list of rows.

    Raises:
        TaskError: for a string, bytes, a single dict or anything that is not a collection of records.
    """
    to_list = getattr(records, "to_list", None)
    if to_list is not None:
        rows: list[Mapping[str, Any]] = to_list()
        return rows
    if isinstance(records, (str, bytes)):
        raise TaskError(
            f"records must be a list of dicts (one per item), got a {type(records).__name__} {records[:40]!r}; "
            "for a file use Task.from_jsonl / Task.from_csv"
        )
    if isinstance(records, Mapping):
        raise TaskError(
            f"records must be a list of dicts (one per item), got one dict with keys {sorted(map(str, records))[:6]}; "
            "wrap a single record in a list"
        )
    if not isinstance(records, Iterable):
        raise TaskError(f"records must be a list of dicts (one per item), got {type(records).__name__} {records!r}")
    return records


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
    if question is not None and (not isinstance(question, str) or not canon(question)):
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
            if fld != label and isinstance(rec[fld], str) and not canon(rec[fld]):
                raise TaskError(f"{where}: field {fld!r} is empty")
        raw = rec[label]
        idx = _label_index(raw, lookup, label_names, where, label)
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


def _label_index(
    raw: Any, lookup: dict[Any, int], label_names: Sequence[str] | Mapping[Any, str], where: str, label: str
) -> int | None:
    """The option index of a row's raw label (``None`` when it is not one of the labels).

    A ``bool`` label is read only against ``True`` / ``False`` keys of a mapping (or their strings), never as
    the index 0 / 1 of a list: ``from_records`` refuses ``answer=True`` for the same reason.

    Raises:
        TaskError: a bool label with a list of label names.
    """
    if isinstance(raw, bool):
        if not isinstance(label_names, Mapping):
            raise TaskError(
                f"{where}: field {label!r} = {raw!r} is a bool, which a list of label names would read as the index "
                f"{int(raw)}; give label_names as a mapping, e.g. {{False: ..., True: ...}}"
            )
        for key in (raw, str(raw)):
            hit = next((i for i, k in enumerate(label_names) if type(k) in (bool, str) and k == key), None)
            if hit is not None:
                return hit
        return None
    if isinstance(raw, (list, dict, set, tuple)):
        return None
    try:
        idx = lookup.get(raw)
    except TypeError:  # unhashable
        idx = None
    if idx is None:
        idx = lookup.get(canon(str(raw)))
    return idx


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
    bad = [o for o in opts if not isinstance(o, str) or not canon(o)]
    if bad:
        raise TaskError(f"label_names: option text {bad[0]!r} must be a non-empty string")
    if len({canon(o) for o in opts}) != len(opts):
        raise TaskError(f"label_names has duplicate option texts: {opts}")
    lookup: dict[Any, int] = {}
    for i, key in enumerate(keys):
        if not isinstance(key, bool):  # bool keys are matched only by bool labels (see _label_index)
            lookup.setdefault(key, i)
        lookup.setdefault(canon(str(key)), i)
    if not isinstance(label_names, Mapping):
        for i, o in enumerate(opts):
            lookup.setdefault(canon(o), i)
    return keys, opts, lookup
