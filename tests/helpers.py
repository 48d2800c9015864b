"""Helpers shared by the tests: reference oracles (naive whole-tensor versions of what the package streams)
and small runners. Imported as ``from helpers import ...`` (tests/ is on the path)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_neuronllm.attribution.methods import AttributionOptions, attribute_items, correct_mask
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt
from tl_neuronllm.pipeline.resolve import resolve
from tl_neuronllm.scoring.baseline_reducers import (
    COARSE_THRESHOLD,
    COMMON_SHARE,
    REFINE_SHARE,
    cluster_and_norm,
    coarse_sets,
    qr_scores,
    refined_sets,
)


def qr_neuron_scores(
    igs: Sequence[Float[Tensor, "proxies n_layers d_mlp"]],
    *,
    threshold: float = COARSE_THRESHOLD,
    common_share: float = COMMON_SHARE,
) -> tuple[Float[Tensor, "n_layers d_mlp"], dict[str, Any]]:
    """QR-Neuron task scores from per-item proxy attributions (see the module docstring).

    Raises:
        ValueError: for no items.
    """
    if not igs:
        raise ValueError("no items to score")
    pairs = [cluster_and_norm(ig, threshold) for ig in igs]
    member = torch.stack([m for m, _ in pairs])  # [N, L, d]
    n_w = member.sum(dim=0)
    return qr_scores((member.double() * torch.stack([n for _, n in pairs])).sum(dim=0), n_w, len(igs), common_share)


def knowledge_neuron_scores(
    igs: Sequence[Float[Tensor, "proxies n_layers d_mlp"]],
    *,
    threshold: float = COARSE_THRESHOLD,
    refine_share: float = REFINE_SHARE,
) -> tuple[Float[Tensor, "n_layers d_mlp"], dict[str, Any]]:
    """Knowledge-neuron task scores from per-item proxy attributions (see the module docstring).

    Raises:
        ValueError: for no items.
    """
    if not igs:
        raise ValueError("no items to score")
    total = None
    sizes = []
    for ig in igs:
        refined = refined_sets(ig, threshold, refine_share)
        sizes.append(int(refined.sum()))
        contrib = refined.double() * ig.double().mean(dim=0).clamp(min=0)
        total = contrib if total is None else total + contrib
    assert total is not None
    score = (total / len(igs)).float()
    info = {"mean_refined_size": sum(sizes) / len(sizes), "n_refined_any": int((score > 0).sum())}
    return score, info


@dataclass
class BaselineOutput:
    """What :func:`run_baseline` returns.

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


def run_baseline(
    name: str, adapter: ModelAdapter, queries: Sequence[Sequence[ProxyPrompt]], cfg: Any, *, progress: bool = True
) -> BaselineOutput:
    """Run the baseline ``name`` on tokenized proxies with the options in ``cfg`` (an IdentifyConfig),
    in batches of ``cfg.batch_size`` items (:func:`tl_neuronllm.identify` runs the same path).

    Raises:
        ValueError: for an unknown baseline.
    """
    from tl_neuronllm.attribution.baselines import BASELINES

    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    t0 = time.perf_counter()
    method, reducer_cls = resolve(name)
    reducer = reducer_cls.create(adapter.n_layers, adapter.d_mlp, cfg.scoring)
    options = AttributionOptions.from_config(cfg)
    act_sum = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float64)
    probs: list[list[Tensor]] = []
    for b in range(0, len(queries), cfg.batch_size):
        batch = queries[b : b + cfg.batch_size]
        attr, mask, pr, a = attribute_items(method, adapter, batch, options)
        reducer.update(attr, mask, correct_mask(batch, pr, attr.shape[1]))
        act_sum += a
        probs += pr
    out = reducer.result()
    return BaselineOutput(
        out.scores, act_sum, probs, out.positive_only, {**out.info, "baseline_seconds": time.perf_counter() - t0}
    )


__all__ = ["BaselineOutput", "coarse_sets", "knowledge_neuron_scores", "qr_neuron_scores", "run_baseline"]
