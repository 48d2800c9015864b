"""``TransformerBridge`` over a Hugging Face model: continue the HF key/value cache.

The prefix runs once with ``return_type="logits_and_cache"``; each continuation gets a deep copy of
the cache (calls extend it in place), repeated to the batch with ``batch_repeat_interleave``, and
handed back as ``cache=`` (transformers >= 5.24) or ``past_key_values=`` (older).

Why a keyword shim: transformers >= 5.24 hands the cache to each attention module as ``cache=``,
while TransformerLens 4.3's attention bridge reads only ``past_key_values`` / ``layer_past``
(``AttentionBridge._update_kv_cache``), so through the Bridge the cache stays empty and a
continuation silently equals its last token run alone. During our calls, a forward pre-hook on each
``blocks[i].attn`` passes ``cache`` on as ``past_key_values`` (a no-op where the attention already
gets ``past_key_values``, as with transformers < 5.24); the hooks are removed after each call. The
backend is still checked against the plain forward at run time (:mod:`tl_neuronllm.model.shortcuts`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.errors import CacheNotFilled
from tl_neuronllm.model.backends.base import Backend, PrefixState
from tl_neuronllm.model.backends.capabilities import Capabilities, bridge_capabilities
from tl_neuronllm.model.protocol import HookedModel


def _cache_len(cache: Any) -> int | None:
    fn = getattr(cache, "get_seq_length", None)
    try:
        return int(fn()) if fn is not None else None
    except Exception:
        return None


class HFCacheBackend(Backend):
    """HF key/value cache through the Bridge's ``logits_and_cache`` / ``past_key_values`` API."""

    name = "hf"

    @classmethod
    def applies(cls, model: HookedModel) -> bool:
        forward, hf = getattr(model, "forward", None), getattr(model, "original_model", None)
        if forward is None or hf is None:
            return False
        params = inspect.signature(forward).parameters
        # TL 4.x names past_key_values; TL 3.x's Bridge passes it on through **kwargs
        if "past_key_values" not in params and "past_kv_cache" in params:
            return False
        if "past_key_values" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
        # a Hugging Face model inside (boot_native wraps TransformerLens' own NativeModel: no HF cache)
        return any(c.__module__.startswith("transformers.") for c in type(hf).__mro__)

    @contextmanager
    def calling(self) -> Iterator[None]:
        """Pass the attention modules' ``cache`` keyword on as ``past_key_values`` inside the block."""
        blocks = getattr(self.model, "blocks", None) or []
        handles = []

        def pre(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
            return args, kwargs

        try:
            for block in blocks:
                attn = getattr(block, "attn", None)
                if attn is not None and hasattr(attn, "register_forward_pre_hook"):
                    handles.append(attn.register_forward_pre_hook(pre, with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()

    def _continue(self, cache: Any) -> dict[str, Any]:
        """Keywords that hand ``cache`` to the Bridge: ``cache=`` where the HF model takes it (transformers
        >= 5.24, where ``past_key_values`` is deprecated, to be removed in 5.40), else ``past_key_values=``."""
        bridge: Any = self.model  # a TransformerBridge (applies() checked it): it has original_model
        hf_forward = bridge.original_model.forward
        if "cache" in inspect.signature(hf_forward).parameters:
            return {"cache": cache, "use_cache": True}
        return {"past_key_values": cache}

    def _prefix(self, tokens: list[int], t: Int[Tensor, "1 pos"]) -> PrefixState:
        with self.calling():
            logits, cache = self.model(t, return_type="logits_and_cache")
        n = _cache_len(cache)
        if cache is None or n != len(tokens):
            raise CacheNotFilled(f"the Bridge returned a cache holding {n} of the prefix's {len(tokens)} positions")
        return PrefixState(tokens, cache, 0, logits)

    def extend(self, state: PrefixState, tokens: list[int]) -> PrefixState:
        """Continue a copy of ``state``'s cache with ``tokens`` (no grad); the copy is the new state."""
        if state.cache is None or not tokens:
            return super().extend(state, tokens)
        cache = copy.deepcopy(state.cache)
        t = torch.tensor([tokens], dtype=torch.long, device=self.device)
        with torch.no_grad(), self.calling():
            logits = self.model(t, **self._continue(cache))
        n = _cache_len(cache)
        if n != len(state.tokens) + len(tokens):
            raise CacheNotFilled(
                f"continuing the cache left it holding {n} of {len(state.tokens) + len(tokens)} positions"
            )
        return PrefixState([*state.tokens, *tokens], cache, 0, logits)

    def _run_cached(self, state: PrefixState, suffix: Int[Tensor, "rows pos"]) -> Float[Tensor, "rows pos d_vocab"]:
        cache = copy.deepcopy(state.cache)
        if suffix.shape[0] > 1:
            cache.batch_repeat_interleave(suffix.shape[0])
        return self.model(suffix, **self._continue(cache))  # inside run_suffix's calling()

    def _declare(self) -> Capabilities:
        """Packed rows, skipped blocks and letter columns, as on any ``TransformerBridge``."""
        return bridge_capabilities(self.model)

    def cache_kwargs(self, state: PrefixState) -> dict[str, Any]:
        return self._continue(copy.deepcopy(state.cache))  # batch 1, small; a call extends it in place
