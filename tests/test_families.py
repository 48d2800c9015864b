"""Every decoder family of ``benchmarks/families.py``: exact, with the shortcuts it should engage, a direct
effect equal to a hand computation through its final norm and head, interventions that change only what they
should; mixture-of-experts models refused before any model time; OPT / Falcon widths TransformerLens maps
wrongly named as such; and the support table of docs/models.md made from the same specs.

Families whose features another family covers are marked ``slow`` (the default run stays well under a minute).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
from helpers import has_bridge, load_benchmark, text_task, word_tokenizer
from test_attribution import queries_for
from test_exactness import assert_equal_ig

from tl_neuronllm import identify
from tl_neuronllm.errors import ModelError
from tl_neuronllm.explain.direct_effect import direct_logit_effects
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.result.interventions import Intervention, make_hooks

pytestmark = pytest.mark.skipif(not has_bridge(), reason="TransformerBridge needs TransformerLens 4.x")
bench = load_benchmark("families")
FAMILIES = bench.FAMILIES


def params(labels):
    return [pytest.param(x, marks=pytest.mark.slow if FAMILIES[x].slow else (), id=x) for x in labels]


@functools.cache
def model_of(label: str):
    return bench.build(label, word_tokenizer())


@pytest.mark.parametrize("label", params(FAMILIES))
def test_family_is_exact_with_its_shortcuts(label, recwarn):
    model = model_of(label)
    ad, letter_q, cloze_q = queries_for(model, 2)
    assert ad.share_prefix([q.prompt for q in letter_q + cloze_q]) >= 8
    for q in (letter_q[0], cloze_q[1], letter_q[3]):
        assert_equal_ig(ad, q)
    assert ad.kv_backend == "hf"
    assert ad.fast_paths == bench.expected_paths(FAMILIES[label])
    assert ad.fast.fallbacks == []  # nothing switched off by a failed check
    assert [s.split(":")[0] for s in ad.fast.not_supported] == list(FAMILIES[label].off)


FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "final_norm")


def hand_direct_effect(model, layer: int, idx: int) -> torch.Tensor:
    """Through the Hugging Face modules by hand: the down-projection's column ``idx``, centring for a
    LayerNorm, the final norm's weight (Gemma: ``1 + w``; OLMo: none), ``lm_head``, and the final logit
    transform's slope at 0 (Granite ``1 / logits_scaling``, Cohere ``logit_scale``; soft-capping: 1)."""
    hf = model.original_model
    cfg, d, d_mlp = hf.config, model.cfg.d_model, model.cfg.d_mlp
    layers = next(m for m in hf.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == model.cfg.n_layers)
    downs = [
        m
        for m in (getattr(x, "original_component", x) for x in layers[layer].modules())
        if hasattr(m, "weight")
        and getattr(m.weight, "ndim", 0) == 2
        and tuple(m.weight.shape) in ((d, d_mlp), (d_mlp, d))
        and (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
        and (tuple(m.weight.shape) == (d, d_mlp)) == isinstance(m, torch.nn.Linear)
    ]
    down = downs[-1]  # the MLP's last projection into the residual stream
    w = down.weight.detach().double()
    v = (w[idx] if type(down).__name__ == "Conv1D" else w[:, idx]).clone()
    norm = next(m for n, m in hf.named_modules() if n.split(".")[-1] in FINAL_NORMS and not re.search(r"\.\d+\.", n))
    norm = getattr(norm, "original_component", norm)  # the Bridge wraps the Hugging Face module in place
    if "LayerNorm" in type(norm).__name__:
        v = v - v.mean()
    weight = getattr(norm, "weight", None)
    if weight is not None:
        weight = weight.detach().double()
        v = v * ((1.0 + weight) if cfg.model_type.startswith("gemma") else weight)
    logits = v @ hf.lm_head.weight.detach().double().T
    if getattr(cfg, "logits_scaling", None):
        logits = logits / cfg.logits_scaling
    if getattr(cfg, "logit_scale", None) is not None:
        logits = logits * cfg.logit_scale
    return logits.float()


@pytest.mark.parametrize("label", params(FAMILIES))
def test_family_direct_effect_matches_a_hand_computation(label):
    model = model_of(label)
    for name, norm in model.original_model.named_modules():
        if (
            name.split(".")[-1] in FINAL_NORMS
            and not re.search(r"\.\d+\.", name)
            and getattr(norm, "weight", None) is not None
        ):
            with torch.no_grad():  # norm weights away from 1, so that they matter
                norm.weight.copy_(torch.linspace(-0.4, 0.6, norm.weight.numel()))
    neurons = [(0, 3), (1, 5)]
    got = direct_logit_effects(model, neurons)
    for row, (layer, idx) in zip(got, neurons):
        want = hand_direct_effect(model, layer, idx)
        assert float(want.abs().max()) > 0
        err = float((row - want).abs().max() / want.abs().max())
        assert err < 1e-4, (label, layer, err)


@pytest.mark.parametrize("label", params(FAMILIES))
def test_family_interventions_change_only_what_they_should(label):
    model = model_of(label)
    ad = ModelAdapter(model)
    ad.check_widths()
    toks = torch.tensor([ad.tokenize("what is the colour of the sky ?")])
    P = toks.shape[1]
    acts: dict[int, torch.Tensor] = {}

    def keep(layer):
        def fn(act, hook):
            acts[layer] = act.detach().clone()

        return fn

    record = [(n, keep(i)) for i, n in enumerate(ad.hook_names)]
    with torch.no_grad():
        clean = ad.forward(toks, fwd_hooks=record)
        clean_acts = dict(acts)
        j = int(clean_acts[0][0, -1].abs().argmax())  # an active neuron at the site (ReLU zeroes many)
        iv = Intervention(neurons=((0, j),), mode="scale", factor=3.0)
        hooked = make_hooks(ad.hook_names, iv, d_mlp=ad.d_mlp)
        out = ad.forward(toks, fwd_hooks=[*hooked, *record])  # the recorders run after the intervention
    a0, c0 = acts[0], clean_acts[0]
    assert torch.allclose(a0[0, -1, j], 3.0 * c0[0, -1, j])
    keep_mask = torch.ones_like(c0, dtype=torch.bool)
    keep_mask[0, -1, j] = False
    assert torch.equal(a0[keep_mask], c0[keep_mask])  # layer 0: only neuron j at the site
    assert torch.equal(acts[1][0, : P - 1], clean_acts[1][0, : P - 1])  # later layer: earlier positions untouched
    assert torch.equal(out[0, : P - 1], clean[0, : P - 1])  # logits before the site untouched
    assert float((out[0, -1] - clean[0, -1]).abs().max()) > 1e-6  # the site's logits move


@pytest.mark.parametrize("label", list(bench.MOE))
def test_mixture_of_experts_is_refused_before_any_model_time(label, monkeypatch):
    model = model_of(label)
    calls = []
    monkeypatch.setattr(type(model), "forward", lambda self, *a, **k: calls.append(1))
    with pytest.raises(ModelError, match=r"mixture-of-experts blocks \(layer 0: .*router .* experts\)") as e:
        ModelAdapter(model)
    assert "no hook point on an expert's hidden units" in str(e.value)
    assert "transformer-lens 4" in str(e.value) and "hook_post" in str(e.value)
    with pytest.raises(ModelError, match="mixture-of-experts"):  # the public entry point, too
        identify(model, text_task(6), k=4, progress=False)
    assert calls == []  # refused before any forward


@pytest.mark.parametrize(
    ("config", "model", "field", "kwargs"),
    [
        ("OPTConfig", "OPTForCausalLM", "ffn_dim", dict(ffn_dim=128, word_embed_proj_dim=64, init_std=0.2)),
        ("FalconConfig", "FalconForCausalLM", "ffn_hidden_size", dict(ffn_hidden_size=128, alibi=False)),
    ],
)
def test_width_tl_maps_wrongly_names_the_config_mapping(config, model, field, kwargs):
    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)
    tok = word_tokenizer()
    bridge = bench.boot(bench.hf_model(config, model, {**base, **kwargs}, len(tok)), tok, "narrow")
    with pytest.raises(ModelError, match=rf"TransformerLens's config mapping .*ignores .*{field} = 128"):
        ModelAdapter(bridge)
    bridge.cfg.d_mlp = 128  # the workaround the message gives
    ad, letter_q, _ = queries_for(bridge, 1)
    ad.check_widths()
    assert_equal_ig(ad, letter_q[0])


def test_support_table_in_docs_is_made_from_the_family_specs():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    start, end = doc.index(bench.TABLE_START), doc.index(bench.TABLE_END)
    assert doc[start + len(bench.TABLE_START) : end].strip() == bench.support_table().strip(), (
        "docs/models.md is stale: run python -m benchmarks families --table-only"
    )
    assert len(FAMILIES) >= 21 and len(bench.MOE) >= 4
