"""tl_neuronllm.evaluation.eval_result and the evaluation tables of tl_neuronllm.report.markdown: an evaluation saved before the
evaluation was split into modules still loads and renders to the same text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tl_neuronllm.evaluation.eval_result import EVAL_JSON, EVAL_MD, EvalResult
from tl_neuronllm.evaluation.tables import evaluation_markdown, evaluation_table, paper_rows, table_rows

DATA = Path(__file__).parent / "data"


@pytest.fixture
def saved() -> tuple[dict, EvalResult]:
    """``evaluation_v1.json``: written by ``EvalResult.save`` of the single-module evaluate.py (3 held-out items,
    suppress good and Degrade, 2 random sets); ``.md`` and ``.txt`` are its markdown and terminal table then."""
    raw = json.loads((DATA / "evaluation_v1.json").read_text())
    return raw, EvalResult.load(DATA / "evaluation_v1.json")


def test_old_evaluation_loads_and_round_trips(saved, tmp_path):
    raw, ev = saved
    assert raw["format"] == "tl_neuronllm.EvalResult/1"
    assert [r.name for r in ev.rows] == ["baseline", "suppress_good", "enhance_bad_suppress_good"]
    assert ev.row("enhance_bad_suppress_good").paper_name == "Degrade"
    # nan values (RCC with a zero baseline) make dict equality useless: compare the JSON text
    assert json.dumps(ev.to_dict(), sort_keys=True) == json.dumps(raw, sort_keys=True)
    ev.save(tmp_path)
    assert json.loads((tmp_path / EVAL_JSON).read_text())["format"] == raw["format"]
    back = EvalResult.load(tmp_path)
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(raw, sort_keys=True)
    assert (tmp_path / EVAL_MD).read_text() == (DATA / "evaluation_v1.md").read_text()


def test_tables_render_as_before(saved):
    _, ev = saved
    assert ev.to_markdown() == (DATA / "evaluation_v1.md").read_text()
    assert evaluation_markdown(ev) == ev.to_markdown()
    assert ev.table() == evaluation_table(ev) == (DATA / "evaluation_v1.txt").read_text()
    assert ev.table_rows() == table_rows(ev) and ev.paper_rows() == paper_rows(ev)
    assert table_rows(ev)[1][:3] == ["baseline", "-", "0.222"]
    assert paper_rows(ev)[2][:3] == ["Degrade: enhance bad + suppress good", "Degrade", "+0.000"]


def test_unreadable_evaluation_names_the_file(tmp_path):
    (tmp_path / EVAL_JSON).write_text('{"rows": [{"name": "baseline"}]')
    with pytest.raises(ValueError, match="not a readable evaluation"):
        EvalResult.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no evaluation.json"):
        EvalResult.load(tmp_path / "missing")
