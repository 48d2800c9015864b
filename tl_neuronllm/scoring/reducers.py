"""Reducers: streaming combinations of per-item attributions into one neuron score.

A :class:`Reducer` consumes batches of per-item, per-proxy attributions ``[items, P, n_layers, d_mlp]``
(with a ``[items, P]`` proxy mask) through :meth:`~Reducer.update`, combines with the reducer of another
item shard through :meth:`~Reducer.merge` (how checkpoints resume and ranks all-reduce: every state
tensor is a sum over items) and forms the ``[n_layers, d_mlp]`` scores in :meth:`~Reducer.result`.
Its state is a set of named tensors (:meth:`~Reducer.tensors` / :meth:`~Reducer.from_tensors`), saved in
checkpoints and results.

The method's reducer is :class:`ACEReducer` (the ACE score over :class:`~tl_neuronllm.scoring.ace.ACEState`);
the baselines' reducers (QR-Neuron, knowledge neurons, activation contrast) live in
:mod:`tl_neuronllm.scoring.baseline_reducers`. Reducers are registered by name (:func:`register_reducer`);
a method names its reducer, and a result records the reducer's name and finds it with :func:`reducer_class`.
"""

# pyright: strict

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tl_neuronllm.errors import ConfigError, RegistryError
from tl_neuronllm.scoring.ace import ACEState, ScoringConfig


@dataclass
class ReducerResult:
    """The scores a reducer forms.

    Attributes:
        scores: ``[n_layers, d_mlp]`` float32 scores (> 0 good, < 0 bad).
        positive_only: True when the method has no notion of bad neurons.
        info: Extra numbers for the result's stats.
    """

    scores: Float[Tensor, "n_layers d_mlp"]
    positive_only: bool = False
    info: dict[str, Any] = field(default_factory=dict[str, Any])


class Reducer(ABC):
    """A streaming reduction of per-item attributions (see the module docstring).

    Attributes:
        name: The reducer's name (recorded in results as ``reducer``).
        needs_correct: ``update`` needs ``correct`` (whether each proxy is answered right), which kept
            attributions do not hold, so results of such a reducer cannot be rescored.
    """

    name: ClassVar[str] = ""
    needs_correct: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def create(cls, n_layers: int, d_mlp: int, scoring: ScoringConfig) -> Reducer:
        """An empty reducer for a model of this shape."""

    @abstractmethod
    def update(
        self,
        attributions: Float[Tensor, "items proxies n_layers d_mlp"],
        mask: Float[Tensor, "items proxies"] | None = None,
        correct: Bool[Tensor, "items proxies"] | None = None,
    ) -> None:
        """Add a batch of items (``mask`` 1 where an item has that proxy; ``correct`` per proxy)."""

    @abstractmethod
    def merge(self, other: Any) -> Reducer:
        """The reducer of the union of two disjoint item shards."""

    @abstractmethod
    def result(self) -> ReducerResult:
        """The scores of the items seen so far."""

    @abstractmethod
    def tensors(self) -> dict[str, Tensor]:
        """The state as named tensors (``n_items`` 0-d, the others ``[n_layers, d_mlp]``)."""

    @classmethod
    @abstractmethod
    def from_tensors(cls, t: dict[str, Tensor], scoring: ScoringConfig) -> Reducer:
        """A reducer from :meth:`tensors` (copies them)."""

    @property
    def state(self) -> Any:
        """What a :class:`~tl_neuronllm.result.neuron_result.NeuronResult` keeps as its ``state``."""
        return self


#: The registered reducers by name.
REDUCERS: dict[str, type[Reducer]] = {}


def register_reducer(name: str, *, replace: bool = False) -> Any:
    """Register a :class:`Reducer` class under ``name`` (a class decorator; sets the class's ``name``).

    Raises:
        RegistryError: not a Reducer subclass, an empty name, or a name already registered (without
            ``replace=True``).
    """

    def deco(cls: Any) -> type[Reducer]:
        if not (isinstance(cls, type) and issubclass(cls, Reducer)):
            raise RegistryError(f"register_reducer takes a Reducer subclass, got {cls!r}")
        if not name:
            raise RegistryError("a reducer needs a non-empty name")
        old = REDUCERS.get(name)
        if old is not None and old is not cls and not replace:
            raise RegistryError(f"reducer {name!r} is already registered ({old.__qualname__}); pass replace=True")
        cls.name = name
        REDUCERS[name] = cls
        return cls

    return deco


