"""Ground truth at run time: every shortcut is checked against the plain forward before it is used.

* On the models pip installs today the fast path is **engaged** (no fallback) and equals naive IG.
* A shortcut that silently gives wrong numbers (an empty cache, a stale cache, a wrong packed path,
  a wrong layer-skipping path) is caught, switched off with one warning naming the versions, and
  the run's numbers still equal the naive reference.
* A user's own exception inside a check is re-raised, never taken as "unsupported".
"""

from __future__ import annotations

import pytest
import torch
from helpers import has_bridge, make_model, text_task
from test_attribution import queries_for

from tl_neuronllm import identify
from tl_neuronllm.attribution.kernels import ig_fast, ig_naive
from tl_neuronllm.model.backends.hf_cache import HFCacheBackend
from tl_neuronllm.model.shortcuts import ShortcutFallbackWarning

needs_bridge = pytest.mark.skipif(not has_bridge(), reason="TransformerBridge needs TransformerLens 4.x")


def assert_equal_ig(ad, q, steps=3):
    fast, _, _ = ig_fast(ad, q, steps=steps)
    naive = ig_naive(ad, q, steps=steps)
    scale = float(naive.abs().max())
    assert scale > 0
    assert torch.allclose(fast, naive, rtol=1e-4, atol=1e-5 * scale), float((fast - naive).abs().max())


@needs_bridge
@pytest.mark.parametrize("gated", [False, True], ids=["gpt2", "llama"])
def test_fast_path_is_engaged_on_hf_models(gated, recwarn):
    model = make_model("hf", gated)
    ad, letter_q, cloze_q = queries_for(model, 2)
    assert ad.share_prefix([q.prompt for q in letter_q + cloze_q]) >= 8  # instruction + demonstration
    for q in (letter_q[0], cloze_q[1], letter_q[3]):
        assert_equal_ig(ad, q)
    assert ad.kv_backend == "hf"
    assert ad.fast_paths == {
        "prefix_cache": True,
        "packed_rows": True,
        "skip_layers": True,
        "letter_columns": True,
        "shared_prefix": True,
        "exact_ig": True,
        "packed_queries": None,  # checked by the evaluation (tests/test_packed_tree.py)
    }
    assert ad.fast.fallbacks == []
    assert not [w for w in recwarn if issubclass(w.category, ShortcutFallbackWarning)]


@needs_bridge
def test_empty_cache_falls_back_to_rerun_with_versions_named(monkeypatch):
    """The transformers 5.24 failure on any version: the attention modules never see the cache, so
    the Bridge hands back an empty one."""
    from contextlib import contextmanager

    @contextmanager
    def blind_attention(self):
        def drop(module, args, kwargs):
            return args, {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "layer_past")}

        handles = [b.attn.register_forward_pre_hook(drop, with_kwargs=True) for b in self.model.blocks]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    monkeypatch.setattr(HFCacheBackend, "calling", blind_attention)
    model = make_model("hf", True)
    ad, letter_q, cloze_q = queries_for(model, 1)
    with pytest.warns(ShortcutFallbackWarning, match=r"key/value cache.*torch .*transformers .*transformer-lens"):
        assert_equal_ig(ad, cloze_q[1])
    assert ad.kv_backend == "rerun" and ad.fast_paths["prefix_cache"] is False
    assert "0 of the prefix" in ad.fast.fallbacks[0]


@needs_bridge
def test_wrong_but_full_cache_is_caught(monkeypatch):
    """A cache of the right length but wrong contents (what no length check can see)."""
    original = HFCacheBackend._prefix

    def stale(self, tokens, t):
        state = original(self, tokens, t.flip(1))  # same length, other tokens
        state.tokens = tokens
        return state

    monkeypatch.setattr(HFCacheBackend, "_prefix", stale)
    model = make_model("hf", False)
    ad, letter_q, _ = queries_for(model, 1)
    with pytest.warns(ShortcutFallbackWarning, match="key/value cache"):
        assert_equal_ig(ad, letter_q[0])
    assert ad.kv_backend == "rerun"
    assert "max difference" in ad.fast.fallbacks[0]


@needs_bridge
def test_wrong_packing_is_caught(monkeypatch):
    import tl_neuronllm.model.shortcuts as fp

    real = fp.packed_logits

    def off_by_noise(*args, **kwargs):
        out, where = real(*args, **kwargs)
        return out * 1.01, where

    monkeypatch.setattr(fp, "packed_logits", off_by_noise)
    monkeypatch.setattr("tl_neuronllm.model.adapter.packed_logits", off_by_noise)
    model = make_model("hf", True)
    ad, letter_q, _ = queries_for(model, 1)
    with pytest.warns(ShortcutFallbackWarning, match="packed rows"):
        assert_equal_ig(ad, letter_q[0])
    assert ad.fast_paths["packed_rows"] is False and ad.kv_backend == "hf"


