"""TL 2.x / 3.x ``HookedTransformer``: a frozen TransformerLens key/value cache of expanded views."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.model.backends.base import Backend, PrefixState
from tl_neuronllm.model.protocol import HookedModel

_CACHE_CLASSES = ("HookedTransformerKeyValueCache", "TransformerLensKeyValueCache")
_CACHE_MODULES = ("transformer_lens.past_key_value_caching", "transformer_lens.cache.key_value_cache")


class TLCacheBackend(Backend):
    """The prefix fills a TL cache once; continuations read it through expanded, frozen views."""

    name = "tl"

    @classmethod
    def applies(cls, model: HookedModel) -> bool:
        forward = getattr(model, "forward", None)
        return forward is not None and "past_kv_cache" in inspect.signature(forward).parameters

    def _cache_cls(self) -> Any:
        mod = inspect.getmodule(type(self.model))
        for name in _CACHE_CLASSES:
            if getattr(mod, name, None) is not None:
                return getattr(mod, name)
        for path in _CACHE_MODULES:
            try:
                m = importlib.import_module(path)
            except ImportError:
                continue
            for name in _CACHE_CLASSES:
                if hasattr(m, name):
                    return getattr(m, name)
        raise RuntimeError("could not find TransformerLens' key/value cache class for this HookedTransformer")

    def _prefix(self, tokens: list[int], t: Int[Tensor, "1 pos"]) -> PrefixState:
        cache = self._cache_cls().init_cache(self.model.cfg, self.device, 1)
        logits = self.model(t, past_kv_cache=cache, attention_mask=torch.ones_like(t))
        cache.freeze()
        return PrefixState(tokens, cache, 0, logits)

    def _run_cached(self, state: PrefixState, suffix: Int[Tensor, "rows pos"]) -> Float[Tensor, "rows pos d_vocab"]:
        rows, src = suffix.shape[0], state.cache
        entries = [
            type(e)(
                past_keys=e.past_keys.expand(rows, -1, -1, -1),
                past_values=e.past_values.expand(rows, -1, -1, -1),
                frozen=True,
            )
            for e in src.entries
        ]
        cache = type(src)(
            entries=entries, previous_attention_mask=src.previous_attention_mask.expand(rows, -1), frozen=True
        )
        return self.model(suffix, past_kv_cache=cache, attention_mask=torch.ones_like(suffix))
