"""The backend interface (:class:`Backend`) and the prefix state it returns (:class:`PrefixState`); the
backends themselves and how one is chosen are in :mod:`tl_neuronllm.model.backends`."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.model.backends.capabilities import Capabilities
from tl_neuronllm.model.protocol import HookedModel


@dataclass
class PrefixState:
    """A computed prompt prefix, ready to be continued by many rows at once.

    Attributes:
        tokens: The prefix token ids.
        cache: Backend cache object (HF cache, TL cache) or ``None`` for the re-run backend.
        offset: Position of the first suffix token inside the tensors hooks see (0 with a cache,
            ``len(tokens)`` when the prefix is re-run in every row).
        logits: The prefix's own logits, when the backend computed them.
    """

    tokens: list[int]
    cache: Any = None
    offset: int = 0
    logits: Tensor | None = field(default=None, repr=False)


def is_bridge(model: HookedModel) -> bool:
    """Whether ``model`` is a ``TransformerBridge``: TL 4.x names ``past_key_values`` in its forward; TL 3.x's
    Bridge passes it on through ``**kwargs`` and holds ``original_model``."""
    forward = getattr(model, "forward", None)
    if forward is None:
        return False
    sig = inspect.signature(forward).parameters
    if "past_kv_cache" in sig:
        return False
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())
    return "past_key_values" in sig or (takes_kwargs and hasattr(model, "original_model"))


def model_device(model: HookedModel) -> torch.device:
    """The device of the model's parameters (its config's device if it has none)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device(getattr(model.cfg, "device", None) or "cpu")


class Backend:
    """How one kind of model computes a prefix once and continues it (see the module docstring).

    Subclasses set :attr:`name` and implement :meth:`applies`, :meth:`_prefix` and
    :meth:`_run_cached`; the empty prefix and the no-cache cases are handled here.
    """

    name: ClassVar[str] = "base"
    #: whether continuations skip recomputing the prefix (what makes the backend worth having)
    cached: ClassVar[bool] = True

    def __init__(self, model: HookedModel):
        self.model = model

    @classmethod
    def applies(cls, model: HookedModel) -> bool:
        """Whether this backend can serve ``model`` at all (the run-time check decides the rest)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def prefix(self, tokens: list[int]) -> PrefixState:
        """Run ``tokens`` once (no grad) and return a state that :meth:`run_suffix` continues."""
        if not tokens:
            return PrefixState(tokens=[], cache=None, offset=0)
        t = torch.tensor([tokens], dtype=torch.long, device=self.device)
        with torch.no_grad():
            return self._prefix(tokens, t)

    def extend(self, state: PrefixState, tokens: list[int]) -> PrefixState:
        """The state of ``state.tokens + tokens``, reusing ``state`` where the backend can (here: not;
        the whole prefix is computed again)."""
        return self.prefix([*state.tokens, *tokens])

    def run_suffix(self, state: PrefixState, suffix: Int[Tensor, "rows pos"]) -> Float[Tensor, "rows pos d_vocab"]:
        """Logits of ``rows`` continuations of ``state`` (suffix positions only); hooks already in
        place on the model see the suffix at positions ``state.offset + j``."""
        suffix = suffix.to(self.device)
        if not state.tokens:
            return self.model(suffix)
        if state.cache is None:
            pre = torch.tensor([state.tokens], dtype=torch.long, device=self.device).expand(suffix.shape[0], -1)
            return self.model(torch.cat([pre, suffix], dim=1))[:, len(state.tokens) :]
        with self.calling():
            return self._run_cached(state, suffix)

    @contextmanager
    def calling(self) -> Iterator[None]:
        """A context every call that continues a prefix runs in (e.g. keyword shims); none here."""
        yield

    def capabilities(self) -> Capabilities:
        """The shortcuts this backend supports on its model (declared once, by :meth:`_declare`)."""
        caps = self.__dict__.get("_capabilities")
        if caps is None:
            caps = self.__dict__["_capabilities"] = self._declare()
        return caps

    def _declare(self) -> Capabilities:
        """What :meth:`capabilities` returns (none here)."""
        return Capabilities()

    def cache_kwargs(self, state: PrefixState) -> dict[str, Any]:
        """Keyword arguments that continue ``state``'s cache with batch 1 (packed rows), or ``{}``."""
        return {}

    def _prefix(self, tokens: list[int], t: Int[Tensor, "1 pos"]) -> PrefixState:
        raise NotImplementedError

    def _run_cached(self, state: PrefixState, suffix: Int[Tensor, "rows pos"]) -> Float[Tensor, "rows pos d_vocab"]:
        raise NotImplementedError


__all__ = ["Backend", "PrefixState", "is_bridge", "model_device"]
