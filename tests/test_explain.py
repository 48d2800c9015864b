"""``result.explain``: direct effects against a hand computation from the raw weights, activations
against ``run_with_cache``, the behaviour statistics against plain re-computations, on every model class."""

from __future__ import annotations

import csv
import dataclasses
import math
import random

import pytest
import torch
from helpers import ALL_KINDS, identify_config_of, make_model, text_task, token_task

from tl_neuronllm import ModelError, TaskError, identify, rescore
from tl_neuronllm.explain.direct_effect import direct_logit_effects
from tl_neuronllm.explain.explainer import explain, selection_stability
from tl_neuronllm.explain.explanation import Explanation
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import predict
from tl_neuronllm.pipeline.prepare import build_queries
from tl_neuronllm.scoring.ace import select

PARAMS = [(k, g) for k in ALL_KINDS for g in (False, True)]
IDS = [f"{k}-{'gated' if g else 'gelu'}" for k, g in PARAMS]


def _task_and_options(kind: str, mode: str = "letter"):
    if kind in ("native", "hooked"):
        task, fmt = token_task(12)
        return task, dict(token_format=fmt, mode=mode)
    return text_task(10), dict(mode=mode)


def _raw_weights(model, kind: str, gated: bool, layer: int):
    """(W_out [d_mlp, d_model], final norm weight or None, centre?, W_U [d_model, d_vocab]) read from the
    underlying modules' parameters, not from the TransformerLens properties explain uses."""
    f64 = lambda t: t.detach().double()
    if kind == "hf":
        hf = model.original_model
        if gated:  # Llama: down_proj is Linear(d_mlp -> d_model), RMSNorm
            return (
                f64(hf.model.layers[layer].mlp.down_proj.weight).T,
                f64(hf.model.norm.weight),
                False,
                f64(hf.lm_head.weight).T,
            )
        # GPT-2: c_proj is Conv1D with weight [d_mlp, d_model], LayerNorm
        return (
            f64(hf.transformer.h[layer].mlp.c_proj.weight),
            f64(hf.transformer.ln_f.weight),
            True,
            f64(hf.lm_head.weight).T,
        )
    sd = dict(model.state_dict().items())
    if kind == "native":
        mlp = model.blocks[layer].mlp.original_component
        out = mlp.out if gated else mlp.fc_out
        return (
            f64(out.original_component.weight).T,
            f64(model.ln_final.original_component.weight),
            not gated,
            f64(model.unembed.original_component.weight).T,
        )
    # HookedTransformer (TL 2.x / 3.x state-dict names)
    return (f64(sd[f"blocks.{layer}.mlp.W_out"]), f64(sd["ln_final.w"]), not gated, f64(sd["unembed.W_U"]))


@pytest.mark.parametrize("kind,gated", PARAMS, ids=IDS)
def test_direct_effect_equals_hand_computation_from_the_weights(kind, gated):
    model = make_model(kind, gated)
    with torch.no_grad():  # a non-trivial final norm weight (fresh models start with ones)
        for name, p in model.ln_final.named_parameters():
            if name.split(".")[-1] in ("w", "weight"):
                p.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
    L, d = model.cfg.n_layers, model.cfg.d_mlp
    neurons = [(0, 0), (1, 5), (L - 1, d - 1), (1, 5)]
    got = direct_logit_effects(model, neurons)
    assert got.dtype == torch.float32 and got.shape == (4, model.cfg.d_vocab)
    for row, (layer, i) in zip(got, neurons):
        W_out, w, centre, W_U = _raw_weights(model, kind, gated, layer)
        v = [float(x) for x in W_out[i]]
        if centre:
            m = sum(v) / len(v)
            v = [x - m for x in v]
        v = [x * float(s) for x, s in zip(v, w)]
        want = [sum(a * float(b) for a, b in zip(v, W_U[:, t])) for t in range(W_U.shape[1])]
        torch.testing.assert_close(row, torch.tensor(want, dtype=torch.float32), rtol=1e-6, atol=1e-6)
    # not trivially equal to the un-normed direction: the norm weight and centring matter
    W_out, _, _, W_U = _raw_weights(model, kind, gated, 0)
    plain = (W_out[0] @ W_U).float()
    assert not torch.allclose(plain, got[0], atol=1e-3)
    with pytest.raises(ModelError, match="outside this model"):
        direct_logit_effects(model, [(L, 0)])


