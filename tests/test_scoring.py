"""The streaming ACE kernel: hand-computed cases, any batch split equals all-at-once, merges,
ambiguity filter, threshold candidates and selection."""

import pytest
import torch

from tl_neuronllm.scoring.ace import ACEState, ScoringConfig, candidate_masks, select


def naive_ace(ig, cfg):
    """Direct per-item loops over method.md's definitions."""
    n, P, L, d = ig.shape
    es = ig.double().sum(1)
    G, B = [], []
    for j in range(n):
        flat = es[j].flatten()
        if cfg.candidates == "topk":
            k = cfg.z_count(L * d)
            order = sorted(range(L * d), key=lambda i: -float(flat[i]))
            g = {i for i in order[:k] if flat[i] > 0}
            order = sorted(range(L * d), key=lambda i: float(flat[i]))
            b = {i for i in order[:k] if flat[i] < 0}
        else:
            m = float(flat.abs().max())
            g = {i for i in range(L * d) if flat[i] > 0 and flat[i] >= cfg.tau * m}
            b = {i for i in range(L * d) if flat[i] < 0 and -flat[i] >= cfg.tau * m}
        G.append(g)
        B.append(b)
    out = torch.zeros(L * d, dtype=torch.float64)
    for w in range(L * d):
        ng = sum(w in g for g in G)
        nb = sum(w in b for b in B)
        amb = False
        if cfg.ambiguity is not None and min(ng, nb) > 0:
            amb = min(ng, nb) >= cfg.ambiguity * (ng + nb)
        if not amb:
            out[w] = sum(float(es[j].flatten()[w]) for j in range(n) if w in G[j] or w in B[j]) / n
    return out.reshape(L, d).float()


def test_hand_computed_case():
    # 2 items, 1 proxy, 1 layer, 4 neurons; z = 1 per sign
    ig = torch.tensor([[[[3.0, -1.0, 0.5, -2.0]]], [[[1.0, 2.0, -4.0, 0.1]]]])
    st = ACEState.zeros(1, 4)
    cfg = ScoringConfig(z=1)
    st.update(ig, cfg)
    # item 0: G={0}, B={3}; item 1: G={1}, B={2}; no neuron both -> nothing ambiguous
    assert st.ace(0.0).tolist() == [[1.5, 1.0, -2.0, -1.0]]
    assert st.n_good.tolist() == [[1, 1, 0, 0]] and st.n_bad.tolist() == [[0, 0, 1, 1]]


def test_ambiguous_neuron_dropped_strictly_and_kept_with_tolerance():
    ig = torch.tensor([[[[3.0, -1.0]]], [[[-2.0, 1.0]]], [[[4.0, -1.0]]]])
    st = ACEState.zeros(1, 2)
    st.update(ig, ScoringConfig(z=1))
    # neuron 0: good in items 0,2 and bad in item 1 -> ambiguous (strict)
    assert st.ace(0.0)[0, 0] == 0
    # minority share 1/3 >= 0.3 -> still dropped; with rho=0.4 it is kept
    assert st.ace(0.3)[0, 0] == 0
    assert st.ace(0.4)[0, 0] == pytest.approx((3 - 2 + 4) / 3)
    assert st.ace(None)[0, 0] == pytest.approx(5 / 3)


@pytest.mark.parametrize(
    "cfg",
    [
        ScoringConfig(z=3),
        ScoringConfig(z=0.1),
        ScoringConfig(z=2, ambiguity=0.25),
        ScoringConfig(candidates="threshold", tau=0.3),
        ScoringConfig(z=4, ambiguity=None),
    ],
)
def test_matches_naive_and_any_split(cfg):
    g = torch.Generator().manual_seed(0)
    ig = torch.randn(9, 3, 2, 8, generator=g)
    ref = naive_ace(ig, cfg)
    whole = ACEState.zeros(2, 8)
    whole.update(ig, cfg)
    assert torch.allclose(whole.ace(cfg.ambiguity), ref, atol=1e-6)
    for split in ([1] * 9, [4, 5], [2, 3, 4], [9]):
        st = ACEState.zeros(2, 8)
        i = 0
        for n in split:
            st.update(ig[i : i + n], cfg)
            i += n
        assert torch.equal(st.ace(cfg.ambiguity), whole.ace(cfg.ambiguity))
    # shards merged by sum give the same state
    a, b = ACEState.zeros(2, 8), ACEState.zeros(2, 8)
    a.update(ig[::2], cfg)
    b.update(ig[1::2], cfg)
    merged = a.merge(b)
    assert torch.allclose(merged.ace(cfg.ambiguity), whole.ace(cfg.ambiguity), atol=1e-12)
    assert int(merged.n_items) == 9


def test_proxy_mask_and_mean_std():
    ig = torch.tensor([[[[1.0]], [[2.0]]], [[[5.0]], [[100.0]]]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    st = ACEState.zeros(1, 1)
    es = st.update(ig, ScoringConfig(z=1), mask)
    assert es.flatten().tolist() == [3.0, 5.0]
    mean, std = st.es_mean_std()
    assert float(mean) == 4.0 and float(std) == pytest.approx(1.0)


def test_candidate_masks_threshold_ignores_all_zero_items():
    es = torch.zeros(1, 1, 3)
    g, b = candidate_masks(es, ScoringConfig(candidates="threshold"))
    assert g.sum() == 0 and b.sum() == 0


def test_select_counts_fractions_and_signs():
    s = torch.tensor([[0.5, -0.2, 0.0], [0.9, -0.7, 0.1]])
    assert select(s, 2, 1) == [(1, 0, pytest.approx(0.9)), (0, 0, 0.5)]
    assert [x[:2] for x in select(s, 10, -1)] == [(1, 1), (0, 1)]  # only negative scores
    assert len(select(s, 0.5, 1)) == 3  # half of 6 neurons
    with pytest.raises(ValueError):
        select(s, -1, 1)


def test_bad_inputs():
    st = ACEState.zeros(2, 3)
    with pytest.raises(ValueError, match="expected attributions"):
        st.update(torch.zeros(1, 1, 3, 2), ScoringConfig())
    with pytest.raises(ValueError, match="no items"):
        st.ace()
    with pytest.raises(ValueError, match="ambiguity"):
        ScoringConfig(ambiguity=0.7)
    with pytest.raises(ValueError, match="candidates"):
        ScoringConfig(candidates="all")
    with pytest.raises(ValueError, match="merge"):
        st.merge(ACEState.zeros(1, 3))
