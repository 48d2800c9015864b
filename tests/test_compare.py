"""Issue 12, part 3: common vs task-specific neurons across tasks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers import identify_config_of, make_model, token_task

from tl_neuronllm import identify
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import predict
from tl_neuronllm.pipeline.prepare import build_queries
from tl_neuronllm.result.neuron_result import build_result
from tl_neuronllm.scoring.ace import ACEState
from tl_neuronllm.studies.compare import (
    Comparison,
    chance_overlap,
    compare,
    overlap_p_value,
    shared_vs_specific,
    specific_and_shared,
)


@pytest.mark.parametrize("a,b,n", [(3, 4, 10), (5, 5, 9), (1, 6, 8), (0, 3, 6)])
def test_chance_overlap_equals_enumeration(a, b, n):
    A = set(range(a))
    shared, jac = [], []
    for B in itertools.combinations(range(n), b):
        s = len(A & set(B))
        shared.append(s)
        jac.append(s / len(A | set(B)) if A | set(B) else 0.0)
    got = chance_overlap(a, b, n)
    assert got["expected_shared"] == pytest.approx(np.mean(shared), abs=1e-12)
    assert got["expected_jaccard"] == pytest.approx(np.mean(jac), abs=1e-12)
    for s in range(min(a, b) + 2):
        assert overlap_p_value(s, a, b, n) == pytest.approx(np.mean([x >= s for x in shared]), abs=1e-12)
    with pytest.raises(ValueError, match="set sizes must be in"):
        chance_overlap(n + 1, b, n)


def _result(good, bad, L=2, d=10, name="m"):
    scores = torch.zeros(L, d)
    for i, (layer, n) in enumerate(good):
        scores[layer, n] = 1.0 + 0.01 * i
    for i, (layer, n) in enumerate(bad):
        scores[layer, n] = -1.0 - 0.01 * i
    return build_result(scores, ACEState.zeros(L, d), 10, config={"model": {"model_name": name}, "hook": "hook_post"})


@pytest.mark.slow
def test_compare_counts_shared_neurons_and_roundtrips(tmp_path):
    res = {
        "t1": _result([(0, 1), (0, 2), (1, 5)], [(1, 9)]),
        "t2": _result([(0, 1), (1, 5), (1, 6), (1, 7)], [(0, 9)]),
        "t3": _result([(0, 1), (0, 3)], [(1, 9), (0, 9)]),
    }
    cmp = compare(res)
    assert cmp.tasks == ["t1", "t2", "t3"] and cmp.n_neurons == 20
    p = cmp.pair("good", "t2", "t1")
    assert (p["n_a"], p["n_b"], p["shared"]) == (3, 4, 2) and p["jaccard"] == pytest.approx(2 / 5)
    assert p["expected_shared"] == pytest.approx(3 * 4 / 20)
    assert cmp.pair("bad", "t1", "t2")["shared"] == 0 and cmp.pair("bad", "t1", "t3")["jaccard"] == pytest.approx(0.5)
    assert [(x["label"], x["tasks"]) for x in cmp.shared["good"]] == [
        ("L0N1", ["t1", "t2", "t3"]),
        ("L1N5", ["t1", "t2"]),
    ]
    assert cmp.shared_layers("good") == [1, 1] and cmp.shared_layers("bad") == [1, 1]
    spec, shared = specific_and_shared(cmp, res, "t1")
    assert [x.label for x in spec] == ["L0N2"] and sorted(x.label for x in shared) == ["L0N1", "L1N5"]
    md = cmp.to_markdown()
    assert "| good | t1 | t2 | 3 | 4 | 2 | 0.400 |" in md and "2 in 3 tasks" not in md and "1 in 3 tasks" in md
    png = cmp.heatmap(tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cmp.save(tmp_path / "c")
    back = Comparison.load(tmp_path / "c")
    assert back.pairs == cmp.pairs and back.shared == cmp.shared and back.tasks == cmp.tasks
    assert all(torch.equal(back.members[r], cmp.members[r]) for r in ("good", "bad"))
    assert "torch" in back.config["versions"]


def test_compare_refuses_bad_input():
    a = _result([(0, 1)], [])
    with pytest.raises(ValueError, match="at least 2 tasks, got 1"):
        compare({"a": a})
    with pytest.raises(ValueError, match=r"results\['b'\] is for 3 x 10 neurons but results\['a'\] for 2 x 10"):
        compare({"a": a, "b": _result([(2, 1)], [], L=3)})
    with pytest.raises(ValueError, match=r"results\['b'\] is for model 'other'"):
        compare({"a": a, "b": _result([(0, 1)], [], name="other")})
    with pytest.raises(ValueError, match=r"results\['b'\] is a dict"):
        compare({"a": a, "b": {}})
    with pytest.raises(KeyError, match="not in the comparison"):
        specific_and_shared(compare({"a": a, "b": a}), {"a": a, "b": a}, "c")


@pytest.mark.slow
def test_shared_vs_specific_evaluates_size_matched_sets_on_held_out_items():
    torch.manual_seed(0)
    model = make_model("native", False)
    results, held, demos = {}, {}, {}
    for seed in (0, 1):
        task, fmt = token_task(24, seed=seed)
        ident, h, demo = task.split(10, 8, n_demo=1, seed=0)
        results[f"t{seed}"] = identify(
            model, ident, k=12, demos=demo, token_format=fmt, method="grad_x_act", z=0.1, ambiguity=None, progress=False
        )
        held[f"t{seed}"], demos[f"t{seed}"] = h, demo
    cmp = compare(results)
    with pytest.raises(KeyError, match=r"no held-out items for task\(s\) \['t1'\]"):
        shared_vs_specific(model, cmp, results, {"t0": held["t0"]})
    rows = shared_vs_specific(model, cmp, results, held, demos=demos, n_random=2, n_boot=100)
    assert cmp.checks == rows and [r["task"] for r in rows] == ["t0", "t1"]
    for r in rows:
        spec, shared = specific_and_shared(cmp, results, r["task"])
        assert r["n_specific"] + r["n_shared"] == len(results[r["task"]].good)
        assert r["n_each"] == min(len(spec), len(shared))
    row = next(r for r in rows if r["n_each"] > 0)  # two random-ish tasks on one model share some neurons
    t = row["task"]
    res = results[t]
    for label in ("specific", "shared"):
        assert len(row[label]["neurons"]) == row["n_each"]
        # naive reference: zero exactly those neurons over full prompts and compare gold probabilities
        ad = ModelAdapter(model)
        qs = [q for item in build_queries(ad, held[t], identify_config_of(res), demos[t][:1]) for q in item]
        nset = [x for x in res.good if x.label in row[label]["neurons"]]
        import dataclasses

        sub = dataclasses.replace(res, good=nset, bad=[])
        base = predict(ad, qs)
        hit = predict(ad, qs, fwd_hooks=lambda site: sub.hooks("good", "zero", site=site))
        d_gold = np.mean([float(h[q.gold]) - float(b[q.gold]) for h, b, q in zip(hit, base, qs)])
        assert row[label]["d_gold"] == pytest.approx(d_gold, abs=1e-5)
    assert "| t0 |" in cmp.to_markdown()
