"""The model Protocol: what tl_neuronllm needs from a TransformerLens model, found by duck typing.

Both TL 4.x's ``TransformerBridge`` and TL 3.x's ``HookedTransformer`` satisfy it; neither is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch

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
