"""The user's model leaves every call exactly as it came in: per-module flags, the user's own hooks."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model, token_task

from tl_neuronllm import evaluate, identify


def _flags(model):
    return {name: m.training for name, m in model.named_modules()}


@pytest.fixture(scope="module")
def setup():
    model = make_model("native", False)
    task, fmt = token_task(10)
    ident, held, demo = task.split(6, n_demo=1, seed=0)
    result = identify(model, ident, k=5, demos=demo, token_format=fmt, steps=1, progress=False)
    return model, result, held, demo, fmt, ident


def test_mixed_train_eval_flags_are_restored_per_module(setup):
    model, result, held, demo, fmt, ident = setup
    model.train()
    mods = [m for _, m in model.named_modules()]
    for m in mods[::3]:
        m.training = False  # a mixed state, e.g. a frozen, eval-mode sub-module
    before = _flags(model)
    assert len(set(before.values())) == 2
    identify(model, ident, k=5, demos=demo, token_format=fmt, steps=1, progress=False)
    assert _flags(model) == before
    evaluate(model, result, held, demos=demo, n_random=0, n_boot=10, progress=False)
    assert _flags(model) == before
    with pytest.raises(ValueError):  # also when the call raises
        identify(model, ident, demos=demo, token_format=fmt, steps=1, progress=False, layers=[9])
    assert _flags(model) == before
    model.eval()


def test_user_hooks_added_inside_an_intervention_block_stay(setup):
    model, result = setup[0], setup[1]
    calls = []
    toks = torch.tensor([[0, 7, 12, 9]])
    with result.suppress(model, "good"):
        model.add_hook("blocks.0.mlp.hook_post", lambda act, hook: calls.append(1))
        handle = model.blocks[0].register_forward_hook(lambda *a: calls.append(2))
    model(toks)
    assert calls == [1, 2]  # both of the user's hooks survived the block's exit
    handle.remove()
    model.reset_hooks()
    calls.clear()
    model(toks)
    assert calls == []


def test_our_hooks_are_removed_on_error(setup):
    model, result = setup[0], setup[1]
    toks = torch.tensor([[0, 7, 12, 9]])
    clean = model(toks)
    with pytest.raises(KeyError):
        with result.suppress(model, "good"):
            raise KeyError("user error")
    assert torch.equal(model(toks), clean)


def test_evaluate_inside_inference_mode(setup):
    model, result, held, demo = setup[:4]
    with torch.inference_mode():
        ev = evaluate(model, result, held, demos=demo, n_random=0, n_boot=10, progress=False)
    assert ev.n_items == len(held)  # works: evaluate takes no gradients
