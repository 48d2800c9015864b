"""tl_neuronllm.evaluation.evaluate: statistics on constructed cases, random controls, and end to end on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import identify_config_of, make_model, text_task, token_task

from tl_neuronllm import Task, TaskError, identify
from tl_neuronllm.evaluation.conditions import INTERVENTIONS, matched_random_sets
from tl_neuronllm.evaluation.eval_result import EvalResult
from tl_neuronllm.evaluation.evaluate import EvalConfig, evaluate
from tl_neuronllm.evaluation.stats import bootstrap_ci, letter_counts, mcnemar_exact, score_predictions
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import predict
from tl_neuronllm.pipeline.prepare import build_queries


# ------------------------------------------------------------------------------------------------ McNemar
def binom_two_sided(b: int, c: int) -> float:
    """Reference: sum of Binomial(n, 1/2) probabilities no larger than P(min(b, c)), in floats."""
    n = b + c
    pmf = [math.comb(n, i) * 0.5**n for i in range(n + 1)]
    return min(1.0, 2 * sum(pmf[: min(b, c) + 1]))


@pytest.mark.parametrize(
    "b,c,expected",
    [
        (0, 0, 1.0),
        (5, 0, 2 / 32),  # 2 * C(5,0) / 2^5
        (0, 5, 2 / 32),
        (1, 5, 2 * (1 + 6) / 64),  # 0.21875
        (10, 2, 2 * (1 + 12 + 66) / 4096),  # 0.03857...
        (3, 3, 1.0),  # 2 * 42/64 > 1, clipped
        (7, 1, 2 * (1 + 8) / 256),
    ],
)
def test_mcnemar_exact_hand_computed(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b, c) == pytest.approx(binom_two_sided(b, c), rel=1e-9)


def test_mcnemar_large_counts_no_overflow_and_symmetry():
    p = mcnemar_exact(600, 400)
    # normal approximation with continuity correction: z = (|b-c|-1)/sqrt(b+c)
    z = (200 - 1) / math.sqrt(1000)
    approx = math.erfc(z / math.sqrt(2))
    assert 0 < p < 1e-8 and p == pytest.approx(approx, rel=0.2)
    assert mcnemar_exact(400, 600) == p
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


# ------------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_constant_vector_has_zero_width():
    assert bootstrap_ci(np.full(50, 0.7), n_boot=500, seed=1) == pytest.approx((0.7, 0.7))


def test_bootstrap_binary_vector_matches_normal_interval():
    v = np.zeros(1000)
    v[:300] = 1
    lo, hi = bootstrap_ci(v, n_boot=4000, seed=0)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 1000)
    assert lo == pytest.approx(0.3 - half, abs=0.006) and hi == pytest.approx(0.3 + half, abs=0.006)


def test_bootstrap_matches_direct_loop_and_is_seeded():
    v = np.array([0.0, 1.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75])
    w = np.array([1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 2.0, 1.0])
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(v), size=(300, len(v)))
    stats = np.sort([v[i].sum() / w[i].sum() for i in idx])
    lo, hi = bootstrap_ci(v, w, n_boot=300, seed=3)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))
    assert bootstrap_ci(v, w, n_boot=300, seed=3) == (lo, hi)
    assert bootstrap_ci(v, w, n_boot=300, seed=4) != (lo, hi)
    # ratio estimator: per-item totals over per-item counts equals the pooled mean at full sample
    assert lo <= v.sum() / w.sum() <= hi
    with pytest.raises(ValueError):
        bootstrap_ci(v, w[:-1])


# ------------------------------------------------------------------------------------------------ random sets
def test_matched_random_sets_counts_disjoint_and_exclusion():
    d = 20
    counts = {"good": [3, 0, 5, 1], "bad": [2, 4, 0, 1]}
    exclude = torch.zeros(4, d, dtype=torch.bool)
    exclude[0, :5] = True
    exclude[1, [1, 3, 5]] = True
    seen = {layer: set() for layer in range(4)}
    for seed in range(200):
        sets, ok = matched_random_sets(counts, d, seed=seed, exclude=exclude)
        assert ok
        for role, c in counts.items():
            per_layer = [0] * 4
            for layer, n in sets[role]:
                per_layer[layer] += 1
                assert not exclude[layer, n]
                seen[layer].add(n)
            assert per_layer == c
        assert not set(sets["good"]) & set(sets["bad"])
        assert len(set(sets["good"])) == sum(counts["good"])
    # nothing is excluded that should not be: every allowed neuron of a used layer gets drawn
    for layer in range(4):
        allowed = {i for i in range(d) if not exclude[layer, i]}
        assert seen[layer] == allowed
    a, _ = matched_random_sets(counts, d, seed=7, exclude=exclude)
    b, _ = matched_random_sets(counts, d, seed=7, exclude=exclude)
    assert a == b


def test_matched_random_sets_fallback_and_errors():
    exclude = torch.zeros(1, 6, dtype=torch.bool)
    exclude[0, :4] = True
    sets, ok = matched_random_sets({"good": [2], "bad": [2]}, 6, seed=0, exclude=exclude)
    assert not ok and len(set(sets["good"]) | set(sets["bad"])) == 4
    with pytest.raises(ValueError, match="needs 7"):
        matched_random_sets({"good": [4], "bad": [3]}, 6, seed=0)


# ------------------------------------------------------------------------------------------------ scoring
def test_score_predictions_hand_made_case():
    # item 0: 3 proxies all right; item 1: 2 of 3 right; item 2: none right (always "A", gold elsewhere)
    gold = [0, 1, 2, 1, 2, 0, 1, 2, 3]
    item_of = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 1, 2, 1, 2, 3, 0, 0, 0]
    probs = []
    for p, _g in zip(preds, gold):
        v = np.full(4, 0.1)
        v[p] = 0.7
        probs.append(torch.tensor(v))
    s = score_predictions(probs, gold, item_of)
    assert s.metrics["accuracy"] == pytest.approx(5 / 9)
    assert s.metrics["consistent_accuracy"] == pytest.approx(1 / 3)
    assert s.metrics["gold_prob"] == pytest.approx((5 * 0.7 + 4 * 0.1) / 9)
    assert s.consistent.tolist() == [1.0, 0.0, 0.0]
    assert letter_counts(s.pred, 4) == {"A": 4, "B": 2, "C": 2, "D": 1}
    # a second condition that turns every "A" into "C"
    preds2 = [2 if p == 0 else p for p in preds]
    probs2 = [torch.tensor(np.eye(4)[p]) for p in preds2]
    s2 = score_predictions(probs2, gold, item_of, base=s)
    assert s2.metrics["changed"] == pytest.approx(4 / 9)
    assert s2.metrics["changed_items"] == pytest.approx(2 / 3)
    assert s2.metrics["accuracy"] == pytest.approx(5 / 9)  # item 0 loses one, item 2 gains one
    m = s2.mcnemar(s)
    assert (m["b"], m["c"]) == (1, 1) and m["p"] == 1.0
    mc = s2.mcnemar(s, "consistent")
    assert (mc["b"], mc["c"]) == (1, 0)
    # intervals of the paired difference of a condition with itself are exactly zero
    idx = np.random.default_rng(0).integers(0, 3, size=(100, 3))
    assert s.intervals(idx, 0.95, minus=s)["accuracy"] == [0.0, 0.0]


def test_eval_config_validation():
    with pytest.raises(ValueError, match="unknown intervention"):
        EvalConfig(interventions=("nope",))
    with pytest.raises(ValueError):
        EvalConfig(engine="prefix", positions="all")
    with pytest.raises(TypeError, match="valid options"):
        EvalConfig.from_options(n_randoms=3)
    assert EvalConfig.from_options(n_random=2).n_random == 2


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def native_setup():
    torch.manual_seed(0)
    model = make_model("native", False)
    task, fmt = token_task(36)
    ident, held, demo = task.split(12, 20, n_demo=2, seed=0)
    result = identify(model, ident, k=8, demos=demo, token_format=fmt, steps=2, progress=False)
    return model, result, held, demo


def test_evaluate_end_to_end_native(native_setup, tmp_path):
    model, result, held, demo = native_setup
    n_hooks = sum(len(h.fwd_hooks) for h in model.hook_dict.values() if hasattr(h, "fwd_hooks"))
    ev = evaluate(model, result, held, demos=demo, n_random=3, n_boot=200, progress=False)
    assert [r.name for r in ev.rows] == ["baseline", *INTERVENTIONS]
    assert ev.n_items == len(held) and ev.n_queries == 3 * len(held)
    base = ev.baseline
    assert base.metrics["changed"] == 0 and sum(base.letters.values()) == ev.n_queries
    for r in ev.rows[1:]:
        assert r.available and len(r.predictions) == ev.n_queries
        assert len(r.random["metrics"]["accuracy"]["values"]) == 3
        assert r.ci["accuracy"][0] <= r.metrics["accuracy"] <= r.ci["accuracy"][1]
        assert r.delta["accuracy"] == pytest.approx(r.metrics["accuracy"] - base.metrics["accuracy"])
        assert 0 <= r.mcnemar["p"] <= 1
        assert r.random["excluded_identified"]
    assert ev.row("suppress_good").n_good == len(result.good) and ev.row("suppress_good").n_bad == 0
    # the user's model is left as it came
    assert sum(len(h.fwd_hooks) for h in model.hook_dict.values() if hasattr(h, "fwd_hooks")) == n_hooks
    # persistence
    ev.save(tmp_path)
    back = EvalResult.load(tmp_path)
    assert back.to_dict() == json.loads(ev.to_json())
    md = (tmp_path / "evaluation.md").read_text()
    for r in ev.rows:
        assert r.description in md
    assert "baseline" in ev.table()


def test_evaluate_matches_result_hooks_on_full_prompts(native_setup):
    """The prefix engine's suppress-good probabilities equal result.hooks(...) over full prompts."""
    model, result, held, demo = native_setup
    ev = evaluate(
        model, result, held, demos=demo, n_random=0, n_boot=50, progress=False, interventions=("suppress_good",)
    )
    ad = ModelAdapter(model)
    qs = [q for item in build_queries(ad, held, identify_config_of(result), demo[:1]) for q in item]
    probs = predict(ad, qs, fwd_hooks=lambda site: result.hooks("good", "zero", site=site))
    gp = np.mean([float(p[q.gold]) for p, q in zip(probs, qs)])
    assert ev.row("suppress_good").metrics["gold_prob"] == pytest.approx(gp, abs=1e-5)
    assert ev.row("suppress_good").predictions == [int(p.argmax()) for p in probs]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["letter", "cloze"])