@pytest.mark.parametrize("kind,gated", PARAMS, ids=IDS)
@pytest.mark.parametrize("mode", ["letter", "cloze"])
def test_explain_matches_direct_recomputation(kind, gated, mode):
    model = make_model(kind, gated)
    task, opts = _task_and_options(kind, mode)
    result = identify(model, task, k=4, method="grad_x_act", progress=False, z=0.05, **opts)
    n_hooks = sum(len(m._forward_hooks) for m in model.modules())
    ex = explain(result, model, task, top_items=2, top_tokens=5)
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks  # model left as it came in
    assert isinstance(ex, Explanation)
    assert [x.label for x in ex.neurons] == result.labels("both")
    assert [x.role for x in ex.neurons] == ["good"] * len(result.good) + ["bad"] * len(result.bad)
    assert [x.rank for x in ex.neurons if x.role == "good"] == list(range(1, len(result.good) + 1))
    assert all(x.stability is None for x in ex.neurons)  # no kept attributions

    # the same prompts the identification run scored, by an independent forward with run_with_cache
    cfg = identify_config_of(result)
    adapter = ModelAdapter(model)
    ids = result.config["task"]["item_ids"]
    scored = task.subset([i for i, it in enumerate(task.items) if it.id in ids])
    demo = [it for it in task.items if it.id in result.config["task"]["demo_ids"]]
    queries = [q for qs in build_queries(adapter, scored, cfg, demo) for q in qs]
    assert len(ex.activations) == len(queries) == ex.info["n_questions"]
    acts = torch.zeros(len(queries), len(ex.neurons), dtype=torch.float64)
    for qi, q in enumerate(queries):
        _, cache = model.run_with_cache(torch.tensor([list(q.prompt)]))
        for j, x in enumerate(ex.neurons):
            acts[qi, j] = float(cache[f"blocks.{x.layer}.mlp.hook_post"][0, q.site, x.neuron])
    torch.testing.assert_close(ex.activations.double(), acts, rtol=1e-4, atol=1e-5)
    probs = predict(adapter, queries)
    correct = [int(p.argmax()) == q.gold for p, q in zip(probs, queries)]
    assert ex.correct == correct

    eff = direct_logit_effects(model, [(x.layer, x.neuron) for x in ex.neurons]).double()
    for j, x in enumerate(ex.neurons):
        a = [float(v) for v in acts[:, j]]
        right = [v for v, c in zip(a, correct) if c]
        wrong = [v for v, c in zip(a, correct) if not c]
        assert (x.n_right, x.n_wrong) == (len(right), len(wrong))
        if right:
            assert x.act_right == pytest.approx(sum(right) / len(right), rel=1e-4, abs=1e-5)
        if wrong:
            assert x.act_wrong == pytest.approx(sum(wrong) / len(wrong), rel=1e-4, abs=1e-5)
        if len(right) > 1 and len(wrong) > 1:
            var = lambda s: sum((v - sum(s) / len(s)) ** 2 for v in s) / (len(s) - 1)
            sd = math.sqrt(((len(right) - 1) * var(right) + (len(wrong) - 1) * var(wrong)) / (len(a) - 2))
            assert x.act_effect_size == pytest.approx(
                (sum(right) / len(right) - sum(wrong) / len(wrong)) / sd, rel=1e-3, abs=1e-4
            )
        # effect on each option: the letter's token forms (letter mode), the option text's first token (cloze)
        g, dsum, dla = [], [], []
        for q, av in zip(queries, a):
            if mode == "letter":
                opt = [sum(float(eff[j, t]) for t in f) / len(f) for f in q.letter_ids]
            else:
                opt = [float(eff[j, c[0]]) for c in q.continuations]
            dist = (sum(opt) - opt[q.gold]) / (len(opt) - 1)
            g.append(opt[q.gold])
            dsum.append(dist)
            dla.append(av * (opt[q.gold] - dist))
        assert x.gold_effect == pytest.approx(sum(g) / len(g), rel=1e-5, abs=1e-6)
        assert x.distractor_effect == pytest.approx(sum(dsum) / len(dsum), rel=1e-5, abs=1e-6)
        assert x.dla_margin == pytest.approx(sum(dla) / len(dla), rel=1e-4, abs=1e-5)
        assert x.dla_margin == pytest.approx(x.dla_gold - x.dla_distractors, rel=1e-6, abs=1e-7)
        top = sorted(range(eff.shape[1]), key=lambda t: -float(eff[j, t]))[:5]
        assert [v for _, v in x.top_promoted] == pytest.approx([float(eff[j, t]) for t in top], rel=1e-5)
        if kind in ("native", "hooked"):
            assert [s for s, _ in x.top_promoted] == [f"#{t}" for t in top]  # no tokenizer: ids
        else:
            assert [s for s, _ in x.top_promoted] == [model.tokenizer.decode([t]) for t in top]
        assert x.top_suppressed[0][1] == pytest.approx(float(eff[j].min()), rel=1e-5)
        if mode == "letter":
            assert list(x.option_effects) == ["A", "B", "C", "D"]
            for o, letter in enumerate("ABCD"):
                e = sum(float(eff[j, t]) for t in queries[0].letter_ids[o]) / len(queries[0].letter_ids[o])
                assert x.option_effects[letter] == pytest.approx(e, rel=1e-5, abs=1e-7)
                assert x.letter_dla[letter] == pytest.approx(sum(a) / len(a) * e, rel=1e-4, abs=1e-6)
        else:
            assert x.option_effects == {} and x.letter_dla == {}
        for o, letter in enumerate("ABCD"):
            on = [av for q, av in zip(queries, a) if q.gold == o]
            if on:
                assert x.act_by_gold_letter[letter] == pytest.approx(sum(on) / len(on), rel=1e-4, abs=1e-5)
        # the item where it fires most: largest |mean activation| over the item's proxies
        per_item: dict[str, list[float]] = {}
        for q, av in zip(queries, a):
            per_item.setdefault(scored.items[q.item_index].id, []).append(av)
        means = {k: sum(v) / len(v) for k, v in per_item.items()}
        best = max(means, key=lambda k: abs(means[k]))
        assert x.top_items[0][0] == best and x.top_items[0][1] == pytest.approx(means[best], rel=1e-4, abs=1e-5)
        assert len(x.top_items) == 2


