"""The re-run backend: no cache; every continuation row carries the prefix again (exact, not cheaper)."""

from __future__ import annotations

from jaxtyping import Int
from torch import Tensor

from tl_neuronllm.model.backends.base import Backend, PrefixState
from tl_neuronllm.model.protocol import HookedModel


class RerunBackend(Backend):
    """Serves every model; the fallback when a cache does not reproduce the plain forward."""

    name = "rerun"
    cached = False

    @classmethod
    def applies(cls, model: HookedModel) -> bool:
        return True

    def _prefix(self, tokens: list[int], t: Int[Tensor, "1 pos"]) -> PrefixState:
        return PrefixState(tokens, None, len(tokens))

    def extend(self, state: PrefixState, tokens: list[int]) -> PrefixState:
        return self.prefix([*state.tokens, *tokens])  # nothing to compute
