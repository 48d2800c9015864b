"""keep_attributions + rescore: re-forming candidate sets, filter and proxies equals a fresh identify."""

import pytest
import torch
from helpers import token_task

from tl_neuronllm import NeuronResult, identify, rescore


def _same(a: NeuronResult, b: NeuronResult) -> None:
    assert torch.allclose(a.scores, b.scores, atol=1e-7, rtol=0)
    assert [(n.layer, n.neuron) for n in a.good] == [(n.layer, n.neuron) for n in b.good]
    assert [(n.layer, n.neuron) for n in a.bad] == [(n.layer, n.neuron) for n in b.bad]
    for f in ("n_good", "n_bad"):
        assert torch.equal(getattr(a.state, f), getattr(b.state, f))


def test_rescore_equals_identify_with_those_options(token_model, tmp_path):
    task, fmt = token_task(7)
    base = dict(token_format=fmt, steps=2, n_proxies=3, batch_size=2, progress=False)
    full = identify(token_model, task, k=12, z=6, keep_attributions=True, **base)
    L, d = token_model.cfg.n_layers, token_model.cfg.d_mlp
    assert full.attributions.shape == (6, 3, L, d) and full.proxy_mask.shape == (6, 3)
    # kept attributions reproduce the result itself
    _same(rescore(full), full)
    # options swept without the model equal fresh runs with those options
    for opts in ({"z": 0.05, "ambiguity": None}, {"z": 3, "ambiguity": 0.25}, {"candidates": "threshold", "tau": 0.3}):
        _same(rescore(full, **opts), identify(token_model, task, k=12, **{"z": 6, **base, **opts}))
    p1 = rescore(full, proxies=[0])
    _same(p1, identify(token_model, task, k=12, z=6, **{**base, "n_proxies": 1}))
    assert p1.config["n_proxies"] == 1 and p1.attributions.shape[1] == 1
    assert len(rescore(full, k=3).good) <= 3
    # save/load keeps the attributions
    back = NeuronResult.load(full.save(tmp_path / "r"))
    assert torch.equal(back.attributions, full.attributions) and torch.equal(back.proxy_mask, full.proxy_mask)
    _same(rescore(back, z=4), rescore(full, z=4))


def test_rescore_errors(token_model, tmp_path):
    task, fmt = token_task(4)
    r = identify(token_model, task, k=5, token_format=fmt, steps=1, progress=False)
    assert r.attributions is None
    with pytest.raises(ValueError, match="keep_attributions"):
        rescore(r)
    rk = identify(
        token_model, task, k=5, token_format=fmt, steps=1, n_proxies=2, keep_attributions=True, progress=False
    )
    with pytest.raises(ValueError, match=r"proxies must be distinct indices in \[0, 2\)"):
        rescore(rk, proxies=[0, 2])
    with pytest.raises(ValueError, match="ambiguity must be"):
        rescore(rk, ambiguity=0.9)
    with pytest.raises(ValueError, match="checkpoint"):
        identify(token_model, task, k=5, token_format=fmt, keep_attributions=True, checkpoint=tmp_path, progress=False)
    with pytest.raises(ValueError, match="activation_contrast"):
        identify(
            token_model,
            task,
            k=5,
            token_format=fmt,
            keep_attributions=True,
            method="activation_contrast",
            progress=False,
        )
