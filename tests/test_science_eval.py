"""Issue 21, parts 3 and 4: activation-matched random sets, rank p, balanced accuracy, label-balanced held-out
splits, off-task controls and specificity, per-item values, verdict lines; paired bootstrap and Holm against
naive loops and a hand computation."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import make_model, text_task, token_task

from tl_neuronllm import Task, evaluate, identify
from tl_neuronllm.data.tasks.balance import balanced_heldout, is_classification, item_labels
from tl_neuronllm.errors import ConfigError, ModelError, RandomMatchWarning, TaskError
from tl_neuronllm.evaluation import evaluate as evaluate_module
from tl_neuronllm.evaluation.conditions import Condition, activation_matched_sets, match_ratio, matched_random_sets
from tl_neuronllm.evaluation.controls import specificity, text_losses
from tl_neuronllm.evaluation.stats import balanced_accuracy, bootstrap_indices, rank_p_value, score_predictions
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.report.markdown import verdict
from tl_neuronllm.studies.paired import holm, paired_bootstrap, paired_table


# ---- random sets ------------------------------------------------------------------------------------------
def _ident():
    # layer 0: magnitudes 0..99, identified at the top; layer 1: identified at the bottom
    mag = torch.stack([torch.arange(100.0), torch.arange(100.0)])
    ident = {"good": [(0, 99), (0, 98), (0, 97), (1, 0)], "bad": [(0, 96), (1, 1), (1, 2)]}
    return mag, ident


def test_activation_matched_sets_match_layer_and_magnitude():
    mag, ident = _ident()
    taken = {p for v in ident.values() for p in v}
    for seed in range(5):
        sets = activation_matched_sets(ident, mag, seed=seed, window=4)
        for role in ident:
            assert sorted(layer for layer, _ in sets[role]) == sorted(layer for layer, _ in ident[role])
        picked = sets["good"] + sets["bad"]
        assert len(set(picked)) == len(picked) and not set(picked) & taken
        # each stand-in is among the 4 free neurons nearest its neuron (earlier picks are no longer free): the
        # top four's stand-ins lie within 89..95, the bottom three's within 3..9
        assert all(89 <= n <= 95 for layer, n in picked if layer == 0)
        assert all(3 <= n <= 9 for layer, n in picked if layer == 1)
    assert activation_matched_sets(ident, mag, seed=3) == activation_matched_sets(ident, mag, seed=3)
    # the layer-matched draw of the same shape is far off in magnitude; the activation-matched one is not
    counts = {"good": [3, 1], "bad": [1, 2]}
    lay = matched_random_sets(counts, 100, seed=0)[0]
    act = activation_matched_sets(ident, mag, seed=0)
    r_act, r_lay = match_ratio(act, ident, mag), match_ratio(lay, ident, mag)
    assert r_act["good"] > 0.9 and r_lay["good"] < 0.8


def _matched_naive(identified, magnitude, seed, window=8):
    """activation_matched_sets as a plain loop over Python lists (the reference)."""
    rng = random.Random(seed)
    taken = {p for pairs in identified.values() for p in pairs}
    by_layer = {}
    for role, pairs in identified.items():
        for layer, n in pairs:
            by_layer.setdefault(layer, []).append((role, n))
    out = {r: [] for r in identified}
    for layer, members in sorted(by_layer.items()):
        free = [i for i in range(magnitude.shape[1]) if (layer, i) not in taken]
        mag = [float(x) for x in magnitude[layer].double()]
        order = list(range(len(members)))
        rng.shuffle(order)
        for j in order:
            role, n = members[j]
            ranked = sorted(range(len(free)), key=lambda i: (abs(mag[free[i]] - mag[n]), i))[:window]
            out[role].append((layer, free.pop(ranked[rng.randrange(len(ranked))])))
    return {r: sorted(v) for r, v in out.items()}


def test_activation_matched_sets_equal_a_plain_loop_with_ties():
    gen = torch.Generator().manual_seed(0)
    mag = torch.randint(0, 6, (3, 64), generator=gen).float() / 4  # many equal magnitudes: ties decide
    pairs = torch.randperm(3 * 64, generator=gen)[:40].tolist()
    ident = {"good": [(p // 64, p % 64) for p in pairs[:25]], "bad": [(p // 64, p % 64) for p in pairs[25:]]}
    for seed in range(4):
        for window in (1, 3, 8):
            got = activation_matched_sets(ident, mag, seed=seed, window=window)
            assert got == _matched_naive(ident, mag, seed, window), (seed, window)


def test_activation_match_it_cannot_satisfy():
    mag = torch.ones(2, 4)
    with pytest.raises(ConfigError, match="layer 1 has 3 identified neurons but only 1 others"):
        activation_matched_sets({"good": [(1, 0), (1, 1)], "bad": [(1, 2)]}, mag, seed=0)


# ---- statistics -------------------------------------------------------------------------------------------
def test_rank_p_value_against_naive_count_and_floor():
    rnd = [0.1, -0.2, 0.3, 0.05, 0.3]
    for eff in (-1.0, 0.0, 0.1, 0.3, 0.5):
        for d in (1, -1):
            naive = (1 + sum(1 for r in rnd if d * r >= d * eff)) / (len(rnd) + 1)
            assert rank_p_value(eff, rnd, d) == naive
    assert rank_p_value(9.0, rnd, 1) == 1 / 6  # the floor with 5 sets
    assert math.isnan(rank_p_value(1.0, [], 1))


def test_balanced_accuracy_and_its_interval_against_naive_loops():
    rng = np.random.default_rng(0)
    n_items, P = 9, 2
    item_of = np.repeat(np.arange(n_items), P)
    gold = rng.integers(0, 2, size=n_items * P)
    probs = [np.eye(2)[rng.integers(0, 2)] * 0.8 + 0.1 for _ in gold]
    labels = np.array(["yes" if g else "no" for g in gold])
    sc = score_predictions(probs, gold, item_of, n_items, labels=labels)
    correct = [float(np.argmax(p) == g) for p, g in zip(probs, gold)]
    per = {u: [c for c, lab in zip(correct, labels) if lab == u] for u in set(labels)}
    assert sc.metrics["balanced_accuracy"] == pytest.approx(np.mean([np.mean(v) for v in per.values()]), abs=1e-12)
    # always answering option 0: balanced accuracy 1/2 whatever the label balance
    assert balanced_accuracy([1.0 if g == 0 else 0.0 for g in gold], labels) == 0.5
    idx = bootstrap_indices(n_items, 50, 3)
    naive = []
    for row in idx:
        qs = [q for i in row for q in np.flatnonzero(item_of == i)]
        naive.append(balanced_accuracy(np.array(correct)[qs], labels[qs]))
    want = np.nanquantile(naive, [0.025, 0.975])
    got = sc.intervals(idx, 0.95)["balanced_accuracy"]
    assert got == pytest.approx(list(want), abs=1e-12)


def test_balanced_heldout_split():
    recs = [
        {"id": f"r{i}", "question": f"q{i}", "options": ["no", "yes"], "answer": int(i % 4 == 0)} for i in range(40)
    ]
    task = Task.from_records(recs, name="yn")
    assert is_classification(task) and item_labels(task)[0] == "yes"
    held = balanced_heldout(task, 10, seed=1, exclude=["r0", "r4"])
    labs = item_labels(held)
    assert labs.count("yes") == labs.count("no") == 5
    assert not {"r0", "r4"} & {it.id for it in held.items}
    assert [it.id for it in balanced_heldout(task, 10, seed=1, exclude=["r0", "r4"]).items] == [
        it.id for it in held.items
    ]
    with pytest.raises(TaskError, match="label 'yes' has 8 free item"):
        balanced_heldout(task, 20, seed=0, exclude=["r0", "r4"])
    assert is_classification(text_task(6))  # every item asks among the same four colours
    mc = Task.from_records(
        [{"question": "a", "options": ["x", "y"], "answer": 1}, {"question": "b", "options": ["z", "y"], "answer": 0}]
    )
    assert not is_classification(mc) and item_labels(mc) == ["#1", "#0"]


# ---- paired tests -----------------------------------------------------------------------------------------
def test_paired_bootstrap_against_naive_loop():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.1, 1, 30), rng.normal(0, 1, 30)
    t = paired_bootstrap(a, b, 500, 7)
    idx = bootstrap_indices(30, 500, 7)
    means = []
    for row in idx:
        means.append(sum(a[i] - b[i] for i in row) / len(row))
    means = np.array(means)
    assert t.mean == pytest.approx(float(np.mean(a - b)), abs=1e-12)
    assert t.ci == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-12)
    far = min((means <= 0).sum(), (means >= 0).sum())
    assert t.p == pytest.approx(min(1.0, 2 * (1 + far) / 501), abs=1e-12)
    # a clear difference is significant, none is not
    assert paired_bootstrap(a + 1.0, a, 500, 0).p <= 2 / 501
    assert paired_bootstrap(a, a, 500, 0).p == 1.0
    with pytest.raises(ValueError, match="two 1-D arrays"):
        paired_bootstrap(a, b[:3])


def test_holm_against_hand_computation():
    # sorted: 0.005 -> 4 x = 0.02; 0.01 -> 3 x = 0.03; 0.03 -> 2 x = 0.06; 0.04 -> 1 x = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.5, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def _fake_eval(effects, base=0.5, ids=("a", "b", "c", "d")):
    conds = {"baseline": {"gold_prob": [base] * len(ids), "correct": [1.0] * len(ids)}}
    for name, eff in effects.items():
        conds[name] = {"gold_prob": [base + e for e in eff], "correct": [1.0] * len(ids)}
    return SimpleNamespace(task="t", per_item={"item_ids": list(ids), "conditions": conds})


def test_paired_table_signs_and_corrects():
    ref = _fake_eval({"suppress_good": [-0.1, -0.1, -0.1, -0.1]})
    better = _fake_eval({"suppress_good": [-0.4, -0.5, -0.3, -0.4]})
    same = _fake_eval({"suppress_good": [-0.1, -0.1, -0.1, -0.1]})
    t = paired_table({"ace": ref, "m1": better, "m2": same}, "ace", conditions=["suppress_good"], n_boot=200)
    rows = {r.method: r for r in t.rows}
    assert rows["m1"].diff == pytest.approx(0.3) and rows["m1"].verdict == "win"  # larger fall = expected direction
    assert rows["m2"].verdict == "tie" and rows["m2"].p == 1.0
    assert rows["m1"].p_holm == pytest.approx(min(1.0, 2 * rows["m1"].p))
    with pytest.raises(ConfigError, match="different held-out items"):
        paired_table({"ace": ref, "x": _fake_eval({}, ids=("a", "b", "c", "e"))}, "ace")


def test_paired_table_with_a_reference_per_method_equals_the_pairs_corrected_together():
    ids = tuple(f"i{j}" for j in range(12))
    rng = np.random.default_rng(3)
    ev = {n: _fake_eval({"suppress_good": list(rng.normal(m, 0.05, 12))}, ids=ids) for n, m in
          (("ace", -0.1), ("ace@k3", -0.05), ("kn", -0.2), ("ace@k5", -0.12), ("qr", -0.12))}  # fmt: skip
    t = paired_table(ev, {"kn": "ace@k3", "qr": "ace@k5"}, conditions=["suppress_good"], n_boot=300, seed=4)
    assert [(r.method, r.reference) for r in t.rows] == [("kn", "ace@k3"), ("qr", "ace@k5")]
    # naive reference: each pair alone (one comparison, so its Holm p is its p), then Holm over both by hand
    alone = [paired_table({r: ev[r], m: ev[m]}, r, conditions=["suppress_good"], n_boot=300, seed=4).rows[0]
             for m, r in (("kn", "ace@k3"), ("qr", "ace@k5"))]  # fmt: skip
    for got, ref in zip(t.rows, alone):
        assert (got.diff, got.ci, got.p) == (ref.diff, ref.ci, ref.p)
    ps = sorted((r.p, i) for i, r in enumerate(alone))
    hand = [0.0, 0.0]
    hand[ps[0][1]] = min(1.0, 2 * ps[0][0])
    hand[ps[1][1]] = min(1.0, max(hand[ps[0][1]], ps[1][0]))
    assert [r.p_holm for r in t.rows] == pytest.approx(hand)
    assert t.rows[0].verdict == "win" and t.rows[1].verdict == "tie"  # kn falls further than ace at its size
    # a string reference is the mapping of every other method to it
    one = paired_table(ev, "ace", conditions=["suppress_good"], n_boot=300, seed=4)
    many = paired_table(ev, {n: "ace" for n in ev if n != "ace"}, conditions=["suppress_good"], n_boot=300, seed=4)
    assert one.to_dict() == many.to_dict()
    with pytest.raises(ConfigError, match=r"reference 'ace@k9' is not among the evaluations"):
        paired_table(ev, {"kn": "ace@k9"})
    with pytest.raises(ConfigError, match=r"method 'kn2' is not among the evaluations"):
        paired_table(ev, {"kn2": "ace"})
    with pytest.raises(ConfigError, match="reference mapping is empty"):
        paired_table(ev, {})


def test_paired_table_calls_a_significant_but_tiny_difference_negligible():
    ids = tuple(f"i{j}" for j in range(40))
    ref = _fake_eval({"suppress_good": [-0.1] * 40}, ids=ids)
    tiny = _fake_eval({"suppress_good": [-0.1 - 1e-5] * 40}, ids=ids)  # every item 1e-5 further: p at its floor
    big = _fake_eval({"suppress_good": [-0.2] * 40}, ids=ids)
    t = paired_table({"ace": ref, "tiny": tiny, "big": big}, "ace", conditions=["suppress_good"], n_boot=200)
    rows = {r.method: r for r in t.rows}
    assert rows["tiny"].p_holm < 0.05 and rows["tiny"].diff == pytest.approx(1e-5)
    assert rows["tiny"].verdict == "negligible" and rows["big"].verdict == "win"
    assert t.min_diff == 0.005 and t.to_dict()["min_diff"] == 0.005
    # with no margin the same comparison is a win, as before
    t0 = paired_table({"ace": ref, "tiny": tiny}, "ace", conditions=["suppress_good"], n_boot=200, min_diff=0.0)
    assert t0.rows[0].verdict == "win"
    with pytest.raises(ConfigError, match="min_diff must be >= 0, got -0.1"):
        paired_table({"ace": ref, "tiny": tiny}, "ace", min_diff=-0.1)


# ---- verdict lines ----------------------------------------------------------------------------------------
def _row(delta, ci, values, rank_p=None):
    return SimpleNamespace(
        available=True,
        name="suppress_bad",
        delta={"gold_prob": delta},
        delta_ci={"gold_prob": ci},
        random={"metrics": {"delta_gold_prob": {"values": values}}},
        rank_p={"gold_prob": rank_p} if rank_p is not None else {},
    )


def test_verdict_never_beyond_random_when_interval_covers_zero():
    vals = [0.0, -0.001, 0.001, 0.0, 0.0]
    assert verdict(_row(0.004, [-0.026, 0.034], vals)) == "no clear change (interval covers 0)"
    assert verdict(_row(0.05, [0.02, 0.08], vals, 1 / 6)).startswith("expected direction, beyond every random set")
    assert verdict(_row(0.05, [0.02, 0.08], vals + [0.06] * 5, 6 / 11)).startswith("expected direction, within")
    assert verdict(_row(-0.05, [-0.08, -0.02], vals)) == "opposite to expected"


# ---- evaluate end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run():
    model = make_model("hf", False)
    task = text_task(16)
    ident, held, demo = task.split(8, 7, n_demo=1, seed=0)
    res = identify(model, ident, k=5, demos=demo, progress=False)
    return model, res, held, demo


def test_evaluate_controls_per_item_and_rank_p(run):
    model, res, held, demo = run
    ctrl = text_task(6, seed=5)
    ev = evaluate(
        model,
        res,
        held,
        demos=demo,
        n_random=3,
        n_boot=200,
        progress=False,
        allow_overlap=True,
        control=ctrl,
        control_text=["the cat is red and the sky is blue", "the sea is green"],
    )
    pi = ev.per_item
    assert pi["item_ids"] == [it.id for it in held.items] and len(pi["labels"]) == ev.n_items
    for r in ev.rows:
        if r.name == "baseline":
            continue
        vals = pi["conditions"][r.name]["gold_prob"]
        assert float(np.mean(vals)) == pytest.approx(r.metrics["gold_prob"], abs=1e-9)  # 3 proxies per item
        rnd = r.random["metrics"]["gold_prob"]["mean"]
        assert float(np.mean(pi["random_mean"][r.name]["gold_prob"])) == pytest.approx(rnd, abs=1e-9)
        assert 1 / 4 <= r.rank_p["gold_prob"] <= 1
        assert r.random["random_match"] == "activation"
        c = r.control
        assert c["specificity"] == pytest.approx(specificity(r.delta["gold_prob"], c["task"]["delta"]["gold_prob"]))
        assert c["text"]["n_passages"] == 2 and "delta_loss" in c["text"]
        assert "balanced_accuracy" in r.delta
    d = ev.to_dict()
    assert "per_item" in d and "rank_p" in d["rows"][1]
    assert "Against the random sets and off-task" in ev.to_markdown()


def test_text_losses_equal_plain_cross_entropy(run):
    model, *_ = run
    ad = ModelAdapter(model)
    toks = ad.tokenize("the cat is red and the sky is blue")
    base = text_losses(ad, [toks], [Condition("baseline")])
    logits = model(torch.tensor([toks])).float()
    want = torch.nn.functional.cross_entropy(logits[0, :-1], torch.tensor(toks[1:]), reduction="sum")
    assert base[0, 0] == pytest.approx(float(want.detach()), rel=1e-5)
    off = text_losses(ad, [toks], [Condition("suppress_good", {"good": [(0, i) for i in range(32)]})])
    assert off[0, 0] != pytest.approx(base[0, 0], rel=1e-6)  # zeroing half a layer everywhere moves the loss


def test_control_and_match_errors_before_model_time(run, monkeypatch):
    model, res, held, demo = run

    def boom(*a, **k):
        raise AssertionError("model time spent")

    monkeypatch.setattr(evaluate_module, "run_conditions", boom)
    tok_task, _ = token_task(6)
    with pytest.raises(TaskError, match="holds token ids but the held-out task holds text: it is for another model"):
        evaluate(model, res, held, demos=demo, control=tok_task, progress=False, allow_overlap=True)
    with pytest.raises(TaskError, match=r"control_text\[1\] must be a non-empty string"):
        evaluate(model, res, held, demos=demo, control_text=["the cat is red", ""], progress=False, allow_overlap=True)
    no_act = res.with_k(5)
    no_act.act_mean = None
    with pytest.raises(ConfigError, match="needs the result's mean site activations"):
        evaluate(
            model, no_act, held, demos=demo, n_random=2, random_match="activation", progress=False, allow_overlap=True
        )
    full = _full_layer(model, demo)
    with pytest.raises(ConfigError, match=r"random_match='activation': layer 0 has \d+ identified neurons"):
        evaluate(
            model, full, held, demos=demo, n_random=2, random_match="activation", progress=False, allow_overlap=True
        )
    with pytest.raises(ValueError, match="random_match must be one of"):
        evaluate(model, res, held, demos=demo, random_match="nope", progress=False, allow_overlap=True)


def _full_layer(model, demo):
    """About 100 of layer 0's 128 neurons identified: too few others to match them with."""
    ident = text_task(16).split(8, 7, n_demo=1, seed=0)[0]
    return identify(model, ident, k=80, demos=demo, layers=[0], progress=False)


def test_auto_match_falls_back_to_layer_counts_with_a_warning(run):
    model, res, held, demo = run
    full = _full_layer(model, demo)
    with pytest.warns(RandomMatchWarning, match="matching the random sets on layer counts only"):
        ev = evaluate(model, full, held, demos=demo, n_random=2, n_boot=50, progress=False, allow_overlap=True)
    assert ev.row("suppress_good").random["random_match"] == "layer"
    ev = evaluate(model, res, held, demos=demo, n_random=2, n_boot=50, progress=False, allow_overlap=True)
    assert ev.row("suppress_good").random["random_match"] == "activation"


def test_control_text_needs_a_tokenizer():
    model = make_model("native", False)
    task, fmt = token_task(12)
    ident, held, demo = task.split(6, 5, n_demo=1, seed=0)
    res = identify(model, ident, k=4, demos=demo, token_format=fmt, progress=False)
    with pytest.raises(ModelError, match="no tokenizer"):
        evaluate(model, res, held, demos=demo, control_text="plain text", progress=False)
