"""Property-based tests (hypothesis) of the task loaders and the option validation: any generated input
either loads into a task that round-trips, or raises :class:`TaskError` with a message naming the record
(or the file and line, or the argument), never another exception."""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_neuronllm import Task, TaskError
from tl_neuronllm.data.tasks.items import Item, canon

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text with the troublemakers: combining accents, zero-width characters, a BOM, whitespace, digits, letters
ODD = ["\u0301", "\u200b", "\u200d", "\ufeff", "\u00ad", " ", "\t", "é", "e", "A", "b", "1", "-", ".", "²"]
texts = st.one_of(
    st.text(alphabet=st.sampled_from(ODD), max_size=4),
    st.text(max_size=8),
    st.sampled_from(["cat", "dog", "A", "B. dog", "0", "1", "-1", "--1", "é", "e\u0301", "\u200b", ""]),
)
token_lists = st.lists(st.integers(min_value=-2, max_value=300), max_size=4)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 30), st.floats(allow_nan=True), texts)
values = st.one_of(scalars, token_lists, st.lists(texts, max_size=5), st.dictionaries(texts, scalars, max_size=2))
KEYS = ["id", "question", "options", "choices", "answer", "label", "gold", "answerKey", "context", "passage"]
good_records = st.builds(
    lambda q, opts, a, ctx: {"question": q, "options": opts, "answer": a, **({"context": ctx} if ctx else {})},
    texts,
    st.lists(texts, min_size=2, max_size=5),
    st.one_of(st.integers(-1, 5), st.sampled_from(["A", "B", "b", "C", "1", "cat"]), st.booleans()),
    st.one_of(st.none(), texts),
)
any_records = st.one_of(good_records, st.dictionaries(st.sampled_from(KEYS), values, max_size=6), values)

NAMES_A_RECORD = re.compile(r"record \d+|item '[^']*'|entr(y|ies) \d+|records must be|task '[^']*' is empty")


def _assert_round_trip(task: Task) -> None:
    again = Task.from_records(task.to_records(), name=task.name)
    assert again.items == task.items
    assert json.loads(json.dumps(task.to_records())) == task.to_records()  # JSON-able as saved


@SETTINGS
@given(st.lists(any_records, max_size=4))
def test_from_records_loads_and_round_trips_or_names_the_record(records):
    try:
        task = Task.from_records(records)
    except TaskError as e:
        assert NAMES_A_RECORD.search(str(e)), str(e)
        return
    _assert_round_trip(task)
    for it in task:  # every accepted item passes the checks on comparison text
        shown = [canon(o) for o in it.options if isinstance(o, str)]
        assert all(shown) and len(set(shown)) == len(shown)
        assert not isinstance(it.question, str) or canon(it.question)


@SETTINGS
@given(st.one_of(texts, st.integers(), st.none(), st.dictionaries(st.sampled_from(KEYS), values, max_size=3)))
def test_from_records_of_something_that_is_not_a_list_of_records(records):
    with pytest.raises(TaskError, match=NAMES_A_RECORD):
        Task.from_records(records)


@SETTINGS
@given(st.lists(texts, min_size=1, max_size=4), st.sampled_from(["NFC", "NFD"]), st.sampled_from(ODD[1:5]))
def test_options_equal_after_normalisation_are_duplicates(options, form, invisible):
    twin = unicodedata.normalize(form, options[0]) + invisible  # looks the same as options[0]
    with pytest.raises(TaskError, match=r"item 'x': field '(options|options\[\d+\])' "):
        Item(question="q", options=(*options, twin), answer=0, id="x")


label_values = st.one_of(st.booleans(), st.integers(-1, 3), st.sampled_from(["0", "1", "yes", "no", "True", "x"]))
label_name_sets = st.one_of(
    st.lists(texts, min_size=0, max_size=3),
    st.dictionaries(st.one_of(st.booleans(), st.integers(0, 2), st.sampled_from(["True", "False", "0"])), texts),
)


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"text": texts, "label": label_values}),
            st.dictionaries(st.sampled_from(["text", "label", "id"]), values),
        ),
        min_size=1,
        max_size=4,
    ),
    label_name_sets,
    st.one_of(st.none(), texts),
)
def test_from_classification_loads_and_round_trips_or_names_the_record(rows, label_names, question):
    try:
        task = Task.from_classification(rows, label_names=label_names, question=question)
    except TaskError as e:
        assert NAMES_A_RECORD.search(str(e)) or re.search(r"label_names|question must", str(e)), str(e)
        return
    _assert_round_trip(task)
    for row, it in zip(rows, task):
        assert not isinstance(row["label"], bool) or isinstance(label_names, dict)  # bools never read as 0 / 1
        if isinstance(row["label"], bool):  # ... but as the True / False keys, as from_records refuses answer=True
            key = next(k for k in label_names if str(k) == str(row["label"]))
            assert it.options[it.answer] == label_names[key]


def _jsonl_lines(records) -> list[str]:
    out = []
    for r in records:
        try:
            out.append(json.dumps(r))
        except (TypeError, ValueError):
            out.append("{not json")
    return out


@SETTINGS
@given(st.lists(st.one_of(any_records, st.just("garbage line")), min_size=1, max_size=4))
def test_from_jsonl_loads_and_round_trips_or_names_file_and_line(records):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "t.jsonl"
        lines = [x if isinstance(x, str) and x == "garbage line" else None for x in records]
        body = [ln if ln is not None else s for ln, s in zip(lines, _jsonl_lines(records))]
        f.write_text("\n".join(body), encoding="utf-8")
        try:
            task = Task.from_jsonl(f)
        except TaskError as e:
            assert re.search(r"t\.jsonl:\d+|record \d+|item '|entr(y|ies) \d+", str(e)), str(e)
            return
        _assert_round_trip(task)


csv_cells = st.one_of(texts, st.sampled_from(["A", "B", "0", "1", "", "x, y", 'say "hi"']))


@SETTINGS
@given(
    st.lists(
        st.sampled_from(["question", "answer", "A", "B", "C", "option_0", "option_1", "id", "context", "q"]),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.lists(csv_cells, min_size=0, max_size=7), min_size=0, max_size=4),
)
def test_from_csv_loads_and_round_trips_or_names_the_file(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "t.csv"
        f.write_text(buf.getvalue(), encoding="utf-8")
        try:
            task = Task.from_csv(f)
        except TaskError as e:
            assert re.search(r"t\.csv(:\d+)?|task 't' is empty", str(e)), str(e)
            return
        _assert_round_trip(task)