def test_prefix_and_full_engines_agree_on_hf_cache_model(mode):
    """The HF key/value-cache path gives the same answers as full right-padded forwards."""
    model = make_model("hf", True)
    task = text_task(14)
    ident, held, demo = task.split(5, 8, n_demo=1, seed=0)
    result = identify(model, ident, k=6, demos=demo, steps=2, mode=mode, progress=False)
    # text_task repeats questions every 8 items (same content under other ids): allow the overlap
    kw = dict(demos=demo, n_random=2, n_boot=50, progress=False, allow_overlap=True)
    a = evaluate(model, result, held, engine="prefix", **kw)
    b = evaluate(model, result, held, engine="full", **kw)
    assert a.config["kv_backend"] == "hf" and a.config["fast_paths"]["prefix_cache"] is True
    for ra, rb in zip(a.rows, b.rows):
        assert ra.predictions == rb.predictions
        for k in ("accuracy", "gold_prob", "consistent_accuracy", "changed"):
            assert ra.metrics[k] == pytest.approx(rb.metrics[k], abs=1e-5)
        if ra.random:
            assert ra.random["metrics"]["gold_prob"]["values"] == pytest.approx(
                rb.random["metrics"]["gold_prob"]["values"], abs=1e-5
            )


def test_positive_only_result_has_na_bad_rows(native_setup):
    model, result, held, demo = native_setup
    po = result.with_k(8)
    po.bad = []
    po.stats["positive_only"] = True
    ev = evaluate(model, po, held, demos=demo, n_random=2, n_boot=50, progress=False)
    assert ev.row("suppress_good").available
    for name in ("suppress_bad", "enhance_good_suppress_bad", "enhance_bad_suppress_good"):
        r = ev.row(name)
        assert not r.available and "positive-only" in r.note and not r.predictions
    assert "n/a" in ev.to_markdown()


