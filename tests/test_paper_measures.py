"""Issue 12, part 2: RAC / RCC (relative changes of accuracy and consistent accuracy), Degrade / Enhance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import identify_config_of

from tl_neuronllm import identify
from tl_neuronllm.evaluation.conditions import PAPER_NAMES
from tl_neuronllm.evaluation.eval_result import EvalResult
from tl_neuronllm.evaluation.evaluate import evaluate
from tl_neuronllm.evaluation.stats import bootstrap_indices, relative_change, score_predictions
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.pipeline.prepare import build_queries


def test_relative_change_hand_computed():
    assert relative_change(0.6, 0.4) == pytest.approx(0.5)
    assert relative_change(0.2, 0.4) == pytest.approx(-0.5)
    assert relative_change(0.4, 0.4) == 0.0
    assert math.isnan(relative_change(0.3, 0.0))


def test_relative_intervals_equal_a_naive_loop_over_resamples():
    rng = np.random.default_rng(0)
    n_items, P = 30, 3
    item_of = np.repeat(np.arange(n_items), P)
    gold = rng.integers(0, 4, size=n_items * P)

    def probs(skill):  # the gold option boosted on a share of the questions, so some items are consistent
        out = []
        for g in gold:
            p = rng.dirichlet(np.ones(4) * 0.5)
            if rng.random() < skill:
                p[g] += 2.0
            out.append(p / p.sum())
        return out

    base_p, here_p = probs(0.6), probs(0.8)
    base = score_predictions(base_p, gold, item_of, n_items)
    here = score_predictions(here_p, gold, item_of, n_items, base=base)
    idx = bootstrap_indices(n_items, 400, seed=5)
    got = here.relative_intervals(idx, 0.9, base)
    # naive: per resample, accuracy over its questions and consistent accuracy over its items
    rac, rcc = [], []
    for row in idx:
        q = np.concatenate([np.where(item_of == i)[0] for i in row])
        a_b, a_h = base.correct[q].mean(), here.correct[q].mean()
        c_b, c_h = base.consistent[row].mean(), here.consistent[row].mean()
        rac.append((a_h - a_b) / a_b)
        if c_b > 0:
            rcc.append((c_h - c_b) / c_b)
    assert got["RAC"] == pytest.approx(list(np.quantile(rac, [0.05, 0.95])), abs=1e-12)
    assert got["RCC"] == pytest.approx(list(np.quantile(rcc, [0.05, 0.95])), abs=1e-12)


@pytest.fixture(scope="module")
def evaluation():
    """A testbed model that knows its task imperfectly, so that accuracy and consistent accuracy are > 0."""
    from tl_neuronllm.studies.testbed import load_testbed

    tb = load_testbed("facts-lured-small")
    ident, held, demo = tb.splits(0)
    held = held.subset(range(24))
    result = identify(
        tb.model, ident, k=10, demos=demo, token_format=tb.token_format, z=0.05, ambiguity=None, progress=False
    )
    ev = evaluate(tb.model, result, held, demos=demo, n_random=3, n_boot=300, progress=False)
    qs = [q for item in build_queries(ModelAdapter(tb.model), held, identify_config_of(result), demo[:1]) for q in item]
    return ev, np.array([q.gold for q in qs])


def test_rac_rcc_of_every_condition_equal_the_definition_on_the_predictions(evaluation):
    ev, gold = evaluation
    n_q = ev.n_queries // ev.n_items

    def acc_cons(pred):
        ok = (np.array(pred) == gold).reshape(ev.n_items, n_q)
        return ok.mean(), ok.all(1).mean()

    a0, c0 = acc_cons(ev.baseline.predictions)
    assert a0 > 0 and c0 > 0  # the relative measures are defined here
    assert any(r.relative["RCC"] != 0 for r in ev.rows[1:])
    assert ev.baseline.relative == {} and ev.baseline.paper_name == ""
    for r in ev.rows[1:]:
        a, c = acc_cons(r.predictions)
        assert r.relative["RAC"] == pytest.approx((a - a0) / a0, abs=1e-12)
        assert r.relative["RCC"] == pytest.approx((c - c0) / c0, abs=1e-12)
        lo, hi = r.relative_ci["RAC"]
        assert lo <= r.relative["RAC"] + 1e-9 and r.relative["RAC"] <= hi + 1e-9
        # the random control's RAC is the mean over seeds of each seed's relative change
        vals = r.random["metrics"]["accuracy"]["values"]
        assert r.random["metrics"]["RAC"]["mean"] == pytest.approx(np.mean([(v - a0) / a0 for v in vals]), abs=1e-12)
        assert r.paper_name == PAPER_NAMES.get(r.name, "")
    assert ev.row("enhance_bad_suppress_good").paper_name == "Degrade"
    assert ev.row("enhance_good_suppress_bad").paper_name == "Enhance"
    assert ev.row("suppress_good").paper_name == ""


def test_markdown_has_the_paper_table_and_roundtrips(evaluation, tmp_path):
    ev, _ = evaluation
    md = ev.to_markdown()
    assert "| Degrade: enhance bad + suppress good | Degrade |" in md.replace("  ", " ")
    assert "RAC" in md and "RCC" in md and "our reading" in md
    rows = ev.paper_rows()
    assert rows[0][:3] == ["condition", "paper name", "RAC"] and len(rows) == len(ev.rows)
    ev.save(tmp_path)
    back = EvalResult.load(tmp_path)
    assert back.to_dict() == json.loads(ev.to_json())
    assert back.row("enhance_good_suppress_bad").relative == pytest.approx(
        ev.row("enhance_good_suppress_bad").relative, nan_ok=True
    )
