"""Tasks: multiple-choice items, loaders (records, JSONL, CSV), validation and splits.

An :class:`Item` is one multiple-choice question: a stem, 2 to 26 options, the index of the
correct one and an optional context (passage). Items are either *text* items (strings, rendered
with the model's tokenizer) or *token* items (lists of token ids, for models without a tokenizer
such as ``TransformerBridge.boot_native`` models). A :class:`Task` is a named, validated list of
items of one kind. Every validation error names the item and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_OPTIONS = 26
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

TokenSeq = tuple[int, ...]
Text = str | TokenSeq


class TaskError(ValueError):
    """Raised for malformed items or tasks; the message names the item and the field."""


def _as_text(value: Any, where: str, fld: str, *, allow_empty: bool = False) -> Text:
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise TaskError(f"{where}: field '{fld}' is empty")
        return value
    if isinstance(value, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        if not allow_empty and len(value) == 0:
            raise TaskError(f"{where}: field '{fld}' is an empty token list")
        if any(t < 0 for t in value):
            raise TaskError(f"{where}: field '{fld}' has a negative token id")
        return tuple(int(t) for t in value)
    if hasattr(value, "tolist"):  # tensors / arrays of token ids
        return _as_text(value.tolist(), where, fld, allow_empty=allow_empty)
    raise TaskError(f"{where}: field '{fld}' must be a string or a list of token ids, got {type(value).__name__}")


def jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file.

    Raises:
        FileNotFoundError: naming the file, if it does not exist.
        TaskError: naming ``file:line``, for text that is not UTF-8, not JSON or not a JSON object.
    """
    path = Path(path)
    for ln, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}:{ln}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise TaskError(f"{path}:{ln}: expected a JSON object (a record), got {type(rec).__name__}")
        yield ln, rec


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a task file; a decoding error names the file, line and byte.

    Raises:
        FileNotFoundError: naming the file, if it does not exist.
        TaskError: if the file is not UTF-8 (naming ``file:line``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist" if not path.exists() else f"{path} is not a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TaskError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save the file as UTF-8"
        ) from None


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
        opts = tuple(_as_text(o, where, f"options[{i}]") for i, o in enumerate(self.options))
        if len(opts) < 2:
            raise TaskError(f"{where}: field 'options' has {len(opts)} option(s); at least 2 are needed")
        if len(opts) > MAX_OPTIONS:
            raise TaskError(
                f"{where}: field 'options' has {len(opts)} options; at most {MAX_OPTIONS} (A-Z) are supported"
            )
        norm = [o.strip() if isinstance(o, str) else o for o in opts]
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
        norm = lambda v: v.strip() if isinstance(v, str) else list(v)
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
        s = value.strip()
        if s.lstrip("-").isdigit():
            return int(s)
        if len(s) == 1 and s.upper() in LETTERS:
            return LETTERS.index(s.upper())
        for i, o in enumerate(options):
            if isinstance(o, str) and o.strip() == s:
                return i
        if len(s) >= 2 and s[0].upper() in LETTERS and s[1] in ".):":
            return LETTERS.index(s[0].upper())
    raise TaskError(f"{where}: field 'answer' = {value!r} is neither an index, a letter nor one of the options")


def item_from_record(rec: Mapping[str, Any], *, index: int = 0) -> Item:
    """Build an :class:`Item` from a dict with ``question``, ``options``, ``answer`` (and ``context``)."""
    rid = str(rec.get("id", index))
    where = f"item {rid!r} (record {index})"
    if not isinstance(rec, Mapping):
        raise TaskError(f"record {index}: expected a dict, got {type(rec).__name__}")
    if "question" not in rec:
        raise TaskError(f"{where}: missing field 'question'")
    if "options" not in rec and "choices" not in rec:
        raise TaskError(f"{where}: missing field 'options'")
    options = rec.get("options", rec.get("choices"))
    if isinstance(options, str):
        raise TaskError(f"{where}: field 'options' is a single string; give a list of options")
    if isinstance(options, (Mapping, set, frozenset)):
        raise TaskError(
            f"{where}: field 'options' is a {type(options).__name__}, which has no fixed option order "
            "(a dict would become its keys); give a list of options"
        )
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