def reducer_class(name: str) -> type[Reducer]:
    """The reducer registered as ``name``.

    Raises:
        ConfigError: for an unknown name, listing the registered ones.
    """
    if name not in REDUCERS:
        raise ConfigError(f"unknown reducer {name!r}; registered: {sorted(REDUCERS)}")
    return REDUCERS[name]


def check_attributions(attributions: Tensor, shape: tuple[int, ...]) -> None:
    """Refuse attributions that are not ``[items, proxies, *shape]``.

    Raises:
        ValueError: naming both shapes.
    """
    if attributions.ndim != 4 or tuple(attributions.shape[2:]) != tuple(shape):
        raise ValueError(
            f"expected attributions [items, proxies, {shape[0]}, {shape[1]}], got {tuple(attributions.shape)}"
        )


def proxy_rows(attributions: Tensor, mask: Tensor | None, i: int) -> Tensor:
    """Item ``i``'s attributions of the proxies it has, ``[P_i, n_layers, d_mlp]``."""
    if mask is None:
        return attributions[i]
    return attributions[i][mask[i] > 0]


@dataclass
class TensorReducer(Reducer):
    """A reducer whose dataclass fields are its state tensors (all sums over items, merged by addition):
    ``[n_layers, d_mlp]`` ones, and 0-d ones named in ``scalars``; names starting ``n_`` are int64 counts."""

    scalars: ClassVar[tuple[str, ...]] = ("n_items",)

    @classmethod
    def create(cls, n_layers: int, d_mlp: int, scoring: ScoringConfig) -> TensorReducer:
        out = {}
        for f in fields(cls):
            dtype = torch.int64 if f.name.startswith("n_") else torch.float64
            out[f.name] = (
                torch.zeros((), dtype=dtype) if f.name in cls.scalars else torch.zeros(n_layers, d_mlp, dtype=dtype)
            )
        return cls(**out)

    def merge(self, other: Any) -> TensorReducer:
        if type(other) is not type(self):
            raise ValueError(f"cannot merge a {type(self).__name__} with a {type(other).__name__}")
        return type(self)(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], scoring: ScoringConfig | None = None) -> TensorReducer:
        return cls(**{f.name: t[f.name].clone() for f in fields(cls)})


@register_reducer("ace")
class ACEReducer(Reducer):
    """The method's ACE score: per-item candidate sets, ambiguity filter, over :class:`ACEState`."""

    name = "ace"

    def __init__(self, state: ACEState, scoring: ScoringConfig):
        self._state = state
        self.scoring = scoring

    @classmethod
    def create(cls, n_layers: int, d_mlp: int, scoring: ScoringConfig) -> ACEReducer:
        return cls(ACEState.zeros(n_layers, d_mlp), scoring)

    def update(
        self,
        attributions: Float[Tensor, "items proxies n_layers d_mlp"],
        mask: Float[Tensor, "items proxies"] | None = None,
        correct: Bool[Tensor, "items proxies"] | None = None,
    ) -> None:
        self._state.update(attributions, self.scoring, mask)

    def merge(self, other: Any) -> ACEReducer:
        if not isinstance(other, ACEReducer):
            raise ValueError(f"cannot merge an ACEReducer with a {type(other).__name__}")
        return ACEReducer(self._state.merge(other.state), self.scoring)

    def result(self) -> ReducerResult:
        return ReducerResult(self._state.ace(self.scoring.ambiguity))

    def tensors(self) -> dict[str, Tensor]:
        return self._state.tensors()

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], scoring: ScoringConfig) -> ACEReducer:
        return cls(ACEState.from_tensors(t), scoring)

    @property
    def state(self) -> ACEState:
        return self._state


__all__ = [
    "REDUCERS",
    "reducer_class",
    "register_reducer",
    "ACEReducer",
    "Reducer",
    "ReducerResult",
    "TensorReducer",
    "check_attributions",
    "proxy_rows",
]
