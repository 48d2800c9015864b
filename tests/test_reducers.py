"""Reducers: two halves merged equal one pass exactly; QR-Neuron and knowledge-neuron reducers equal the
reference functions; baselines work with keep_attributions / rescore and checkpoints like the method."""

from __future__ import annotations

import helpers
import pytest
import torch
from helpers import token_task

from tl_neuronllm import NeuronResult, identify, rescore
from tl_neuronllm.scoring import baseline_reducers as blr
from tl_neuronllm.scoring.ace import ACEState, ScoringConfig
from tl_neuronllm.scoring.reducers import ACEReducer

L, D = 2, 16


def _batch(seed: int, n: int = 10, P: int = 4):
    """Sparse small-integer attributions with one maximum of 8 per prompt, and items with 4, 2 or 1 proxies:
    every sum, mean and normalisation is exact in float64, so any order of additions gives the same bits."""
    g = torch.Generator().manual_seed(seed)
    sparse = torch.rand(n, P, L, D, generator=g) < 0.15
    attr = torch.randint(-4, 5, (n, P, L, D), generator=g).float() * sparse
    attr[:, :, 0, 0] = 8.0
    mask = torch.ones(n, P)
    mask[1, 2:] = mask[4, 1:] = 0.0  # items with fewer proxies
    attr[mask == 0] = 0.0
    correct = torch.rand(n, P, generator=g) > 0.4
    return attr, mask, correct


REDUCERS = [ACEReducer, blr.QRNeuronReducer, blr.KnowledgeNeuronsReducer, blr.ActivationContrastReducer]


@pytest.mark.parametrize("cls", REDUCERS)
def test_two_halves_merged_equal_one_pass(cls):
    attr, mask, correct = _batch(0)
    scoring = ScoringConfig(z=5)
    whole = cls.create(L, D, scoring)
    whole.update(attr, mask, correct)
    a, b = cls.create(L, D, scoring), cls.create(L, D, scoring)
    a.update(attr[:4], mask[:4], correct[:4])
    b.update(attr[4:], mask[4:], correct[4:])
    merged = a.merge(b)
    for name, t in whole.tensors().items():
        assert torch.equal(merged.tensors()[name], t), name
    assert torch.equal(merged.result().scores, whole.result().scores)
    back = cls.from_tensors(whole.tensors(), scoring)
    assert torch.equal(back.result().scores, whole.result().scores)
    with pytest.raises(ValueError, match="cannot merge"):
        whole.merge(object())


def _per_item(attr, mask):
    return [attr[i][mask[i] > 0] for i in range(attr.shape[0])]


def test_qr_and_knowledge_neuron_reducers_equal_the_reference_functions():
    attr, mask, _ = _batch(1, n=12)
    for cls, fn in (
        (blr.QRNeuronReducer, helpers.qr_neuron_scores),
        (blr.KnowledgeNeuronsReducer, helpers.knowledge_neuron_scores),
    ):
        r = cls.create(L, D, ScoringConfig())
        r.update(attr[:5], mask[:5])
        r.update(attr[5:], mask[5:])
        out = r.result()
        scores, info = fn(_per_item(attr, mask))
        assert torch.equal(out.scores, scores) and out.info == info and out.positive_only
        assert (scores > 0).any()


def test_activation_contrast_needs_correctness_and_warns_when_undefined():
    attr, mask, correct = _batch(2)
    r = blr.ActivationContrastReducer.create(L, D, ScoringConfig())
    with pytest.raises(ValueError, match="cannot be rescored"):
        r.update(attr, mask)
    r.update(attr, mask, torch.ones_like(correct))
    with pytest.warns(UserWarning, match="contrast needs both"):
        out = r.result()
    assert (out.scores == 0).all() and out.info["contrast_defined"] is False


def test_ace_reducer_is_the_streaming_ace_state():
    attr, mask, _ = _batch(3)
    scoring = ScoringConfig(z=4, ambiguity=0.25)
    r = ACEReducer.create(L, D, scoring)
    r.update(attr, mask)
    st = ACEState.zeros(L, D)
    st.update(attr, scoring, mask)
    assert torch.equal(r.result().scores, st.ace(0.25)) and isinstance(r.state, ACEState)
    with pytest.raises(ValueError, match="expected attributions"):
        blr.QRNeuronReducer.create(L, D, scoring).update(attr[:, :, :1], mask)


@pytest.mark.parametrize("method", ["qr_neuron", "knowledge_neurons"])
def test_baselines_keep_attributions_rescore_and_save(token_model, tmp_path, method):
    task, fmt = token_task(7)
    base = dict(token_format=fmt, steps=2, n_proxies=3, batch_size=2, progress=False, method=method)
    full = identify(token_model, task, k=6, keep_attributions=True, **base)
    assert full.config.reducer == method and not isinstance(full.state, ACEState)
    again = rescore(full)
    assert torch.equal(again.scores, full.scores) and again.labels() == full.labels()
    p1 = rescore(full, proxies=[0])
    ref = identify(token_model, task, k=6, **{**base, "n_proxies": 1})
    assert torch.allclose(p1.scores, ref.scores, atol=1e-7, rtol=0) and p1.labels() == ref.labels()
    back = NeuronResult.load(full.save(tmp_path / "r"))
    assert type(back.state) is type(full.state) and back.config == full.config
    for name, t in full.state.tensors().items():
        assert torch.equal(back.state.tensors()[name], t), name
    with pytest.raises(ValueError, match="no ES statistics"):
        _ = back.es_mean


def test_baseline_checkpoint_resumes_to_the_same_result(token_model, tmp_path, monkeypatch):
    import tl_neuronllm.pipeline.identify as pl

    task, fmt = token_task(7)
    opts = dict(token_format=fmt, steps=2, n_proxies=2, batch_size=2, progress=False, method="qr_neuron", k=6)
    ref = identify(token_model, task, **opts)
    orig, calls = pl.attribute_item_batch, []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("stop")
        return orig(*a, **k)

    monkeypatch.setattr(pl, "attribute_item_batch", failing)
    with pytest.raises(RuntimeError, match="stop"):
        identify(token_model, task, checkpoint=tmp_path, **opts)
    monkeypatch.setattr(pl, "attribute_item_batch", orig)
    resumed = identify(token_model, task, checkpoint=tmp_path, **opts)
    assert torch.equal(resumed.scores, ref.scores) and resumed.labels() == ref.labels()
    for name, t in ref.state.tensors().items():
        assert torch.equal(resumed.state.tensors()[name], t), name