@needs_bridge
def test_unembedding_the_wrong_positions_is_caught(monkeypatch):
    """Selecting the positions whose logits are read (one position too far) must fail the packing check."""
    import tl_neuronllm.model.shortcuts as fp

    real = fp._needed_positions

    def shifted(*args, **kwargs):
        need = real(*args, **kwargs)
        return None if need is None else need + 1

    monkeypatch.setattr(fp, "_needed_positions", shifted)
    model = make_model("hf", True)
    ad, _, cloze_q = queries_for(model, 1)
    with pytest.warns(ShortcutFallbackWarning, match="packed rows"):
        assert_equal_ig(ad, cloze_q[0])
    assert ad.fast_paths["packed_rows"] is False


@needs_bridge
def test_ig_check_steps_down_when_only_gradients_are_wrong(monkeypatch):
    """Logits agree but the layer-skipping path's IG does not: the IG check (not the logits checks)
    must catch it and switch skipping off."""
    model = make_model("hf", True)
    ad, letter_q, _ = queries_for(model, 1)
    real_run_rows = type(ad).run_rows

    def skewed(self, state, rows, **kw):
        out = real_run_rows(self, state, rows, **kw)
        if self.fast.skip_layers and kw.get("group_start") and max(kw["group_start"]) > 0:
            # scaled rows come out wrong, the clean first rows too (F changes)
            out = (out[0] * 1.05, out[1]) if isinstance(out, tuple) else out * 1.05
        return out

    monkeypatch.setattr(type(ad), "run_rows", skewed)
    with pytest.warns(ShortcutFallbackWarning, match="skipping blocks"):
        assert_equal_ig(ad, letter_q[0])
    assert ad.fast_paths["skip_layers"] is False and ad.fast_paths["exact_ig"] is True
    assert ad.fast_paths["packed_rows"] is True and ad.kv_backend == "hf"


@needs_bridge
def test_users_own_exception_in_a_check_is_reraised():
    """A user hook that fails only on the packed sequence (batch 1, long) raises out of identify."""

    class Mine(Exception):
        pass

    model = make_model("hf", False)
    task = text_task(4)

    def picky(act, hook):
        if act.shape[0] == 1 and act.shape[1] > 40:
            raise Mine("my hook does not like packed rows")
        return act

    with model.hooks(fwd_hooks=[("blocks.1.mlp.hook_post", picky)]):
        with pytest.raises(Mine, match="packed rows"):
            identify(model, task, k=5, steps=2, progress=False)


@needs_bridge
def test_identify_records_what_was_verified():
    model = make_model("hf", True)
    res = identify(model, text_task(4), k=5, steps=2, progress=False)
    fp = res.stats["fast_paths"]
    assert fp["backend"] == "hf" and fp["exact_ig"] is True and fp["shared_prefix"] is True
    assert fp["fallbacks"] == []
    off = identify(model, text_task(4), k=5, steps=2, progress=False, kv_cache="off")
    assert off.stats["fast_paths"]["backend"] == "rerun"
    assert torch.allclose(res.scores, off.scores, rtol=1e-4, atol=1e-6 * float(off.scores.abs().max()))


@needs_bridge
def test_no_number_when_even_the_plain_path_disagrees(monkeypatch):
    """If the naive reference and every path disagree, identify raises instead of returning scores."""
    import tl_neuronllm.attribution.kernels as attribution

    real = attribution.ig_naive
    monkeypatch.setattr(attribution, "ig_naive", lambda *a, **kw: 2 * real(*a, **kw))
    model = make_model("hf", False)
    with pytest.warns(ShortcutFallbackWarning), pytest.raises(RuntimeError, match="cannot compute exact IG"):
        identify(model, text_task(4), k=5, steps=2, progress=False)
    # every shortcut was switched off on the way, most specific first
    # (and the user's model is untouched: no hook of ours is left)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


@needs_bridge
def test_wrong_shared_prefix_continuation_is_caught(monkeypatch):
    """Continuing the run's shared prefix (instruction + demos) must equal computing each prefix anew."""
    real = HFCacheBackend.extend

    def shifted(self, state, tokens):
        return real(self, state, list(reversed(tokens)))  # right length, wrong order

    monkeypatch.setattr(HFCacheBackend, "extend", shifted)
    model = make_model("hf", True)
    ad, letter_q, _ = queries_for(model, 2)
    ad.share_prefix([q.prompt for q in letter_q])
    with pytest.warns(ShortcutFallbackWarning, match="shared prefix"):
        assert_equal_ig(ad, letter_q[1])
    assert ad.fast_paths["shared_prefix"] is False and ad.kv_backend == "hf"
