"""Multiple-choice items: :class:`Item`, its validation, and :func:`item_from_record` (one record -> one item)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tl_neuronllm.errors import TaskError

__all__ = ["LETTERS", "MAX_OPTIONS", "Item", "TaskError", "Text", "TokenSeq", "canon", "item_from_record"]

MAX_OPTIONS = 26
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

TokenSeq = tuple[int, ...]
Text = str | TokenSeq


def canon(text: str) -> str:
    """``text`` as compared and checked: NFC-normalised (``"e" + U+0301`` is ``"é"``), without invisible
    format characters (zero-width space and joiners, byte-order mark, soft hyphen: Unicode category Cf)
    and stripped of surrounding whitespace. Stored text is kept as given; only comparisons use this."""
    text = unicodedata.normalize("NFC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip()


def _as_text(value: Any, where: str, fld: str, *, allow_empty: bool = False) -> Text:
    if isinstance(value, str):
        if not allow_empty and not canon(value):
            raise TaskError(f"{where}: field '{fld}' is empty (or only whitespace / invisible characters)")
        return value
    if isinstance(value, bytes):
        raise TaskError(f"{where}: field '{fld}' is bytes; decode it to a string (UTF-8)")
    if isinstance(value, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        if not allow_empty and len(value) == 0:
            raise TaskError(f"{where}: field '{fld}' is an empty token list")
        if any(t < 0 for t in value):
            raise TaskError(f"{where}: field '{fld}' has a negative token id")
        return tuple(int(t) for t in value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # tensors / arrays of token ids
        return _as_text(tolist(), where, fld, allow_empty=allow_empty)
    raise TaskError(f"{where}: field '{fld}' must be a string or a list of token ids, got {type(value).__name__}")


@dataclass(frozen=True)
class Item:
    """One multiple-choice question.

    Attributes:
        question: The stem (a string, or a tuple of token ids for token-level tasks).
        options: The options, 2 to 26 of them, all distinct.
        answer: Index of the correct option in ``options``.
        context: Optional passage shown before the question.
        id: A name for error messages and exports.
    """

    question: Text
    options: tuple[Text, ...]
    answer: int
    context: Text | None = None
    id: str = ""

    def __repr__(self) -> str:
        def short(t: Any, n: int) -> str:
            s = " ".join(t.split()) if isinstance(t, str) else "tokens " + " ".join(map(str, t))
            return repr(s if len(s) <= n else s[: n - 1] + "…")

        opts = ", ".join(short(o, 24) for o in self.options[:4]) + (", …" if len(self.options) > 4 else "")
        ctx = ", with context" if self.context else ""
        return f"Item(id={self.id!r}, question={short(self.question, 60)}, options=[{opts}], answer={self.answer}{ctx})"

    def __post_init__(self) -> None:
        where = f"item {self.id!r}" if self.id else "item"
        object.__setattr__(self, "question", _as_text(self.question, where, "question"))
        if self.options is None or isinstance(self.options, (str, bytes)):
            raise TaskError(f"{where}: field 'options' must be a list of options, got {self.options!r}")
        if isinstance(self.options, (Mapping, set, frozenset)):
            raise TaskError(
                f"{where}: field 'options' is a {type(self.options).__name__}, which has no fixed option "
                "order (a dict would become its keys); give a list of options"
            )
        if not isinstance(self.options, Sequence) and not callable(getattr(self.options, "tolist", None)):
            raise TaskError(
                f"{where}: field 'options' must be a list of options, got {type(self.options).__name__} "
                f"{self.options!r}"
            )
        raw = self.options.tolist() if not isinstance(self.options, Sequence) else self.options  # type: ignore[union-attr]
        opts = tuple(_as_text(o, where, f"options[{i}]") for i, o in enumerate(raw))
        if len(opts) < 2:
            raise TaskError(f"{where}: field 'options' has {len(opts)} option(s); at least 2 are needed")
        if len(opts) > MAX_OPTIONS:
            raise TaskError(
                f"{where}: field 'options' has {len(opts)} options; at most {MAX_OPTIONS} (A-Z) are supported"
            )
        norm = [canon(o) if isinstance(o, str) else o for o in opts]
        seen: dict[Any, int] = {}
        for i, o in enumerate(norm):
            if o in seen:
                raise TaskError(f"{where}: field 'options' has duplicate options {seen[o]} and {i}: {opts[i]!r}")
            seen[o] = i
        object.__setattr__(self, "options", opts)
        if isinstance(self.answer, bool) or not isinstance(self.answer, int):
            raise TaskError(f"{where}: field 'answer' must be an option index (int), got {self.answer!r}")
        if not 0 <= self.answer < len(opts):
            raise TaskError(f"{where}: field 'answer' = {self.answer} is out of range for {len(opts)} options")
        if self.context is not None:
            object.__setattr__(self, "context", _as_text(self.context, where, "context", allow_empty=True))
        kinds = {type(self.question)} | {type(o) for o in opts}
        if self.context is not None:
            kinds.add(type(self.context))
        if len(kinds) > 1:
            raise TaskError(f"{where}: mixes text and token-id fields; use one kind for all fields")

    @property
    def is_tokens(self) -> bool:
        """True for token-level items (fields are token-id tuples)."""
        return isinstance(self.question, tuple)

    @property
    def n_options(self) -> int:
        return len(self.options)

    def content_key(self) -> str:
        """A hash of the item's content (context, question and the set of options; not its id or the
        option order), so that the same question under another id or option order is recognised."""
        norm = lambda v: canon(v) if isinstance(v, str) else list(v)
        body = [
            norm(self.context) if self.context is not None else None,
            norm(self.question),
            sorted(json.dumps(norm(o)) for o in self.options),
        ]
        return hashlib.sha1(json.dumps(body).encode("utf-8")).hexdigest()[:16]

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`Task.from_records` reads back."""
        conv = (lambda v: list(v)) if self.is_tokens else (lambda v: v)
        rec: dict[str, Any] = {
            "id": self.id,
            "question": conv(self.question),
            "options": [conv(o) for o in self.options],
            "answer": self.answer,
        }
        if self.context is not None:
            rec["context"] = conv(self.context)
        return rec


