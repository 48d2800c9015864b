"""Task loaders refuse what they would otherwise silently change, naming the file and line."""

from __future__ import annotations

import pytest

from tl_neuronllm import Task, TaskError
from tl_neuronllm.data.tasks import item_from_record


def test_options_dict_or_set_is_refused():
    with pytest.raises(
        TaskError,
        match=r"item 'x' \(record 0\): field 'options' is a dict, which has no fixed option "
        r"order \(a dict would become its keys\)",
    ):
        item_from_record({"id": "x", "question": "q", "options": {"A": "red", "B": "blue"}, "answer": "A"})
    with pytest.raises(TaskError, match=r"field 'options' is a set"):
        Task.from_records([{"question": "q", "options": {"red", "blue"}, "answer": 0}])


def test_csv_with_byte_order_mark_keeps_its_first_column(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes("\ufeffquestion,A,B,answer\nsky?,red,blue,B\n".encode("utf-8"))
    task = Task.from_csv(f)
    assert task[0].question == "sky?" and task[0].answer == 1


def test_csv_extra_fields_gaps_and_mixed_columns(tmp_path):
    f = tmp_path / "extra.csv"
    f.write_text("question,A,B,answer\nsky?,red,blue,B\nsea?,red,blue,B,green\n")
    with pytest.raises(TaskError, match=rf"{f}:3: 1 more field\(s\) than the 4 header columns \(\['green'\]\)"):
        Task.from_csv(f)
    f.write_text("question,A,B,D,answer\nsky?,red,blue,green,B\n")
    with pytest.raises(TaskError, match=r":1: option columns \['A', 'B', 'D'\] are not consecutive"):
        Task.from_csv(f)
    f.write_text("question,A,B,option_2,answer\nsky?,red,blue,green,B\n")
    with pytest.raises(TaskError, match=r":1: both letter option columns"):
        Task.from_csv(f)


def test_non_utf8_files_name_file_and_line(tmp_path):
    f = tmp_path / "latin.jsonl"
    f.write_bytes(
        b'{"question": "q", "options": ["a", "b"], "answer": 0}\n'
        b'{"question": "caf\xe9", "options": ["a", "b"], "answer": 0}\n'
    )
    with pytest.raises(TaskError, match=rf"{f}:2: not UTF-8 text \(byte 0xe9"):
        Task.from_jsonl(f)
    c = tmp_path / "latin.csv"
    c.write_bytes(b"question,A,B,answer\ncaf\xe9,a,b,0\n")
    with pytest.raises(TaskError, match=rf"{c}:2: not UTF-8"):
        Task.from_csv(c)


def test_jsonl_non_object_line_and_missing_file(tmp_path):
    f = tmp_path / "list.jsonl"
    f.write_text('{"question": "q", "options": ["a", "b"], "answer": 0}\n["q", ["a", "b"], 0]\n')
    with pytest.raises(TaskError, match=rf"{f}:2: expected a JSON object \(a record\), got list"):
        Task.from_jsonl(f)
    with pytest.raises(FileNotFoundError, match=r"task file .*nothere.jsonl does not exist"):
        Task.from_jsonl(tmp_path / "nothere.jsonl")
