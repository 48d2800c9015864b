"""The fast prefix-cache IG equals the naive full-sequence reference, on every model class and
MLP kind, in letter and cloze mode; grad x act equals one-step IG; no parameter gradient is written."""

import pytest
import torch
from helpers import has_bridge, make_model, text_task, token_task

from tl_neuronllm.attribution.kernels import grad_x_act, ig_fast, ig_naive, ig_points
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import Query, full_rows, make_queries
from tl_neuronllm.prompts.proxies import AugmentConfig, PromptConfig, Renderer


def queries_for(model, n_items=2):
    ad = ModelAdapter(model)
    if getattr(model, "tokenizer", None) is None:
        task, fmt = token_task(n_items + 1)
        prompt = PromptConfig(token_format=fmt)
        letters = fmt.letters
    else:
        task, prompt, letters = text_task(n_items + 1), PromptConfig(), None
    r = Renderer(task.subset(range(1, n_items + 1)), prompt, AugmentConfig(n_proxies=2), [task.items[0]])
    proxies = [p for i, it in enumerate(r.task.items) for p in r.render(i, it)]
    letter_q = make_queries(ad, proxies, "letter", letters=letters)
    cloze_q = make_queries(ad, proxies, "cloze")
    return ad, letter_q, cloze_q


@pytest.mark.parametrize("target", ["ce", "prob", "vocab_prob"])
def test_fast_ig_equals_naive(any_model, target):
    kind, model = any_model
    ad, letter_q, cloze_q = queries_for(model, 1)
    for q in (letter_q[0], cloze_q[1]):
        fast, probs, acts = ig_fast(ad, q, steps=5, target=target)
        naive = ig_naive(ad, q, steps=5, target=target)
        scale = naive.abs().max()
        assert scale > 0
        assert torch.allclose(fast, naive, rtol=1e-4, atol=1e-5 * float(scale)), (
            kind,
            q.mode,
            (fast - naive).abs().max(),
        )
        assert torch.isclose(probs.sum(), torch.tensor(1.0), atol=1e-5)
    expected = {"native": "rerun", "hf": "hf", "hooked": "tl", "hooked-text": "tl"}[kind]
    assert ad.kv_backend == expected


def test_fast_ig_chunking_and_layers_do_not_change_scores(token_model):
    ad, letter_q, _ = queries_for(token_model, 1)
    q = letter_q[0]
    full, _, _ = ig_fast(ad, q, steps=4)
    chunked, _, _ = ig_fast(ad, q, steps=4, chunk_rows=3)
    assert torch.allclose(full, chunked, atol=1e-6)
    sub, _, _ = ig_fast(ad, q, steps=4, layers=[1])
    assert torch.allclose(sub[1], full[1], atol=1e-6)
    assert sub[0].abs().sum() == 0 and sub[2].abs().sum() == 0