def test_evaluate_refuses_identification_items_and_checks_model(native_setup):
    model, result, held, demo = native_setup
    ids = set(result.config["task"]["item_ids"])
    task, _ = token_task(36)
    overlap = Task(tuple(it for it in task.items if it.id in ids)[:4], name="overlap")
    with pytest.raises(TaskError, match="identification item"):
        evaluate(model, result, overlap, demos=demo, n_random=0, progress=False)
    ev = evaluate(model, result, overlap, demos=demo, n_random=0, n_boot=20, progress=False, allow_overlap=True)
    assert ev.n_items == 4
    with pytest.raises(TaskError, match="demo"):
        evaluate(model, result, held, demos=[held.items[0]], n_random=0, progress=False)
    wrong = result.with_k(4)
    wrong.scores = torch.zeros(5, 64)  # a result for a 5-layer model
    with pytest.raises(ValueError, match="5 layers"):
        evaluate(model, wrong, held, demos=demo, n_random=0, progress=False)


def test_evaluate_k_override_and_positions_all(native_setup):
    model, result, held, demo = native_setup
    ev = evaluate(
        model, result, held, demos=demo, k=3, n_random=1, n_boot=20, progress=False, interventions=("suppress_good",)
    )
    assert ev.row("suppress_good").n_good == min(3, len(result.good))
    ev_all = evaluate(
        model,
        result,
        held,
        demos=demo,
        n_random=1,
        n_boot=20,
        progress=False,
        positions="all",
        interventions=("suppress_good",),
    )
    assert ev_all.config["eval"]["engine"] == "full"
    assert ev_all.row("suppress_good").available


