"""Model backends: one way each of computing a prompt prefix once and continuing it with many rows.

A backend answers two questions for a model: :meth:`Backend.prefix` (run the prefix tokens once,
keep whatever lets continuations reuse it) and :meth:`Backend.run_suffix` (logits of ``rows``
right-padded continuations of that prefix, suffix positions only). Three exist:

* :class:`~tl_neuronllm.model.backends.hf_cache.HFCacheBackend`: a ``TransformerBridge`` over a Hugging
  Face model, continuing the HF key/value cache.
* :class:`~tl_neuronllm.model.backends.tl_cache.TLCacheBackend`: a TL 2.x/3.x ``HookedTransformer``,
  continuing a frozen TransformerLens key/value cache.
* :class:`~tl_neuronllm.model.backends.rerun.RerunBackend`: any model; the prefix is re-run in every row
  (exact, not cheaper). The fallback whenever a cache does not reproduce the plain forward.

No backend is trusted on its word: :mod:`tl_neuronllm.model.shortcuts` checks the chosen one once per
model against a plain full-sequence forward without a cache, and falls back to the re-run backend
(with a warning) when they disagree. Each backend declares, in :meth:`Backend.capabilities`
(:mod:`~tl_neuronllm.model.backends.capabilities`), which shortcuts it supports on its model. A new model family is one new backend file plus one line in
:func:`candidate_backends`.
"""

from __future__ import annotations

from tl_neuronllm.model.backends.base import Backend, PrefixState, is_bridge, model_device
from tl_neuronllm.model.backends.capabilities import Capabilities
from tl_neuronllm.model.backends.hf_cache import HFCacheBackend
from tl_neuronllm.model.backends.rerun import RerunBackend
from tl_neuronllm.model.backends.tl_cache import TLCacheBackend
from tl_neuronllm.model.protocol import HookedModel


def candidate_backends(model: HookedModel, kv_cache: str = "auto") -> list[type[Backend]]:
    """The backends to try for ``model``, best first; the re-run backend always comes last."""
    if kv_cache == "off":
        return [RerunBackend]
    cached: list[type[Backend]] = [b for b in (HFCacheBackend, TLCacheBackend) if b.applies(model)]
    return [*cached, RerunBackend]


__all__ = [
    "Backend",
    "Capabilities",
    "HFCacheBackend",
    "PrefixState",
    "RerunBackend",
    "TLCacheBackend",
    "candidate_backends",
    "is_bridge",
    "model_device",
]