def test_stability_equals_bootstrap_of_rescore():
    model = make_model("native", False)
    task, opts = _task_and_options("native")
    full = identify(model, task, k=4, method="grad_x_act", progress=False, z=0.05, keep_attributions=True, **opts)
    stab = selection_stability(full, n_boot=6, seed=3)
    # the same resamples, re-scored with the public rescore on a result whose items are the resample
    rng = random.Random("stability:3")
    n = full.attributions.shape[0]
    hits = {(x.layer, x.neuron): 0 for x in full.good + full.bad}
    for _ in range(6):
        idx = [rng.randrange(n) for _ in range(n)]
        res = rescore(dataclasses.replace(full, attributions=full.attributions[idx], proxy_mask=full.proxy_mask[idx]))
        good = {(a, b) for a, b, _ in select(res.scores, 4, 1)}
        assert good == {(x.layer, x.neuron) for x in res.good}
        bad = {(x.layer, x.neuron) for x in res.bad}
        for x in full.good:
            hits[(x.layer, x.neuron)] += (x.layer, x.neuron) in good
        for x in full.bad:
            hits[(x.layer, x.neuron)] += (x.layer, x.neuron) in bad
    assert stab == {k: v / 6 for k, v in hits.items()}
    assert any(0 < v < 1 for v in stab.values()) or all(v == 1 for v in stab.values())
    ex = explain(full, model, task, n_boot=6, seed=3)
    assert [x.stability for x in ex.neurons] == [stab[(x.layer, x.neuron)] for x in ex.neurons]
    members = [
        float(full.state.n_good[x.layer, x.neuron] if x.role == "good" else full.state.n_bad[x.layer, x.neuron])
        / int(full.state.n_items)
        for x in ex.neurons
    ]
    assert [x.membership for x in ex.neurons] == members and all(m > 0 for m in members)
    assert selection_stability(full.with_k(4).__class__(full.scores, full.good, full.bad, full.state)) is None
    with pytest.raises(ValueError, match="n_boot"):
        selection_stability(full, n_boot=0)


