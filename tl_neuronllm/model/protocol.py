"""The model Protocol: what tl_neuronllm needs from a TransformerLens model, found by duck typing.

Both TL 4.x's ``TransformerBridge`` and TL 3.x's ``HookedTransformer`` satisfy it; neither is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

#: A TransformerLens hook function: ``fn(activation, hook) -> activation or None``.
HookFn = Callable[[Tensor, Any], Tensor | None]

#: The attributes checked when a model is handed in (the rest of :class:`HookedModel` is used only by
#: the steps that need it: ``to_tokens`` for text tasks, ``parameters`` for the device).
REQUIRED = ("cfg", "hook_dict", "hooks", "forward")


class HookedModel(Protocol):
    """A TransformerLens model: its config, hook registry, hook context manager, tokenizer and forward."""

    cfg: Any
    hook_dict: dict[str, Any]

    def hooks(self, fwd_hooks: list = ..., bwd_hooks: list = ..., *args: Any, **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def forward(self, *args: Any, **kwargs: Any) -> Any: ...

    def to_tokens(self, *args: Any, **kwargs: Any) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def modules(self) -> Iterator[torch.nn.Module]: ...


def missing_attributes(model: object) -> list[str]:
    """The names of :data:`REQUIRED` that ``model`` lacks (empty for a TransformerLens model)."""
    return [name for name in REQUIRED if not hasattr(model, name)]


class ShortcutHost(Protocol):
    """What the shortcut checks of :mod:`tl_neuronllm.model.shortcuts` need from the adapter that owns them
    (:class:`tl_neuronllm.model.adapter.ModelAdapter` is the one implementation); a Protocol, so the shortcuts
    never import the adapter."""

    model: HookedModel
    n_layers: int
    hook_names: list[str]
    fast: Any

    @property
    def backend(self) -> Any: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def d_vocab(self) -> int: ...

    @property
    def fast_paths(self) -> dict[str, bool | None]: ...

    def float_dtype(self) -> torch.dtype: ...

    def forward(self, tokens: Tensor, *, fwd_hooks: Sequence[tuple[str, HookFn]] = (), **kwargs: Any) -> Tensor: ...

    def note_fallback(self, what: str, reason: str, cost: str) -> None: ...

    def packs_rows_for(self, prefix_len: int, row_len: int) -> int: ...

    def pad_batch(self, seqs: Sequence[Sequence[int]], pad: int = 0) -> tuple[Tensor, Tensor]: ...
