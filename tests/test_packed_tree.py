"""Packed rows of one group share their common first tokens (a prefix tree), and that stays exact.

The cloze options of one query under one IG scaling (or one evaluation condition) all start with the
site token and often with more common tokens; packing them as a tree runs each shared token once. The
reference is always the plain right-padded full-sequence forward without any cache.
"""

from __future__ import annotations

import pytest
import torch
from helpers import has_bridge, make_model

from tl_neuronllm.attribution.kernels import ig_fast, ig_naive
from tl_neuronllm.evaluation.conditions import Condition
from tl_neuronllm.evaluation.engines import probs_full, probs_packed, probs_prefix
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt
from tl_neuronllm.model.shortcuts import (
    PackedLayout,
    ShortcutFallbackWarning,
    packed_forward,
    plain_rows,
    scale_rows_hook,
)

needs_bridge = pytest.mark.skipif(not has_bridge(), reason="TransformerBridge needs TransformerLens 4.x")

PREFIX = [3, 12, 13, 14, 15, 16]
# options sharing first tokens (the site token is PREFIX's last; an option's last token is not run)
CONTS = ((20, 20, 21), (20, 25, 22), (20, 23), (24,))


def test_layout_shares_first_tokens_within_a_group_only():
    rows = [[3], [3, 6], [3, 6, 7], [4, 6]]
    lay = PackedLayout.of(rows * 2, group_size=4)
    assert lay.tokens == [3, 6, 7, 4, 6] * 2
    assert lay.depth == [0, 1, 2, 0, 1] * 2
    assert lay.parent == [-1, 0, 1, -1, 3, -1, 5, 6, -1, 8]
    assert lay.row_nodes == [[0], [0, 1], [0, 1, 2], [3, 4], [5], [5, 6], [5, 6, 7], [8, 9]]
    assert lay.group_sizes == [5, 5]
    seen = lay.visible("cpu")
    assert seen[2].tolist() == [True, True, True] + [False] * 7  # its own row up to itself
    assert seen[4].tolist() == [False] * 3 + [True, True] + [False] * 5  # not the sibling branch
    assert not seen[:5, 5:].any() and not seen[5:, :5].any()  # groups never see each other
    flat = PackedLayout.of(rows, 1)  # group_size 1 shares nothing: row after row
    assert flat.tokens == [3, 3, 6, 3, 6, 7, 4, 6] and flat.group_sizes == [1, 2, 3, 2]
    with pytest.raises(ValueError, match="group_size must divide the 4 rows"):
        PackedLayout.of(rows, 3)
    # tags: a question's own tokens (9 9) are shared by all its rows; from the site on, only within a tag
    own = [[9, 9, 3], [9, 9, 3, 6], [9, 9, 3], [9, 9, 3, 6], [8, 3]]
    tagged = PackedLayout.of(own, [4, 1], tags=[(2, 0), (2, 0), (2, 1), (2, 1), (1, 0)])
    assert tagged.tokens == [9, 9, 3, 6, 3, 6, 8, 3] and tagged.group_sizes == [6, 2]
    assert tagged.row_nodes[:4] == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 4], [0, 1, 4, 5]]
    with pytest.raises(ValueError, match="must be positive and add up to the 5 rows"):
        PackedLayout.of(own, [4, 2])
    with pytest.raises(ValueError, match="one \\(depth, tag\\) per row"):
        PackedLayout.of(own, 1, tags=[(0, 0)])