def test_evaluate_many_equals_evaluate_of_each_result(native_setup, monkeypatch):
    """Several results in one pass: every row equals evaluate of that result alone (float rounding), the
    baseline and identical conditions run once, and results rendered differently are refused."""
    import importlib

    from tl_neuronllm import evaluate_many, rescore

    ev_mod = importlib.import_module("tl_neuronllm.evaluation.evaluate")  # the package's `evaluate` is the function

    model, result, held, demo = native_setup
    task, fmt = token_task(36)
    ident = task.split(12, 20, n_demo=2, seed=0)[0]
    full = identify(model, ident, k=8, demos=demo, token_format=fmt, steps=2, progress=False, keep_attributions=True)
    others = [rescore(full, z=0.01, ambiguity=0.0), rescore(full, k=4)]
    results = [result, *others, result]  # the first and last are the same sets
    seen: list[int] = []
    run = ev_mod.run_conditions

    def counting(adapter, queries, conditions, **kw):
        seen.append(len(conditions))
        return run(adapter, queries, conditions, **kw)

    monkeypatch.setattr(ev_mod, "run_conditions", counting)
    many = evaluate_many(model, results, held, demos=demo, n_random=2, n_boot=100, progress=False)
    one_pass = seen[-1]
    singles = [evaluate(model, r, held, demos=demo, n_random=2, n_boot=100, progress=False) for r in results]
    per_result = seen[-1]  # 1 baseline + 4 interventions x (identified + 2 random)
    assert len(seen) == 5 and per_result == 1 + 4 * 3
    assert per_result < one_pass < 3 * per_result  # the baseline once; the repeated result's conditions once
    for m, s in zip(many, singles):
        assert [r.name for r in m.rows] == [r.name for r in s.rows]
        for rm, rs in zip(m.rows, s.rows):
            assert rm.available == rs.available and rm.predictions == rs.predictions
            for key, v in rs.metrics.items():
                assert rm.metrics[key] == pytest.approx(v, abs=1e-6), (rm.name, key)
            assert (rm.n_good, rm.n_bad) == (rs.n_good, rs.n_bad)
    # the repeated result reads the same probabilities (json: its NaN RCC compares equal as text)
    assert json.dumps(many[0].to_dict()["rows"]) == json.dumps(many[-1].to_dict()["rows"])
    with pytest.raises(ValueError, match="non-empty list"):
        evaluate_many(model, [], held, demos=demo, progress=False)
    letter_first = identify(model, ident, k=8, demos=demo, token_format=fmt, steps=1, n_proxies=2, progress=False)
    with pytest.raises(ValueError, match=r"results\[1\] was identified with other prompt options"):
        evaluate_many(model, [result, letter_first], held, demos=demo, progress=False)
