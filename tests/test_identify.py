"""identify() end to end on both model classes, text and token tasks, letter and cloze modes."""

import pytest
import torch
from helpers import text_task, token_task

from tl_neuronllm import IdentifyConfig, TaskError, identify
from tl_neuronllm.attribution.kernels import ig_naive
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.pipeline.prepare import build_queries, choose_demos
from tl_neuronllm.scoring.ace import ACEState


def test_identify_text_task(text_model):
    task = text_task(6)
    r = identify(text_model, task, k=5, steps=3, progress=False)
    assert r.scores.shape == (text_model.cfg.n_layers, text_model.cfg.d_mlp) and r.scores.dtype == torch.float32
    assert len(r.good) <= 5 and all(n.score > 0 for n in r.good) and all(n.score < 0 for n in r.bad)
    assert [n.score for n in r.good] == sorted((n.score for n in r.good), reverse=True)
    assert r.config["task"]["n_scored"] == 5 and len(r.config["task"]["demo_ids"]) == 1
    assert 0 <= r.stats["accuracy"] <= 1
    rc = identify(text_model, task, k=5, steps=2, mode="cloze", progress=False)
    assert rc.config["mode"] == "cloze"


def test_identify_scores_equal_naive_reference_pipeline(token_model):
    """ACE from identify equals ACE built from the naive IG of every proxy."""
    task, fmt = token_task(5)
    cfg = IdentifyConfig(token_format=fmt, steps=3, n_proxies=2, z=5)
    r = identify(token_model, task, k=10, config=cfg, progress=False)
    ad = ModelAdapter(token_model)
    scored, demos = choose_demos(task, cfg.n_shots, cfg.seed, None)
    queries = build_queries(ad, scored, cfg, demos)
    st = ACEState.zeros(ad.n_layers, ad.d_mlp)
    ig = torch.stack([torch.stack([ig_naive(ad, q, steps=3, rule=cfg.ig_rule) for q in qs]) for qs in queries])
    st.update(ig, cfg.scoring)
    assert torch.allclose(r.scores, st.ace(cfg.ambiguity), atol=1e-6)


def test_deterministic_and_methods(token_model):
    task, fmt = token_task(6)
    a = identify(token_model, task, k=5, token_format=fmt, steps=2, progress=False)
    b = identify(token_model, task, k=5, token_format=fmt, steps=2, progress=False)
    assert torch.equal(a.scores, b.scores) and a.good == b.good
    for method in ("grad_x_act", "activation"):
        r = identify(token_model, task, k=5, token_format=fmt, method=method, progress=False)
        assert r.config["method"] == method and r.scores.abs().sum() > 0
    c = identify(token_model, task, k=0.05, token_format=fmt, steps=2, progress=False, kv_cache="off", batch_size=2)
    assert torch.allclose(c.scores, a.scores, atol=1e-6)


def test_options_and_demo_errors(token_model):
    task, fmt = token_task(4)
    with pytest.raises(TypeError, match="unknown option"):
        identify(token_model, task, token_format=fmt, stepz=3)
    with pytest.raises(ValueError, match="method must be one of"):
        identify(token_model, task, token_format=fmt, method="magic")
    with pytest.raises(TaskError, match="both a demo and a scored item"):
        identify(token_model, task, token_format=fmt, demos=[task.items[0]], progress=False)
    with pytest.raises(TaskError, match="too few"):
        identify(token_model, task.subset([0]), token_format=fmt, progress=False)
    with pytest.raises(TaskError, match="must be a tl_neuronllm.Task"):
        identify(token_model, [{"question": "q"}], token_format=fmt)
    other, _ = token_task(3, seed=9)
    r = identify(token_model, task, k=3, token_format=fmt, demos=other, steps=2, n_shots=2, progress=False)
    assert r.config["task"]["n_scored"] == 4 and len(r.config["task"]["demo_ids"]) == 2