def test_exports_pandas_csv_markdown(tmp_path):
    model = make_model("hf", False)
    task, opts = _task_and_options("hf")
    result = identify(model, task, k=3, method="grad_x_act", progress=False, z=0.05, keep_attributions=True, **opts)
    ex = explain(result, model, task, n_boot=4)
    df = ex.to_pandas()
    assert len(df) == len(result.good) + len(result.bad)
    assert list(df["label"]) == result.labels("both")
    for col in (
        "role",
        "layer",
        "neuron",
        "score",
        "rank",
        "stability",
        "gold_effect",
        "distractor_effect",
        "act_right",
        "act_wrong",
        "act_effect_size",
        "dla_margin",
        "effect_A",
        "effect_D",
        "act_gold_A",
        "top_promoted",
        "top_items",
    ):
        assert col in df.columns, col
    path = ex.to_csv(tmp_path / "ex.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["label"] for r in rows] == list(df["label"])
    assert [float(r["score"]) for r in rows] == pytest.approx(list(df["score"]), rel=1e-5)
    md = ex.to_markdown(2)
    lines = [ln for ln in md.splitlines() if ln.startswith("| L")]
    assert len(lines) == min(2, len(result.good)) + min(2, len(result.bad))
    assert lines[0].startswith(f"| {result.good[0].label} | good |")
    assert ex[result.good[0].label].label == result.good[0].label
    with pytest.raises(KeyError):
        ex["L99N0"]
    s = ex.summary()
    assert s["good"]["n"] == len(result.good) and set(s["good"]["letter_effects"]) == {"A", "B", "C", "D"}


def test_refuses_models_of_another_shape_and_tasks_without_the_items():
    from helpers import NATIVE
    from transformer_lens.model_bridge import TransformerBridge

    model = make_model("native", False)
    task, opts = _task_and_options("native")
    result = identify(model, task, k=3, method="grad_x_act", progress=False, z=0.05, **opts)
    for change, name in (
        (dict(d_mlp=32), "d_mlp"),
        (dict(n_layers=2), "n_layers"),
        (dict(d_vocab=120), "d_vocab"),
        (dict(d_model=48, d_head=12), "d_model"),
    ):
        other = TransformerBridge.boot_native(dict(NATIVE, **change)).eval()
        with pytest.raises(ModelError, match=name):
            explain(result, other, task)
    demo_ids = result.config["task"]["demo_ids"]
    partial = task.subset([i for i, it in enumerate(task.items) if it.id in demo_ids or i < 4])
    with pytest.raises(TaskError, match="identification item .* is not in task"):
        explain(result, model, partial)
    # the demos are not in a task that holds only the scored items: say so, or take demos=
    ids = set(result.config["task"]["item_ids"])
    only_scored = task.subset([i for i, it in enumerate(task.items) if it.id in ids])
    with pytest.raises(TaskError, match="demos="):
        explain(result, model, only_scored)
    demos = [it for it in task.items if it.id in result.config["task"]["demo_ids"]]
    a = explain(result, model, only_scored, demos=demos)
    b = explain(result, model, task)
    assert torch.equal(a.activations, b.activations)
    with pytest.raises(ValueError, match="items"):
        explain(result, model, task, items="some")
    c = explain(result, model, task, items="all")
    assert c.info["n_items"] == len(task) - 1


def test_a_baseline_result_is_explained_without_ace_membership():
    """A baseline's reducer has no per-item candidate counts: membership is nan, the rest is computed."""
    model = make_model("hf", False)
    task, opts = _task_and_options("hf")
    result = identify(model, task, k=3, method="knowledge_neurons", progress=False, **opts)
    ex = explain(result, model, task, n_boot=0)
    assert [r.label for r in ex.neurons] == result.labels("both")
    assert all(math.isnan(r.membership) for r in ex.neurons)
    assert all(math.isfinite(r.gold_effect) for r in ex.neurons)
