"""Every error the package raises on purpose, under one base class.

Catch :class:`NeuronLLMError` to catch them all. Each also derives from the built-in type it has always been
(``ValueError`` for bad input, ``RuntimeError`` for a cache the model did not fill), so code that caught
those keeps working. Warnings the package gives live beside them.
"""

# pyright: strict

from __future__ import annotations


class NeuronLLMError(Exception):
    """The base of every tl_neuronllm error; its message names the problem (item, field, layer or file)."""


class TaskError(NeuronLLMError, ValueError):
    """Raised for malformed items or tasks; the message names the item and the field."""


class ModelError(NeuronLLMError, ValueError):
    """The model lacks something the method needs (a hook, a width, a single-token letter)."""


class ContextLengthError(NeuronLLMError, ValueError):
    """A rendered prompt (with its longest option in cloze mode) does not fit the model's context."""


class ResultFileError(NeuronLLMError, ValueError):
    """A saved result (or checkpoint) that cannot be used: unreadable, truncated, another format, or
    parts that disagree; the message names the file and what to do."""


class ConfigError(NeuronLLMError, ValueError):
    """A setting out of range or of the wrong type, or an unknown name (method, reducer, task source)."""


class RegistryError(NeuronLLMError, ValueError):
    """A registration that would silently replace another, or a class that is not what the registry holds."""


class MismatchError(NeuronLLMError, ValueError):
    """Two things that must belong together do not: an evaluation of another result, results of models with
    other weights, a model other than the one a result was identified on."""


class InterventionError(NeuronLLMError, RuntimeError):
    """An intervention context used in a way that cannot work (entered again while it is active)."""


class CacheNotFilled(NeuronLLMError, RuntimeError):
    """The Bridge returned no cache, or one that does not hold the prefix."""


class MissingDependency(NeuronLLMError, ImportError):
    """An optional package a feature needs is not installed (pandas for ``to_pandas()``); the message says
    what to install."""


class ShortcutFallbackWarning(RuntimeWarning):
    """A speed shortcut failed its check against the plain forward and was switched off (results stay exact)."""


class RandomMatchWarning(UserWarning):
    """``random_match="auto"`` could not match the random sets on activation (no recorded activations, or a
    layer without enough other neurons) and matched them on layer counts only."""


__all__ = [
    "CacheNotFilled",
    "ConfigError",
    "ContextLengthError",
    "InterventionError",
    "MismatchError",
    "MissingDependency",
    "ModelError",
    "NeuronLLMError",
    "RandomMatchWarning",
    "RegistryError",
    "ResultFileError",
    "ShortcutFallbackWarning",
    "TaskError",
]