@dataclass(frozen=True)
class Task:
    """A named, validated list of multiple-choice items of one kind (all text or all tokens)."""

    items: tuple[Item, ...]
    name: str = "task"
    instruction: str | None = None

    def __post_init__(self) -> None:
        items = tuple(self.items)
        if not items:
            raise TaskError(f"task {self.name!r} is empty: it needs at least one item")
        for i, it in enumerate(items):
            if not isinstance(it, Item):
                raise TaskError(f"task {self.name!r}: entry {i} is a {type(it).__name__}, not an Item")
        kinds = {it.is_tokens for it in items}
        if len(kinds) > 1:
            raise TaskError(f"task {self.name!r} mixes text items and token-id items")
        # give items stable ids when none were given
        fixed = tuple(
            it if it.id else Item(it.question, it.options, it.answer, it.context, str(i)) for i, it in enumerate(items)
        )
        ids = [it.id for it in fixed]
        if len(set(ids)) != len(ids):
            dup = next(x for x in ids if ids.count(x) > 1)
            raise TaskError(f"task {self.name!r}: duplicate item id {dup!r}")
        object.__setattr__(self, "items", fixed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]

    def __iter__(self):
        return iter(self.items)

    @property
    def is_tokens(self) -> bool:
        return self.items[0].is_tokens

    @property
    def max_options(self) -> int:
        return max(it.n_options for it in self.items)

    def subset(self, indices: Iterable[int], name: str | None = None) -> Task:
        """A task with the items at ``indices`` (ids kept)."""
        return Task(tuple(self.items[i] for i in indices), name=name or self.name, instruction=self.instruction)

    def split(
        self, n_identify: int | float, n_heldout: int | float | None = None, *, n_demo: int = 5, seed: int = 0
    ) -> tuple[Task, Task, Task]:
        """Deterministic disjoint (identify, heldout, demo) split after a seeded shuffle.

        Counts may be ints or fractions of the task. ``n_heldout=None`` takes all remaining items.
        """
        n = len(self.items)

        def count(x: int | float) -> int:
            return int(round(x * n)) if isinstance(x, float) and x <= 1.0 else int(x)

        nd = count(n_demo)
        ni = count(n_identify)
        rest = n - nd - ni
        nh = rest if n_heldout is None else count(n_heldout)
        if nd < 0 or ni < 1 or nh < 0 or nd + ni + nh > n:
            raise TaskError(
                f"task {self.name!r} has {n} items; cannot split into demo={nd}, identify={ni}, heldout={nh}"
            )
        order = list(range(n))
        random.Random(seed).shuffle(order)
        demo = order[:nd]
        ident = order[nd : nd + ni]
        held = order[nd + ni : nd + ni + nh]
        mk = lambda idx, suffix: (
            Task(tuple(self.items[i] for i in sorted(idx)), name=f"{self.name}:{suffix}", instruction=self.instruction)
            if idx
            else None
        )
        return mk(ident, "identify"), mk(held, "heldout"), mk(demo, "demo")

    def to_records(self) -> list[dict[str, Any]]:
        return [it.to_record() for it in self.items]

    # ---- loaders -------------------------------------------------------------------------
    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], *, name: str = "task", instruction: str | None = None
    ) -> Task:
        """Build a task from dicts with ``question``, ``options`` (list), ``answer`` (index, letter or text).

        Also reads ``choices`` for options, ``label``/``gold``/``answerKey`` for the answer and
        ``passage`` for the context, so Hugging Face ``datasets`` rows usually load as they are.
        """
        if hasattr(records, "to_list"):  # a datasets.Dataset
            records = records.to_list()
        items = [item_from_record(r, index=i) for i, r in enumerate(records)]
        return cls(tuple(items), name=name, instruction=instruction)

    @classmethod
    def from_classification(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        label_names: Sequence[str] | Mapping[Any, str],
        text: str = "text",
        label: str = "label",
        question: str | None = None,
        context: str | None = None,
        name: str = "task",
        instruction: str | None = None,
    ) -> Task:
        """Turn classification rows into a multiple-choice task whose options are the label names
        (the paper's "question-answering-based task transformation").

        Two row shapes:

        * ``(text, label)`` rows (sentiment, topic, ...): give a fixed ``question`` string; the row's
          ``text`` field becomes the item's context (passage) and ``question`` its stem, e.g.
          ``Task.from_classification(rows, label_names={"0": "negative", "1": "positive"},
          question="Is the sentiment of this review positive or negative?")``.
        * ``(passage, question, label)`` rows (BoolQ, NLI, ...): name the passage field with
          ``context`` and the question field with ``text``, e.g.
          ``Task.from_classification(rows, text="question", context="passage", label="answer",
          label_names={"False": "no", "True": "yes"})``.

        Args:
            records: Dicts (or a ``datasets.Dataset``); an ``id`` field is kept as the item id.
            label_names: The options, in order: a list (labels are indices into it, as ints or digit
                strings, or one of its names) or a mapping ``raw label -> option text`` (keys compared
                as given and as strings, so ``True`` finds ``"True"``).
            text: Field holding the stem (or, with ``question``, the passage).
            label: Field holding the label.
            question: A fixed question stem for every item; the ``text`` field becomes the context.
            context: Field holding a passage shown before the stem (not with ``question``).
            name: Task name.
            instruction: Instruction line of the prompts.

        Returns:
            A :class:`Task` whose items have ``len(label_names)`` options and the label's index as answer.

        Raises:
            TaskError: fewer than 2 or duplicate label names, both ``question`` and ``context``, a record
                that is not a dict, a missing or empty field, or a label that is not one of the label
                names (naming the record, its id and the field).
        """
        if isinstance(label_names, Mapping):
            keys = list(label_names)
            opts = [label_names[k] for k in keys]
        elif isinstance(label_names, (str, bytes)) or not isinstance(label_names, Sequence):
            raise TaskError(
                f"label_names must be a list of option texts or a mapping label -> text, got {label_names!r}"
            )
        else:
            keys, opts = list(range(len(label_names))), list(label_names)
        if len(opts) < 2:
            raise TaskError(f"label_names has {len(opts)} name(s); a classification task needs at least 2")
        bad = [o for o in opts if not isinstance(o, str) or not o.strip()]
        if bad:
            raise TaskError(f"label_names: option text {bad[0]!r} must be a non-empty string")
        if len({o.strip() for o in opts}) != len(opts):
            raise TaskError(f"label_names has duplicate option texts: {opts}")
        if question is not None and (not isinstance(question, str) or not question.strip()):
            raise TaskError(f"question must be a non-empty string (the stem of every item), got {question!r}")
        if question is not None and context is not None:
            raise TaskError(
                "give either question= (a fixed stem; the text field becomes the passage) or context= "
                "(a passage field; the text field is the stem), not both"
            )
        lookup: dict[Any, int] = {}
        for i, key in enumerate(keys):
            lookup.setdefault(key, i)
            lookup.setdefault(str(key).strip(), i)
        if not isinstance(label_names, Mapping):
            for i, o in enumerate(opts):
                lookup.setdefault(o.strip(), i)
        if hasattr(records, "to_list"):  # a datasets.Dataset
            records = records.to_list()
        out = []
        for i, rec in enumerate(records):
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
        return cls(tuple(out), name=name, instruction=instruction)

    @classmethod
    def from_jsonl(cls, path: str | Path, *, name: str | None = None, instruction: str | None = None) -> Task:
        """Read one JSON record per line (blank lines skipped); errors name the file and line.

        Raises:
            FileNotFoundError: if the file does not exist.
            TaskError: naming ``file:line``: not UTF-8, not JSON, not an object, or a malformed item.
        """
        path = Path(path)
        recs = []
        for ln, rec in jsonl_objects(path):
            rec.setdefault("id", f"{path.name}:{ln}")
            recs.append(rec)
        return cls.from_records(recs, name=name or path.stem, instruction=instruction)

    @classmethod
    def from_csv(cls, path: str | Path, *, name: str | None = None, instruction: str | None = None) -> Task:
        """Read a CSV with columns ``question``, ``answer``, option columns ``A``, ``B``, ... (or
        ``option_0``, ``option_1``, ...) and optionally ``context`` and ``id``. Empty trailing option
        cells are ignored, so rows may have different numbers of options. A UTF-8 byte-order mark is
        skipped; other columns are ignored (like extra keys of JSON records).

        Raises:
            FileNotFoundError: if the file does not exist.
            TaskError: naming ``file:line``: not UTF-8, no / gapped / mixed option columns, a row with
                more fields than the header, or a malformed item.
        """
        path = Path(path)
        recs = []
        text = read_text(path)
        if text.startswith("\ufeff"):  # a byte-order mark (Excel's "CSV UTF-8") is not part of the first column name
            text = text[1:]
        reader = csv.DictReader(io.StringIO(text, newline=""))
        cols = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = cols
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise TaskError(f"{path}:1: duplicate column(s) {dup}")
        letter_cols = [c for c in cols if len(c) == 1 and c.upper() in LETTERS]
        num_cols = [c for c in cols if c.startswith("option_")]
        if letter_cols and num_cols:
            raise TaskError(
                f"{path}:1: both letter option columns {letter_cols} and numbered ones {num_cols}; use one style"
            )
        bad_num = [c for c in num_cols if not c[len("option_") :].isdigit()]
        if bad_num:
            raise TaskError(f"{path}:1: option column {bad_num[0]!r} is not option_<number>")
        num_cols.sort(key=lambda c: int(c[len("option_") :]))
        opt_cols = letter_cols or num_cols
        if not opt_cols:
            raise TaskError(f"{path}: no option columns (expected A, B, ... or option_0, option_1, ...)")
        want = (
            [LETTERS[i] for i in range(len(letter_cols))]
            if letter_cols
            else [f"option_{i}" for i in range(len(num_cols))]
        )
        if [c.upper() for c in opt_cols] != [w.upper() for w in want]:
            raise TaskError(
                f"{path}:1: option columns {opt_cols} are not consecutive from the first "
                f"({', '.join(want)}); a gap would shift the answer indices"
            )
        for ln, row in enumerate(reader, 2):
            if None in row:  # more cells than header columns: csv would drop them silently
                raise TaskError(
                    f"{path}:{reader.line_num}: {len(row[None])} more field(s) than the {len(cols)} "
                    f"header columns ({row[None]!r}); quote fields that contain commas"
                )
            opts = [row[c] for c in opt_cols]
            while opts and (opts[-1] is None or opts[-1] == ""):
                opts.pop()
            rec = {
                "id": row.get("id") or f"{path.name}:{ln}",
                "question": row.get("question"),
                "options": opts,
                "answer": row.get("answer"),
            }
            if row.get("question") is None:
                raise TaskError(f"{path}: missing column 'question'")
            if row.get("context"):
                rec["context"] = row["context"]
            recs.append(rec)
        return cls.from_records(recs, name=name or path.stem, instruction=instruction)
