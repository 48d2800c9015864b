"""Items, tasks and loaders: validation errors name the item and the field."""

import json

import pytest

from tl_neuronllm import Item, Task, TaskError


def rec(**kw):
    base = {"question": "Q?", "options": ["a", "b", "c"], "answer": 1}
    base.update(kw)
    return base


def test_from_records_answers_in_many_forms():
    t = Task.from_records(
        [
            rec(),
            rec(answer="C"),
            rec(answer="c"),
            rec(answer="B. b"),
            rec(answer="2"),
            {"question": "x", "choices": ["p", "q"], "label": 0, "passage": "ctx"},
        ]
    )
    assert [it.answer for it in t] == [1, 2, 2, 1, 2, 0]
    assert t[5].context == "ctx" and len(t) == 6 and t[0].id == "0"


@pytest.mark.parametrize(
    "bad, msg",
    [
        (rec(options=[]), "field 'options' is missing or empty"),
        (rec(options=["a"], answer=0), "field 'options' has 1 option"),
        (rec(options=["a", " a "]), "duplicate options 0 and 1"),
        (rec(options=["a", ""], answer=0), r"field 'options\[1\]' is empty"),
        (rec(answer=3), "field 'answer' = 3 is out of range for 3 options"),
        (rec(answer=-1), "out of range"),
        (rec(answer="Z!"), "neither an index, a letter nor one of the options"),
        (rec(options=[str(i) for i in range(27)], answer=0), "at most 26"),
        (rec(question=""), "field 'question' is empty"),
        ({"options": ["a", "b"], "answer": 0}, "missing field 'question'"),
        ({"question": "q", "answer": 0}, "missing field 'options'"),
        ({"question": "q", "options": ["a", "b"]}, "missing field 'answer'"),
        (rec(options="a, b"), "single string"),
        (rec(question=[1, 2], options=["a", "b"], answer=0), "mixes text and token-id"),
    ],
)
def test_validation_errors_name_item_and_field(bad, msg):
    bad = dict(bad, id="item-7")
    with pytest.raises(TaskError, match=msg) as e:
        Task.from_records([rec(), bad])
    assert "item-7" in str(e.value)


def test_empty_and_mixed_tasks():
    with pytest.raises(TaskError, match="empty"):
        Task.from_records([])
    with pytest.raises(TaskError, match="mixes text items and token-id items"):
        Task.from_records([rec(), {"question": [1], "options": [[2], [3]], "answer": 0}])
    with pytest.raises(TaskError, match="duplicate item id"):
        Task.from_records([rec(id="a"), rec(id="a")])


def test_token_items():
    it = Item(question=[1, 2], options=([3], [4, 5]), answer=1)
    assert it.is_tokens and it.options == ((3,), (4, 5))
    with pytest.raises(TaskError, match="negative token id"):
        Item(question=[1, -2], options=([3], [4]), answer=0)


def test_jsonl_and_csv_loaders(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(rec()) + "\n\n" + json.dumps(rec(answer="A")) + "\n")
    t = Task.from_jsonl(p)
    assert len(t) == 2 and t[1].answer == 0 and t.name == "t" and t[0].id == "t.jsonl:1"
    p.write_text(json.dumps(rec()) + "\n{not json\n")
    with pytest.raises(TaskError, match=r"t.jsonl:2: not valid JSON"):
        Task.from_jsonl(p)
    p.write_text(json.dumps(rec()) + "\n" + json.dumps(rec(answer=9)) + "\n")
    with pytest.raises(TaskError, match=r"t.jsonl:2.*out of range"):
        Task.from_jsonl(p)
    c = tmp_path / "t.csv"
    c.write_text("question,A,B,C,answer,context\nwhat?,x,y,z,B,\nhow?,u,v,,A,some text\n")
    t = Task.from_csv(c)
    assert [it.options for it in t] == [("x", "y", "z"), ("u", "v")]
    assert [it.answer for it in t] == [1, 0] and t[1].context == "some text"
    c.write_text("question,answer\nq,0\n")
    with pytest.raises(TaskError, match="no option columns"):
        Task.from_csv(c)


def test_split_is_deterministic_and_disjoint():
    t = Task.from_records([rec(question=f"q{i}") for i in range(20)])
    a = t.split(8, 6, n_demo=3, seed=1)
    b = t.split(8, 6, n_demo=3, seed=1)
    ids = [{it.id for it in part} for part in a]
    assert [len(x) for x in ids] == [8, 6, 3]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert [[it.id for it in p] for p in a] == [[it.id for it in p] for p in b]
    assert [it.id for it in t.split(8, 6, n_demo=3, seed=2)[0]] != [it.id for it in a[0]]
    with pytest.raises(TaskError, match="cannot split"):
        t.split(15, 10)


def test_round_trip_records():
    t = Task.from_records([rec(context="c"), {"question": [1], "options": [[2], [3]], "answer": 1}][:1])
    assert Task.from_records(t.to_records()) == t
