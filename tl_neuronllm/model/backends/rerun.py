"""The re-run backend: no cache; every continuation row carries the prefix again (exact, not cheaper)."""

from __future__ import annotations

from jaxtyping import Int
from torch import Tensor

from tl_neuronllm.model.backends.base import Backend, PrefixState, is_bridge
from tl_neuronllm.model.backends.capabilities import Capabilities, bridge_capabilities
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

    def _declare(self) -> Capabilities:
        """On a ``TransformerBridge``: packed rows (the prefix runs in the same sequence), skipped blocks and
        letter columns; on other models nothing."""
        return bridge_capabilities(self.model) if is_bridge(self.model) else Capabilities()
