"""From a method's name to the code that runs it: the attribution method and its reducer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tl_neuronllm.attribution.methods import AttributionMethod, get_method, method_names
from tl_neuronllm.errors import ConfigError
from tl_neuronllm.scoring.reducers import Reducer, reducer_class


def resolve(name: str, method_options: Mapping[str, Any] | None = None) -> tuple[AttributionMethod, type[Reducer]]:
    """The attribution method ``name`` (with its own options) and the reducer class it names.

    Raises:
        ConfigError: an unknown method, options it does not take, or a reducer that is not registered.
    """
    if name not in method_names():
        raise ConfigError(f"unknown method {name!r}; valid: {list(method_names())}")
    method = get_method(name, **dict(method_options or {}))
    return method, reducer_class(method.reducer)


__all__ = ["resolve"]
