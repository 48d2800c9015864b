"""Task files: UTF-8 text with located errors, JSONL objects, and the records of a CSV file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tl_neuronllm.data.tasks.items import LETTERS, TaskError

__all__ = ["csv_records", "jsonl_objects", "read_text"]


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


def csv_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a task CSV (see :meth:`Task.from_csv`), one per row, with ``file:line`` ids by default.

    Raises:
        FileNotFoundError: if the file does not exist.
        TaskError: naming ``file:line``: not UTF-8, no / gapped / mixed option columns, a row with more
            fields than the header, or no ``question`` column.
    """
    path = Path(path)
    recs = []
    text = read_text(path)
    if text.startswith("\ufeff"):  # a byte-order mark (Excel's "CSV UTF-8") is not part of the first column name
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    cols = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = cols
    if "question" not in cols:  # checked first: a short column name ("q") would else read as an option letter
        near = [c for c in cols if c.lower() in ("question", "q", "questions", "stem", "prompt")]
        hint = f"; rename column {near[0]!r} to 'question'" if near else ""
        raise TaskError(f"{path}:1: missing column 'question' (the header has {cols}){hint}")
    opt_cols = _option_columns(cols, path)
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
        if row.get("context"):
            rec["context"] = row["context"]
        recs.append(rec)
    return recs


def _option_columns(cols: list[str], path: Path) -> list[str]:
    """The option columns of a CSV header in order: ``A``, ``B``, ... or ``option_0``, ``option_1``, ...."""
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
        [LETTERS[i] for i in range(len(letter_cols))] if letter_cols else [f"option_{i}" for i in range(len(num_cols))]
    )
    if [c.upper() for c in opt_cols] != [w.upper() for w in want]:
        raise TaskError(
            f"{path}:1: option columns {opt_cols} are not consecutive from the first "
            f"({', '.join(want)}); a gap would shift the answer indices"
        )
    return opt_cols
