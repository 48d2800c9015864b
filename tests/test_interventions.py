"""Interventions at the site or all positions, through the TransformerLens hook registry; result
save/load/export."""

import csv

import pytest
import torch
from helpers import token_task

from tl_neuronllm import Intervention, NeuronResult, identify, make_hooks


@pytest.fixture
def result_and_model(token_model):
    task, fmt = token_task(8)
    return identify(token_model, task, k=6, token_format=fmt, steps=2, progress=False), token_model


def capture(model, hook_names, tokens, extra=()):
    seen = {}

    def mk(name):
        def fn(act, hook):
            seen[name] = act.detach().clone()

        return fn

    with model.hooks(fwd_hooks=list(extra)):
        # the capture hooks run after the intervention hooks added before them
        with model.hooks(fwd_hooks=[(n, mk(n)) for n in hook_names]):
            logits = model(tokens)
    return seen, logits


def test_suppress_zeros_only_the_neurons_at_the_site(result_and_model):
    r, model = result_and_model
    toks = torch.randint(10, 90, (2, 7))
    base, base_logits = capture(model, r.hook_names, toks)
    with r.suppress(model, "good"):
        seen, logits = capture(model, r.hook_names, toks)
    mask = r.mask("good")
    for layer, name in enumerate(r.hook_names):
        idx = mask[layer].nonzero().flatten()
        assert torch.all(seen[name][:, -1, idx] == 0)
        keep = ~mask[layer]
        if layer == 0:  # upstream of nothing: other neurons and earlier positions unchanged
            assert torch.equal(seen[name][:, -1, keep], base[name][:, -1, keep])
        assert torch.allclose(seen[name][:, :-1], base[name][:, :-1])  # earlier positions untouched
    assert not torch.allclose(logits[:, -1], base_logits[:, -1])
    # hooks are gone afterwards
    after, after_logits = capture(model, r.hook_names, toks)
    assert torch.equal(after_logits, base_logits)


def test_enhance_mean_set_and_all_positions(result_and_model):
    r, model = result_and_model
    toks = torch.randint(10, 90, (2, 5))
    base, _ = capture(model, r.hook_names, toks)
    # the lowest layer holding a good neuron: nothing upstream of it is changed
    layer, n = min((g.layer, g.neuron) for g in r.good)
    name = r.hook_names[layer]
    with r.enhance(model, "good", 3.0):
        seen, _ = capture(model, r.hook_names, toks)
    assert torch.allclose(seen[name][:, -1, n], 3 * base[name][:, -1, n])
    with r.mean_ablate(model, "good"):
        seen, _ = capture(model, r.hook_names, toks)
    assert torch.allclose(seen[name][:, -1, n], r.act_mean[layer, n].expand(2))
    with r.set(model, "good", 1.5, positions="all"):
        seen, _ = capture(model, r.hook_names, toks)
    assert torch.all(seen[name][:, :, n] == 1.5)


def test_per_row_site_positions():
    iv = Intervention(((0, 1),), "zero")
    ((name, fn),) = make_hooks(["h0"], iv, site=torch.tensor([1, 3]))
    act = torch.ones(2, 4, 3)
    out = fn(act, None)
    assert out[0, 1, 1] == 0 and out[1, 3, 1] == 0 and out.sum() == 24 - 2
    assert act.sum() == 24  # the input was not modified in place


def test_composes_with_user_hooks_and_is_removed_on_error(result_and_model):
    r, model = result_and_model
    toks = torch.randint(10, 90, (1, 6))
    calls = []
    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", lambda a, hook: calls.append(1))]):
        with pytest.raises(KeyError):
            with r.suppress(model, "both"):
                model(toks)
                raise KeyError("user error inside the block")
        model(toks)  # the user's hook still fires, ours is gone
    assert len(calls) == 2
    plain = model(toks)
    logits = model.run_with_hooks(toks, fwd_hooks=r.hooks("good", mode="zero"))
    assert not torch.allclose(plain, logits)
    assert torch.equal(model(toks), plain)


def test_intervention_validation(result_and_model):
    r, model = result_and_model
    with pytest.raises(ValueError, match="mode"):
        r.hooks("good", mode="double")
    with pytest.raises(ValueError, match="needs values"):
        Intervention(((0, 0),), "set")
    with pytest.raises(ValueError, match="role"):
        r.neurons("ugly")
    with pytest.raises(ValueError, match="out of range"):
        make_hooks(["h0"], Intervention(((3, 0),)))
    small = torch.nn.Module()
    small.cfg = type("C", (), {"n_layers": 1, "d_mlp": 4})()
    with pytest.raises(ValueError, match="this result is for a model with"):
        with r.suppress(small, "good"):
            pass


def test_save_load_export(result_and_model, tmp_path):
    r, _ = result_and_model
    r.save(tmp_path / "res")
    r2 = NeuronResult.load(tmp_path / "res")
    assert torch.equal(r2.scores, r.scores) and r2.good == r.good and r2.bad == r.bad
    assert torch.equal(r2.act_mean, r.act_mean) and r2.config == r.config
    assert torch.equal(r2.state.n_good, r.state.n_good)
    rows = list(csv.DictReader(open(tmp_path / "res" / "neurons.csv")))
    assert len(rows) == len(r.good) + len(r.bad)
    assert rows[0]["label"] == f"L{r.good[0].layer}N{r.good[0].neuron}" and rows[0]["role"] == "good"
    assert float(rows[0]["score"]) == pytest.approx(r.good[0].score, rel=1e-6)
    assert r.labels("good")[0] == r.good[0].label
    assert sum(r.layer_counts("bad")) == len(r.bad)
    assert len(r.with_k(2).good) <= 2
    for key in ("model", "task", "versions", "method", "seed", "hook", "steps"):
        assert key in r.config
    with pytest.raises(FileNotFoundError):
        NeuronResult.load(tmp_path / "nothing")
