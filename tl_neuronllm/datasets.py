"""Deprecated name of :mod:`tl_neuronllm.real_tasks` (it shadowed Hugging Face's ``datasets`` package). Every
name still resolves here, with a ``DeprecationWarning``; import from :mod:`tl_neuronllm.real_tasks` instead."""

from __future__ import annotations

import warnings
from typing import Any

from . import real_tasks as _real_tasks


def __getattr__(name: str) -> Any:
    if not name.startswith("__") and hasattr(_real_tasks, name):
        warnings.warn(
            f"tl_neuronllm.datasets is deprecated: import {name} from tl_neuronllm.real_tasks",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_real_tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
