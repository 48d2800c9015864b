"""Issue 12, part 4: selection frequency and mean Jaccard over resamples of the identification items."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import random

import pytest
import torch
from helpers import make_model, token_task

from tl_neuronllm import identify, rescore
from tl_neuronllm.result.neuron_result import build_result
from tl_neuronllm.scoring.ace import ACEState, ScoringConfig
from tl_neuronllm.studies.stability import Stability, mean_pairwise_jaccard, stability, stability_curve


@pytest.fixture(scope="module")
def kept():
    model = make_model("native", False)
    task, fmt = token_task(20)
    ident, held, demo = task.split(10, 8, n_demo=1, seed=0)
    res = identify(
        model,
        ident,
        k=6,
        demos=demo,
        token_format=fmt,
        method="grad_x_act",
        z=0.05,
        ambiguity=0.25,
        keep_attributions=True,
        progress=False,
    )
    return model, res, ident, held, demo, fmt


def _sets(res):
    return {(x.layer, x.neuron) for x in res.good}, {(x.layer, x.neuron) for x in res.bad}


def test_rescore_on_items_equals_identify_on_that_subset(kept):
    model, res, ident, _, demo, fmt = kept
    idx = [1, 4, 5, 8]
    sub = rescore(res, items=idx)
    fresh = identify(
        model,
        ident.subset(idx),
        k=6,
        demos=demo,
        token_format=fmt,
        method="grad_x_act",
        z=0.05,
        ambiguity=0.25,
        progress=False,
    )
    assert torch.allclose(sub.scores, fresh.scores, atol=1e-6, rtol=1e-5)
    assert _sets(sub) == _sets(fresh)
    assert sub.config["task"]["item_ids"] == [ident[i].id for i in idx] == fresh.config["task"]["item_ids"]
    assert sub.config["task"]["item_keys"] == fresh.config["task"]["item_keys"]
    with pytest.raises(ValueError, match=r"items must be indices in \[0, 10\).*got 10"):
        rescore(res, items=[0, 10])
    with pytest.raises(ValueError, match="items must be a list"):
        rescore(res, items="0,1")


def test_frequencies_and_jaccard_equal_a_naive_loop(kept):
    _, res, *_ = kept
    st = stability(res, n_items=6, n_resamples=7, seed=2)
    rng = random.Random("stability:2")
    draws = [sorted(rng.sample(range(10), 6)) for _ in range(7)]
    sets = []
    for idx in draws:  # independent of rescore(items=): rebuild the result from the sliced attributions
        r = rescore(dataclasses.replace(res, attributions=res.attributions[idx], proxy_mask=res.proxy_mask[idx]))
        sets.append(_sets(r))
    for role, j in (("good", 0), ("bad", 1)):
        for layer in range(res.n_layers):
            for n in range(res.d_mlp):
                want = sum((layer, n) in s[j] for s in sets) / 7
                assert st.frequency(layer, n, role) == pytest.approx(want, abs=1e-7)
        pairs = [
            len(a[j] & b[j]) / len(a[j] | b[j]) if a[j] | b[j] else 1.0 for a, b in itertools.combinations(sets, 2)
        ]
        got = st.mean_jaccard_good if role == "good" else st.mean_jaccard_bad
        assert got == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    assert (st.n_items, st.n_scored, st.n_resamples, st.replace) == (6, 10, 7, False)
    # the bootstrap is the one explain.selection_stability reports
    from tl_neuronllm.explain.explainer import selection_stability

    boot = stability(res, n_resamples=5, seed=1)
    assert boot.replace and boot.n_items == 10
    sel = selection_stability(res, n_boot=5, seed=1)
    assert sel == {
        (x.layer, x.neuron): boot.frequency(x.layer, x.neuron, role)
        for role in ("good", "bad")
        for x in res.neurons(role)
    }


def test_csv_frequency_column_and_save_load(kept, tmp_path):
    _, res, *_ = kept
    st = stability(res, n_resamples=4)
    res.to_csv(tmp_path / "n.csv", stability=st)
    rows = list(csv.DictReader(open(tmp_path / "n.csv")))
    assert [r["label"] for r in rows] == res.labels("both")
    for r in rows:
        assert float(r["frequency"]) == pytest.approx(st.frequency(int(r["layer"]), int(r["neuron"]), r["role"]))
    res.to_csv(tmp_path / "plain.csv")
    assert "frequency" not in open(tmp_path / "plain.csv").readline()
    st.save(tmp_path / "st")
    back = Stability.load(tmp_path / "st")
    assert torch.equal(back.frequency_good, st.frequency_good) and back.summary() == st.summary()
    assert "torch" in back.config["versions"]
    with pytest.raises(FileNotFoundError, match="stability"):
        Stability.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="role must be"):
        st.frequency(0, 0, "both")


def test_bad_input(kept):
    _, res, *_ = kept
    with pytest.raises(ValueError, match="keep_attributions=True"):
        stability(dataclasses.replace(res, attributions=None))
    with pytest.raises(ValueError, match="n_items = 11 is more than the 10"):
        stability(res, n_items=11)
    with pytest.raises(ValueError, match="same set every time"):
        stability(res, n_items=10, replace=False)
    with pytest.raises(ValueError, match="n_resamples"):
        stability(res, n_resamples=0)


def test_planted_neurons_are_always_selected_and_agreement_grows_with_items():
    """Attributions = a planted good / bad neuron pair on every item + noise: the planted neurons are selected
    in every resample, and the sets of more items agree more (mean Jaccard) than those of fewer."""
    g = torch.Generator().manual_seed(0)
    n, L, d = 40, 2, 50
    attr = torch.randn(n, 1, L, d, generator=g)
    attr[:, 0, 0, 3] += 6.0
    attr[:, 0, 1, 7] -= 6.0
    attr[:, 0, 1, 10:14] += 1.5  # weaker good neurons: drowned by the noise of a few items, clear over many
    cfg = ScoringConfig(z=0.05, ambiguity=None)
    state = ACEState.zeros(L, d)
    state.update(attr, cfg)
    res = build_result(
        state.ace(None),
        state,
        5,
        attributions=attr,
        proxy_mask=torch.ones(n, 1),
        config={"z": 0.05, "ambiguity": None, "candidates": "topk", "tau": 0.2, "n_proxies": 1},
    )
    curve = stability_curve(res, [4, 10, 40], n_resamples=20)
    for st in curve:
        assert st.frequency(0, 3, "good") == 1.0 and st.frequency(1, 7, "bad") == 1.0
    jac = [s.mean_jaccard_good for s in curve]
    assert jac[0] + 0.2 < jac[2] and jac[0] < jac[1] < jac[2] <= 1.0
    assert curve[-1].replace and not curve[0].replace
    # a 0/1 matrix with known Jaccard values
    m = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.float32)
    assert mean_pairwise_jaccard(m) == pytest.approx((0.5 + 0 + 0) / 3)
