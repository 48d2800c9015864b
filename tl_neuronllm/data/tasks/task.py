"""The :class:`Task`: a named, validated list of items, its subsets and splits, and its loaders."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tl_neuronllm.data.tasks.classification import classification_items, records_list
from tl_neuronllm.data.tasks.files import csv_records, jsonl_objects
from tl_neuronllm.data.tasks.items import Item, TaskError, item_from_record

__all__ = ["Task"]


@dataclass(frozen=True)
class Task:
    """A named, validated list of multiple-choice items of one kind (all text or all tokens)."""

    items: tuple[Item, ...]
    name: str = "task"
    instruction: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TaskError(f"task name must be a string, got {type(self.name).__name__} {self.name!r}")
        if self.instruction is not None and not isinstance(self.instruction, str):
            raise TaskError(f"task {self.name!r}: instruction must be a string or None, got {self.instruction!r}")
        if isinstance(self.items, (str, bytes, Mapping)) or not isinstance(self.items, Iterable):
            raise TaskError(
                f"task {self.name!r}: items must be a list of Item, got {type(self.items).__name__}; "
                "use Task.from_records(...) for dicts"
            )
        items = tuple(self.items)
        if not items:
            raise TaskError(f"task {self.name!r} is empty: it needs at least one item")
        for i, it in enumerate(items):
            if not isinstance(it, Item):
                raise TaskError(f"task {self.name!r}: entry {i} is a {type(it).__name__}, not an Item")
        odd = next((i for i, it in enumerate(items) if it.is_tokens != items[0].is_tokens), None)
        if odd is not None:
            kind = lambda it: "token ids" if it.is_tokens else "text"
            raise TaskError(
                f"task {self.name!r} mixes text items and token-id items: entry {odd} (item {items[odd].id!r}) is "
                f"{kind(items[odd])}, entry 0 (item {items[0].id!r}) is {kind(items[0])}"
            )
        # give items stable ids when none were given
        fixed = tuple(
            it if it.id else Item(it.question, it.options, it.answer, it.context, str(i)) for i, it in enumerate(items)
        )
        ids = [it.id for it in fixed]
        if len(set(ids)) != len(ids):
            seen: dict[str, int] = {}
            for j, x in enumerate(ids):
                if x in seen:
                    raise TaskError(f"task {self.name!r}: duplicate item id {x!r} (entries {seen[x]} and {j})")
                seen[x] = j
        object.__setattr__(self, "items", fixed)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        kind = "token" if self.is_tokens else "text"
        opts = sorted({len(it.options) for it in self.items})
        n_opt = str(opts[0]) if len(opts) == 1 else f"{opts[0]}-{opts[-1]}"
        return f"Task({self.name!r}, {len(self.items)} {kind} items, {n_opt} options, first item {self.items[0].id!r})"

    def __getitem__(self, i: int) -> Item:
        return self.items[i]

    def __iter__(self) -> Iterator[Item]:
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
    ) -> tuple[Task, Task | None, Task | None]:
        """Deterministic disjoint (identify, heldout, demo) split after a seeded shuffle.

        Counts may be ints or fractions of the task. ``n_heldout=None`` takes all remaining items. An
        empty held-out or demo part is ``None``.

        Raises:
            TaskError: when the counts do not fit the task.
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

        def part(idx: list[int], suffix: str) -> Task:
            items = tuple(self.items[i] for i in sorted(idx))
            return Task(items, name=f"{self.name}:{suffix}", instruction=self.instruction)

        return part(ident, "identify"), part(held, "heldout") if held else None, part(demo, "demo") if demo else None

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
        items = [item_from_record(r, index=i) for i, r in enumerate(records_list(records))]
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
        items = classification_items(
            records, label_names=label_names, text=text, label=label, question=question, context=context
        )
        return cls(tuple(items), name=name, instruction=instruction)

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
        return cls.from_records(csv_records(path), name=name or path.stem, instruction=instruction)