@needs_bridge
@pytest.mark.parametrize("gated", [False, True], ids=["gpt2", "llama"])
def test_shared_rows_equal_the_plain_forward_with_hooks_and_skipping(gated):
    model = make_model("hf", gated)
    ad = ModelAdapter(model)
    state = ad.prefix(PREFIX[:-1])
    group = [[PREFIX[-1], *c[:-1]] for c in CONTS]
    rows = group * 3
    last = ad.n_layers - 1

    def hooks(sites):  # copy 1 scaled at its sites in block 0, copy 2 in the last block (it joins there)
        return [(ad.hook_names[0], scale_rows_hook(sites[4:8])), (ad.hook_names[last], scale_rows_hook(sites[8:12]))]

    with torch.no_grad():
        ref = plain_rows(ad, PREFIX[:-1], rows, fwd_hooks=hooks)
        shared = packed_forward(ad, state, rows, fwd_hooks=hooks, group_size=4)
        skipped = packed_forward(ad, state, rows, fwd_hooks=hooks, group_start=[0, 0, last], skip=True)
    scale = float(ref.abs().max())
    assert torch.allclose(shared, ref, atol=1e-5 * (1 + scale)), float((shared - ref).abs().max())
    assert torch.allclose(skipped, ref, atol=1e-5 * (1 + scale)), float((skipped - ref).abs().max())
    # the hooks changed something, so the equality above is not vacuous
    assert float((ref[4:8] - ref[:4]).abs().max()) > 1e-3 and float((ref[8:12] - ref[:4]).abs().max()) > 1e-4
    # rows s 20 20 / s 20 25 / s 20 / s (9 tokens) become a tree of 4: s, 20, then 20 | 25
    assert PackedLayout.of(rows, 4).group_sizes == [4, 4, 4]


@needs_bridge
@pytest.mark.parametrize("kind", ["native", "hf"])
def test_only_the_positions_read_are_unembedded_and_they_equal_the_plain_forward(kind):
    from tl_neuronllm.model.backends.capabilities import unembed_linear
    from tl_neuronllm.model.shortcuts import packed_logits

    model = make_model(kind, True)
    ad = ModelAdapter(model)
    state = ad.prefix(PREFIX[:-1])
    rows = [[PREFIX[-1], *c[:-1]] for c in CONTS] * 2
    sizes: list[int] = []
    lin = unembed_linear(model)
    assert lin is not None
    handle = lin.register_forward_hook(lambda mod, inp, out: sizes.append(out.shape[-2]))
    try:
        with torch.no_grad():
            ref = plain_rows(ad, PREFIX[:-1], rows)
            logits, where = packed_logits(ad, state, rows, group_size=4, logits_from=[1] * 8)
            all_logits, _ = packed_logits(ad, state, rows, group_size=4)
    finally:
        handle.remove()
    n_packed = 2 * len(PackedLayout.of(rows[:4], 4).tokens)  # 2 groups of 4 tree tokens (s, 20, 20 | 25)
    off = 0 if state.cache is not None else len(PREFIX) - 1  # the prefix runs in the sequence without a cache
    # read from position 1 on: not the shared site token (row 3, "s" alone, reads nothing), nor the prefix
    assert sizes[1:] == [n_packed - 2, n_packed + off]  # (sizes[0]: the plain reference)
    assert logits.shape[0] == n_packed - 2 and all_logits.shape[0] == n_packed + off
    for r, row in enumerate(rows):
        assert int(where[r, 0]) == -1
        got = logits[where[r, 1 : len(row)]]
        assert (where[r, 1 : len(row)] >= 0).all()
        assert torch.allclose(got, ref[r, 1 : len(row)], atol=1e-5 * (1 + float(ref.abs().max())))
    with pytest.raises(ValueError, match="logits_from needs one position per row: 2 for 8 rows"):
        packed_logits(ad, state, rows, group_size=4, logits_from=[0, 0])


