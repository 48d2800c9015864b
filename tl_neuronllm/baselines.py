"""Peer methods as scoring variants of the same harness (same proxies, prompts and budget).

Each baseline maps the tokenized proxies ``[item][proxy]`` to a ``[n_layers, d_mlp]`` score
tensor; :func:`tl_neuronllm.identify` ranks it like ACE. Positive-only methods (QR-Neuron,
knowledge neurons) return no negative scores, so their bad set is empty (reported as n/a).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Float
from torch import Tensor

from .adapter import ModelAdapter
from .answers import Query


@dataclass
class BaselineOutput:
    """What a baseline returns.

    Attributes:
        scores: Signed (or non-negative, for positive-only methods) scores ``[n_layers, d_mlp]``.
        act_sum: Sum of site activations over the proxies (float64), for mean interventions.
        probs: Per item, the clean option probabilities of each proxy.
        positive_only: True when the method has no notion of bad neurons.
        info: Extra numbers to record in the result's stats.
    """

    scores: Float[Tensor, "n_layers d_mlp"]
    act_sum: Float[Tensor, "n_layers d_mlp"]
    probs: list[list[Tensor]]
    positive_only: bool = False
    info: dict[str, Any] = field(default_factory=dict)


BaselineFn = Callable[..., BaselineOutput]
BASELINES: dict[str, BaselineFn] = {}


def register(name: str) -> Callable[[BaselineFn], BaselineFn]:
    def deco(fn: BaselineFn) -> BaselineFn:
        BASELINES[name] = fn
        return fn
    return deco


def run_baseline(name: str, adapter: ModelAdapter, queries: Sequence[Sequence[Query]], cfg: Any, *, progress: bool = True) -> BaselineOutput:
    """Run the baseline ``name`` on tokenized proxies with the options in ``cfg`` (an IdentifyConfig)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    return BASELINES[name](adapter, queries, cfg, progress=progress)