@pytest.mark.parametrize("mode", ["letter", "cloze"])
def test_later_forwards_run_no_clean_rows_and_join_from_the_recorded_states(any_model, mode, monkeypatch):
    kind, model = any_model
    ad, letter_q, cloze_q = queries_for(model, 1)
    q = (letter_q if mode == "letter" else cloze_q)[0]
    ig_fast(ad, q, steps=1)  # the one-time checks, before the spy
    V = len(q.suffixes())
    seen: list[tuple[int, bool, list[int]]] = []  # groups per forward, states recorded before it, group starts
    real = ModelAdapter.run_rows

    def spy(self, state, rows, **kw):
        seen.append((len(rows) // V, kw["join"].ready, list(kw["group_start"])))
        return real(self, state, rows, **kw)

    monkeypatch.setattr(ModelAdapter, "run_rows", spy)
    fast, _, _ = ig_fast(ad, q, steps=3, chunk_rows=2 * V)  # one scaled group per forward
    naive = ig_naive(ad, q, steps=3)
    scale = float(naive.abs().max())
    assert scale > 0
    assert torch.allclose(fast, naive, rtol=1e-4, atol=1e-5 * scale), (kind, (fast - naive).abs().max())
    n = 3 * ad.n_layers
    if ad.fast_paths["skip_layers"]:  # the first forward records the clean run; the others leave it out
        assert seen[0][:2] == (2, False) and seen[0][2][0] == 0
        assert [s[:2] for s in seen[1:]] == [(1, True)] * (n - 1)
        assert [s[2][0] for s in seen[1:]] == sorted(s[2][0] for s in seen[1:])  # in layer order
        assert seen[-1][2] == [ad.n_layers - 1]
    else:  # nothing recorded: every forward keeps the clean run
        assert [s[:2] for s in seen] == [(2, False)] * n


def test_a_wrong_recorded_state_is_caught_by_the_one_time_check(monkeypatch):
    from tl_neuronllm.model import shortcuts

    model = make_model("native", gated=True)
    ad, _, cloze_q = queries_for(model, 1)
    real = shortcuts.skip_hooks

    def corrupt(adapter, group_start, lay, off, join=None):
        handles = real(adapter, group_start, lay, off, join)
        if join is not None and join.ready:
            for k in join.states:
                join.states[k] = join.states[k] * 1.5
        return handles

    monkeypatch.setattr(shortcuts, "skip_hooks", corrupt)
    with pytest.warns(Warning, match="layer .* IG differs from the naive loop"):
        fast, _, _ = ig_fast(ad, cloze_q[0], steps=2)
    assert ad.fast_paths["skip_layers"] is False
    naive = ig_naive(ad, cloze_q[0], steps=2)
    assert torch.allclose(fast, naive, rtol=1e-4, atol=1e-5 * float(naive.abs().max()))


def test_grad_x_act_is_one_step_ig_and_batching_is_exact(token_model):
    ad, letter_q, cloze_q = queries_for(token_model, 2)
    for qs in (letter_q, cloze_q):
        gxa, probs, acts = grad_x_act(ad, qs, batch_size=3)  # mixed lengths in one padded batch
        for i, q in enumerate(qs):
            one_step = ig_naive(ad, q, steps=1)
            assert torch.allclose(gxa[i], one_step, rtol=1e-4, atol=1e-6)
            alone, p_alone, _ = grad_x_act(ad, [q])
            assert torch.allclose(gxa[i], alone[0], rtol=1e-4, atol=1e-6)
            assert torch.allclose(probs[i], p_alone[0], atol=1e-6)


def test_gauss_legendre_converges_to_riemann_limit(token_model):
    ad, letter_q, _ = queries_for(token_model, 1)
    q = letter_q[0]
    ref, _, _ = ig_fast(ad, q, steps=256)
    gauss, _, _ = ig_fast(ad, q, steps=8, rule="gauss")
    coarse, _, _ = ig_fast(ad, q, steps=8)
    err_g = float((gauss - ref).abs().max())
    err_r = float((coarse - ref).abs().max())
    assert err_g < err_r, (err_g, err_r)


def test_ig_points():
    a, w = ig_points(4)
    assert a == [0.25, 0.5, 0.75, 1.0] and sum(w) == pytest.approx(1.0)
    a, w = ig_points(5, "gauss")
    assert all(0 < x < 1 for x in a) and sum(w) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="steps"):
        ig_points(0)
    with pytest.raises(ValueError, match="rule"):
        ig_points(3, "simpson")


def test_no_parameter_grad_written(token_model):
    ad, letter_q, _ = queries_for(token_model, 1)
    ig_fast(ad, letter_q[0], steps=2)
    grad_x_act(ad, letter_q)
    assert all(p.grad is None for p in token_model.parameters())


def test_completeness_on_linear_path(token_model):
    """IG completeness holds per layer for the scaled path: sum_i IG_l(i) ~ F(a) - F(0) with many steps."""
    ad, letter_q, _ = queries_for(token_model, 1)
    q = letter_q[0]
    ig, _, _ = ig_fast(ad, q, steps=24, rule="gauss")
    from tl_neuronllm.model.answers import full_rows, full_scores, target_fn

    rows, site = full_rows(q)
    toks, _ = ad.pad_batch(rows)
    layer = 1

    def zero(act, hook):
        act = act.clone()
        act[:, site] = 0
        return act

    with torch.no_grad():
        f1 = target_fn(full_scores(ad.forward(toks), q, site), q.gold)
        f0 = target_fn(full_scores(ad.forward(toks, fwd_hooks=[(ad.hook_names[layer], zero)]), q, site), q.gold)
    assert float(ig[layer].sum()) == pytest.approx(float(f1 - f0), rel=1e-3, abs=1e-6)


def test_query_suffixes():
    q = Query(prompt=(1, 2, 3), gold=0, n_options=2, continuations=((5,), (6, 7)))
    # an option's last token predicts nothing the score needs: it is never run
    assert q.suffixes() == [[3], [3, 6]] and q.site == 2 and q.mode == "cloze"


@pytest.mark.skipif(not has_bridge(), reason="TransformerBridge needs TransformerLens 4.x")
def test_grad_x_act_batches_fit_the_memory_budget_and_equal_one_batch(monkeypatch):
    """Long prompts once sent 16 full rows with every layer's attention kept for the backward pass through one
    forward (IMDB on SmolLM2 was killed at 15 GB): batches are now sized by the memory model, exactly."""
    import tl_neuronllm.attribution.kernels as A

    model = make_model("hf", True)
    ad, letter_q, cloze_q = queries_for(model, 3)
    for qs in (letter_q, cloze_q):
        whole, p_whole, a_whole = grad_x_act(ad, qs, batch_size=64, memory_budget_mb=1e6)
        one_row = A.row_bytes(
            model.cfg,
            n_layers=ad.n_layers,
            d_mlp=ad.d_mlp,
            d_vocab=ad.d_vocab,
            dtype=torch.float32,
            cached=False,
            prefix_len=0,
            suffix_len=max(len(r) for q in qs for r in full_rows(q)[0]),
        )
        budget = 2.5 * one_row / 2**20  # two full rows fit, not three
        batches = A._gxa_batches(ad, qs, 64, budget)
        n_rows = [sum(len(full_rows(q)[0]) for q in qs[b0:b1]) for b0, b1 in batches]
        assert len(batches) > 1 and batches[0][0] == 0 and batches[-1][1] == len(qs)
        assert all(n <= 2 or b1 - b0 == 1 for n, (b0, b1) in zip(n_rows, batches))  # one query may exceed it
        calls = []
        real = type(ad).forward
        monkeypatch.setattr(type(ad), "forward", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
        split, p_split, a_split = grad_x_act(ad, qs, batch_size=64, memory_budget_mb=budget)
        monkeypatch.undo()
        assert len(calls) == len(batches)
        assert torch.allclose(split, whole, rtol=1e-5, atol=1e-7 * float(whole.abs().max()))
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(p_split, p_whole))
        assert torch.allclose(a_split, a_whole, atol=1e-6)