@pytest.mark.parametrize("kind", ["native", "hf"])
def test_ig_and_evaluation_with_shared_option_tokens_equal_the_references(kind):
    if not has_bridge():
        pytest.skip("TransformerBridge needs TransformerLens 4.x")
    ad = ModelAdapter(make_model(kind, True))
    q = ProxyPrompt(prompt=tuple(PREFIX), gold=1, n_options=len(CONTS), continuations=CONTS)
    fast, probs, _ = ig_fast(ad, q, steps=3)
    naive = ig_naive(ad, q, steps=3)
    scale = float(naive.abs().max())
    assert scale > 0
    assert torch.allclose(fast, naive, rtol=1e-4, atol=1e-5 * scale), float((fast - naive).abs().max())
    assert ad.fast_paths["packed_rows"] is True and ad.fast_paths["exact_ig"] is True
    conds = [
        Condition("baseline"),
        Condition("suppress_good", {"good": [(0, 1), (1, 2), (2, 3)]}),
        Condition("enhance_good_suppress_bad", {"good": [(1, 5)], "bad": [(0, 4), (2, 7)]}, factor=3.0),
    ]
    pre = probs_prefix(ad, q, conds, memory_budget_mb=64)
    full = torch.stack([probs_full(ad, [q], c, batch_size=4)[0] for c in conds])
    assert torch.allclose(pre, full, atol=1e-5), float((pre - full).abs().max())
    assert torch.allclose(pre[0], probs, atol=1e-5)
    assert float((pre[1] - pre[0]).abs().max()) > 1e-4  # the intervention shows


@needs_bridge
def test_a_tree_mask_that_lets_siblings_see_each_other_is_caught(monkeypatch):
    """A packing that got the tree wrong (every packed token sees all before it) must be switched off."""

    def causal(self, device):
        n = len(self.tokens)
        return torch.ones(n, n, dtype=torch.bool, device=device).tril()

    monkeypatch.setattr(PackedLayout, "visible", causal)
    ad = ModelAdapter(make_model("hf", True))
    q = ProxyPrompt(prompt=tuple(PREFIX), gold=0, n_options=len(CONTS), continuations=CONTS)
    with pytest.warns(ShortcutFallbackWarning, match="packed rows"):
        fast, _, _ = ig_fast(ad, q, steps=2)
    assert ad.fast_paths["packed_rows"] is False
    naive = ig_naive(ad, q, steps=2)
    assert torch.allclose(fast, naive, rtol=1e-4, atol=1e-5 * float(naive.abs().max()))


SHARED = [3, 12, 13, 14, 15, 16, 17, 18, 19]  # the instruction and demonstrations every prompt starts with


def _questions() -> list[ProxyPrompt]:
    """Questions continuing SHARED with own tokens of different lengths, 2-4 options, cloze and letter."""
    cloze = [
        ProxyPrompt(prompt=(*SHARED, 30, 31, 32), gold=1, n_options=4, continuations=CONTS),
        ProxyPrompt(prompt=(*SHARED, 33, 34), gold=0, n_options=2, continuations=((20, 26), (27,))),
        ProxyPrompt(
            prompt=(*SHARED, 35, 36, 37, 38, 32), gold=2, n_options=3, continuations=((20, 21), (20, 22), (28,))
        ),
    ]
    letter = [
        ProxyPrompt(prompt=(*SHARED, 30, 31, 32), gold=1, n_options=4, letter_ids=((4,), (5,), (6,), (7,))),
        ProxyPrompt(prompt=(*SHARED, 33, 34, 39), gold=0, n_options=2, letter_ids=((4,), (5,))),
    ]
    return cloze + letter


CONDITIONS = [
    Condition("baseline"),
    Condition("suppress_good", {"good": [(0, 1), (1, 2), (2, 3)]}),
    Condition("suppress_bad", {"bad": [(1, 9), (2, 11)]}),
    Condition("enhance_good_suppress_bad", {"good": [(1, 5)], "bad": [(0, 4), (2, 7)]}, factor=3.0),
]


@needs_bridge
@pytest.mark.parametrize("gated", [False, True], ids=["gpt2", "llama"])
@pytest.mark.parametrize("mode", ["cloze", "letter"])
def test_several_questions_in_one_forward_equal_each_question_alone(gated, mode):
    ad = ModelAdapter(make_model("hf", gated))
    qs = [q for q in _questions() if q.mode == mode]
    assert ad.share_prefix([q.prompt for q in qs]) == len(SHARED)
    alone = [probs_prefix(ad, q, CONDITIONS, memory_budget_mb=64) for q in qs]  # also runs the path checks
    assert ad.shared_state is not None and ad.fast_paths["packed_rows"] is True
    together = probs_packed(ad, qs, CONDITIONS)
    for a, b in zip(alone, together):
        assert a.shape == b.shape == (len(CONDITIONS), a.shape[1])
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    assert any(float((a[1:] - a[0]).abs().max()) > 1e-4 for a in alone)  # the interventions show


