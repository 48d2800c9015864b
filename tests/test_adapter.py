"""Model adapter: hook resolution and width checks, letter tokens, padding invariance, and the
guarantee that the user's model leaves every run exactly as it came in."""

import pytest
import torch
from helpers import TEXT_KINDS, make_model, text_task, token_task

from tl_neuronllm import ModelError, identify
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import Query, predict
from tl_neuronllm.model.state import preserved_model_state


def test_hook_names_and_widths(any_model):
    _, model = any_model
    ad = ModelAdapter(model)
    assert ad.hook_names == [f"blocks.{i}.mlp.hook_post" for i in range(model.cfg.n_layers)]
    ad.check_widths()


def test_missing_hook_names_the_layer(token_model):
    with pytest.raises(ModelError, match="hook must be one of"):
        ModelAdapter(token_model, hook="hook_resid")
    # a model whose last layer lacks the hook
    hd = dict(token_model.hook_dict)
    last = token_model.cfg.n_layers - 1
    del hd[f"blocks.{last}.mlp.hook_post"]

    class Shim:
        cfg = token_model.cfg
        hook_dict = hd
        forward = token_model.forward
        hooks = token_model.hooks

        def __call__(self, *a, **k):
            return token_model(*a, **k)

    with pytest.raises(ModelError, match=f"layer {last} has no hook"):
        ModelAdapter(Shim())


def test_wrong_width_is_refused(token_model):
    ad = ModelAdapter(token_model)
    ad.d_mlp = token_model.cfg.d_mlp + 1  # as if cfg.d_mlp disagreed with the hook's tensor
    with pytest.raises(ModelError, match=r"layer 0\) has width 64, expected d_mlp = 65"):
        ad.check_widths()


def test_not_a_model():
    with pytest.raises(ModelError, match="not a TransformerLens model"):
        ModelAdapter(torch.nn.Linear(2, 2))


def test_not_a_model_names_what_it_lacks(token_model):
    class HalfModel:
        cfg = token_model.cfg
        hook_dict = token_model.hook_dict

    with pytest.raises(ModelError, match=r"HalfModel is not a TransformerLens model: it lacks hooks, forward \("):
        ModelAdapter(HalfModel())


@pytest.mark.skipif(not TEXT_KINDS, reason="no text model class")
def test_letter_tokens_and_multi_token_letter_refused():
    model = make_model(TEXT_KINDS[0], False)
    ad = ModelAdapter(model)
    ids = ad.letter_token_ids(4)
    assert [model.tokenizer.convert_ids_to_tokens(f[0]) for f in ids] == ["A", "B", "C", "D"]
    with pytest.raises(ModelError, match="option letter 'I' is not a single token"):
        ad.letter_token_ids(9)  # the word tokenizer knows A-H only


def test_token_model_without_tokenizer_needs_token_format(token_model):
    task = text_task(4)
    with pytest.raises(ModelError, match="no tokenizer"):
        identify(token_model, task, k=5, steps=2, progress=False)


def test_padding_never_changes_a_score(token_model):
    ad = ModelAdapter(token_model)
    letters = ((1,), (2,), (3,))
    short = Query(prompt=(0, 11, 12, 9), gold=0, n_options=3, letter_ids=letters)
    long = Query(prompt=(0, 13, 14, 15, 16, 17, 18, 19, 9), gold=1, n_options=3, letter_ids=letters)
    cloze = Query(prompt=(0, 21, 9), gold=1, n_options=2, continuations=((40,), (41, 42, 43)))
    alone = [predict(ad, [q])[0] for q in (short, long, cloze)]
    together = predict(ad, [short, long, cloze], batch_size=3)
    for a, b in zip(alone, together):
        assert torch.allclose(a, b, atol=1e-6)


def _snapshot(model):
    return (
        model.training,
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [id(p.grad) for p in model.parameters()],
        sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


def _assert_same(model, snap):
    now = _snapshot(model)
    assert now[0] == snap[0] and now[1] == snap[1] and now[3] == snap[3] and now[4] == snap[4]
    for a, b in zip(now[2], snap[2]):
        assert (a is None and b is None) or torch.equal(a, b)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["attribution", "scoring", "none"])
def test_identify_leaves_model_untouched(token_model, monkeypatch, where):
    model = token_model
    model.train()  # user left it in training mode
    params = list(model.parameters())
    params[0].requires_grad_(False)  # a frozen embedding
    params[1].grad = torch.ones_like(params[1])  # and a stale gradient
    fired = []
    user_hook = "blocks.0.hook_resid_pre" if "blocks.0.hook_resid_pre" in model.hook_dict else "blocks.0.hook_in"
    model.hook_dict[user_hook].add_hook(lambda act, hook: fired.append(1))  # the user's own permanent hook
    snap = _snapshot(model)
    task, fmt = token_task(6)

    if where == "attribution":
        import tl_neuronllm.attribution.kernels as at

        orig = at.ig_fast
        calls = []

        def bad(*a, **k):
            calls.append(1)
            if len(calls) == 3:
                raise Boom("interrupted")
            return orig(*a, **k)

        import tl_neuronllm.attribution.methods as mt

        monkeypatch.setattr(mt, "ig_fast", bad)
    elif where == "scoring":
        import tl_neuronllm.scoring.ace as ace

        monkeypatch.setattr(ace.ACEState, "update", lambda *a, **k: (_ for _ in ()).throw(Boom("interrupted")))
    if where == "none":
        identify(model, task, k=5, token_format=fmt, steps=2, progress=False)
    else:
        with pytest.raises(Boom):
            identify(model, task, k=5, token_format=fmt, steps=2, progress=False)
    _assert_same(model, snap)
    n = len(fired)
    model(torch.zeros((1, 3), dtype=torch.long))
    assert len(fired) == n + 1  # the user's hook is still attached
    model.hook_dict[user_hook].remove_hooks(including_permanent=True) if hasattr(
        model.hook_dict[user_hook], "remove_hooks"
    ) else None


def test_preserved_model_state_restores_on_error(token_model):
    token_model.train()
    snap = _snapshot(token_model)
    with pytest.raises(Boom):
        with preserved_model_state(token_model):
            assert not token_model.training
            token_model.hook_dict["blocks.0.mlp.hook_post"].add_hook(lambda a, hook: a)
            next(token_model.parameters()).requires_grad_(False)
            raise Boom()
    _assert_same(token_model, snap)