_ANSWER_KEYS = ("answer", "label", "gold", "answerKey")


def _answer_index(value: Any, options: Sequence[Any], where: str) -> int:
    """Accept an int index, a letter ("B"), a letter-prefixed string ("B. text") or the option text."""
    if isinstance(value, bool):
        raise TaskError(f"{where}: field 'answer' must be an index, a letter or the option text, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = canon(value)
        if re.fullmatch(r"-?[0-9]+", s):
            return int(s)
        if len(s) == 1 and s.upper() in LETTERS:
            return LETTERS.index(s.upper())
        for i, o in enumerate(options):
            if isinstance(o, str) and canon(o) == s:
                return i
        if len(s) >= 2 and s[0].upper() in LETTERS and s[1] in ".):":
            return LETTERS.index(s[0].upper())
    raise TaskError(f"{where}: field 'answer' = {value!r} is neither an index, a letter nor one of the options")


def _short(value: Any, n: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def item_from_record(rec: Mapping[str, Any], *, index: int = 0) -> Item:
    """Build an :class:`Item` from a dict with ``question``, ``options``, ``answer`` (and ``context``)."""
    if not isinstance(rec, Mapping):
        raise TaskError(
            f"record {index}: expected a dict with question, options and answer, got {type(rec).__name__} {_short(rec)}"
        )
    rid = str(rec.get("id", index))
    where = f"item {rid!r} (record {index})"
    if "question" not in rec:
        raise TaskError(f"{where}: missing field 'question'")
    if "options" not in rec and "choices" not in rec:
        raise TaskError(f"{where}: missing field 'options'")
    options = rec.get("options", rec.get("choices"))
    if isinstance(options, (str, bytes)):
        raise TaskError(f"{where}: field 'options' is a single string; give a list of options")
    if isinstance(options, (Mapping, set, frozenset)):
        raise TaskError(
            f"{where}: field 'options' is a {type(options).__name__}, which has no fixed option order "
            "(a dict would become its keys); give a list of options"
        )
    if options is not None and not isinstance(options, Sequence) and not callable(getattr(options, "tolist", None)):
        raise TaskError(f"{where}: field 'options' must be a list of options, got {type(options).__name__} {options!r}")
    if options is not None and not isinstance(options, Sequence):
        options = options.tolist()  # an array or tensor of options
        if not isinstance(options, Sequence):
            raise TaskError(f"{where}: field 'options' must be a list of options, got {options!r}")
    if options is None or len(options) == 0:
        raise TaskError(f"{where}: field 'options' is missing or empty")
    key = next((k for k in _ANSWER_KEYS if k in rec and rec[k] is not None and rec[k] != ""), None)
    if key is None:
        raise TaskError(f"{where}: missing field 'answer' (the index of the correct option)")
    answer = _answer_index(rec[key], list(options), where)
    context = rec.get("context", rec.get("passage"))
    try:
        return Item(question=rec["question"], options=tuple(options), answer=answer, context=context, id=rid)
    except TaskError as e:
        raise TaskError(str(e).replace(f"item {rid!r}", where, 1)) from None