@needs_bridge
def test_evaluation_packs_questions_after_checking_it(monkeypatch):
    from tl_neuronllm.evaluation import engines as eval_engines

    qs = [q for q in _questions() if q.mode == "cloze"]
    ad = ModelAdapter(make_model("hf", True))
    with torch.no_grad():
        probs = eval_engines.run_conditions(
            ad, qs, CONDITIONS, engine="prefix", batch_size=4, memory_budget_mb=64, progress=False
        )
    assert ad.fast_paths["packed_queries"] is True
    full = eval_engines.run_conditions(
        ad, qs, CONDITIONS, engine="full", batch_size=4, memory_budget_mb=64, progress=False
    )
    for c in range(len(CONDITIONS)):
        for a, b in zip(probs[c], full[c]):
            assert torch.allclose(a, b, atol=1e-5)

    # a packing of questions that came out wrong is switched off, with the one warning, and the run stays exact
    real = eval_engines.probs_packed
    monkeypatch.setattr(eval_engines, "probs_packed", lambda *a, **k: [p.roll(1, -1) for p in real(*a, **k)])
    ad = ModelAdapter(make_model("hf", True))
    with torch.no_grad(), pytest.warns(ShortcutFallbackWarning, match="several questions"):
        again = eval_engines.run_conditions(
            ad, qs, CONDITIONS, engine="prefix", batch_size=4, memory_budget_mb=64, progress=False
        )
    assert ad.fast_paths["packed_queries"] is False
    for c in range(len(CONDITIONS)):
        for a, b in zip(again[c], full[c]):
            assert torch.allclose(a, b, atol=1e-5)


@needs_bridge
def test_a_question_over_the_token_cap_runs_its_conditions_in_parts_and_stays_exact(monkeypatch):
    """A question whose conditions' option trees exceed MAX_PACKED_TOKENS runs them in consecutive parts of at
    most the cap (attention would grow with the square of all of them), and every part equals the plain path."""
    from tl_neuronllm.evaluation import engines as eval_engines

    qs = [q for q in _questions() if q.mode == "cloze"]
    ad = ModelAdapter(make_model("hf", True))
    ad.share_prefix([q.prompt for q in qs])
    probs_prefix(ad, qs[0], CONDITIONS, memory_budget_mb=64)  # the path checks, as run_conditions starts
    own, tree = zip(*(eval_engines._packed_tokens(ad, q) for q in qs))
    cap = min(o + len(CONDITIONS) * t for o, t in zip(own, tree)) - 1  # no question fits with all conditions
    assert all(o + t <= cap for o, t in zip(own, tree)), (own, tree)  # but each fits with one
    monkeypatch.setattr(eval_engines, "MAX_PACKED_TOKENS", cap)
    sizes: list[int] = []
    real = eval_engines.packed_logits

    def spy(adapter, shared, rows, **kw):
        sizes.append(len(PackedLayout.of(rows, kw["group_size"]).tokens))
        return real(adapter, shared, rows, **kw)

    monkeypatch.setattr(eval_engines, "packed_logits", spy)
    with torch.no_grad():
        probs = eval_engines.run_conditions(
            ad, qs, CONDITIONS, engine="prefix", batch_size=4, memory_budget_mb=64, progress=False
        )
    assert ad.fast_paths["packed_queries"] is True
    # every question (the first one again: the one-time check) in at least two forwards, none over the cap
    assert len(sizes) >= 2 * len(qs) and max(sizes) <= cap, (sizes, cap)
    full = eval_engines.run_conditions(
        ad, qs, CONDITIONS, engine="full", batch_size=4, memory_budget_mb=64, progress=False
    )
    for c in range(len(CONDITIONS)):
        for a, b in zip(probs[c], full[c]):
            assert torch.allclose(a, b, atol=1e-5)
