"""The attribution-method registry: names, errors, and a registered toy method picked up by identify."""

from __future__ import annotations

import pytest
import torch
from helpers import token_task

from tl_neuronllm import IdentifyConfig, identify
from tl_neuronllm.attribution.kernels import grad_x_act, ig_fast
from tl_neuronllm.attribution.methods import (
    ATTRIBUTION_METHODS,
    Attribution,
    AttributionMethod,
    AttributionOptions,
    get_method,
    method_names,
    register_method,
)
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.pipeline.prepare import prepare
from tl_neuronllm.pipeline.resolve import resolve
from tl_neuronllm.scoring.reducers import ACEReducer


def test_registered_names_and_unknown_name_lists_the_valid_ones():
    assert list(ATTRIBUTION_METHODS)[:3] == ["ig", "grad_x_act", "activation"]
    assert method_names() == (
        "ig",
        "grad_x_act",
        "activation",
        "activation_contrast",
        "knowledge_neurons",
        "qr_neuron",
        "mean_ig",
    )
    with pytest.raises(ValueError, match=r"method must be one of .*'ig'.*'grad_x_act'.*'qr_neuron'"):
        IdentifyConfig(method="magic")
    with pytest.raises(
        ValueError,
        match=r"unknown attribution method 'magic'; registered: \['activation', 'activation_contrast', 'grad_x_act'",
    ):
        get_method("magic")
    with pytest.raises(ValueError, match=r"unknown method 'magic'; valid: \['ig'"):
        resolve("magic")
    with pytest.raises(ValueError, match="has no name"):
        register_method(type("Nameless", (AttributionMethod,), {"attribute": lambda *a: None}))


def test_methods_call_their_kernels_with_the_options(token_model):
    task, fmt = token_task(4)
    cfg = IdentifyConfig(token_format=fmt, steps=2, n_proxies=2)
    prep = prepare(token_model, task, cfg)
    qs = [q for item in prep.queries for q in item]
    opts = AttributionOptions.from_config(cfg)
    assert opts.ig_kwargs() == dict(
        steps=2, rule=cfg.ig_rule, target="ce", layers=None, chunk_rows=None, memory_budget_mb=None
    )
    ig = get_method("ig").attribute(prep.adapter, qs[:2], opts)
    for j, q in enumerate(qs[:2]):
        s, pr, a = ig_fast(prep.adapter, q, steps=2, rule=cfg.ig_rule)
        assert torch.equal(ig.scores[j], s) and torch.equal(ig.probs[j], pr) and torch.equal(ig.acts[j], a)
    for name, with_grad in (("grad_x_act", True), ("activation", False)):
        got = get_method(name).attribute(prep.adapter, qs, opts)
        s, pr, a = grad_x_act(prep.adapter, qs, batch_size=cfg.batch_size, with_grad=with_grad)
        assert torch.equal(got.scores, s) and torch.equal(got.acts, a)
        assert all(torch.equal(x, y) for x, y in zip(got.probs, pr))


class Doubled(AttributionMethod):
    """A toy method: twice grad x act."""

    name = "doubled_gxa"

    def attribute(self, adapter: ModelAdapter, prompts, options: AttributionOptions) -> Attribution:
        s, pr, a = grad_x_act(adapter, list(prompts), target=options.target, batch_size=options.batch_size)
        return Attribution(2 * s, pr, a)


def test_a_registered_toy_method_is_picked_up_by_identify(token_model):
    task, fmt = token_task(6)
    register_method(Doubled)
    try:
        assert "doubled_gxa" in method_names()
        assert isinstance(resolve("doubled_gxa")[0], Doubled) and resolve("doubled_gxa")[1] is ACEReducer
        opts = dict(token_format=fmt, k=5, progress=False, z=6, ambiguity=None)
        toy = identify(token_model, task, method="doubled_gxa", **opts)
        ref = identify(token_model, task, method="grad_x_act", **opts)
        assert toy.config["method"] == "doubled_gxa" and toy.config.reducer == "ace"
        # the same candidate sets (scaling keeps every order), so ACE doubles exactly
        assert torch.equal(toy.scores, 2 * ref.scores) and toy.labels() == ref.labels()
        assert torch.equal(toy.act_mean, ref.act_mean)
    finally:
        ATTRIBUTION_METHODS.pop("doubled_gxa")
    with pytest.raises(ValueError, match="method must be one of"):
        IdentifyConfig(method="doubled_gxa")
