"""The baselines' reducers: how QR-Neuron, knowledge neurons and activation contrast turn the per-item
attributions of their methods into task scores. The formulas, with their papers, are in the docstring of
:mod:`tl_neuronllm.attribution.baselines` (the methods); the naive whole-tensor oracles the tests hold these
streaming reducers to are in ``tests/helpers.py``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_neuronllm.scoring.reducers import ReducerResult, TensorReducer, check_attributions, proxy_rows, register_reducer

#: Coarse threshold of QR-Neuron and knowledge neurons (fraction of the per-prompt maximum).
COARSE_THRESHOLD = 0.2
#: QR-Neuron: neurons in more than this share of the clusters are common and dropped.
COMMON_SHARE = 0.3
#: Knowledge neurons: a neuron is refined when it is coarse in at least this share of an item's prompts.
REFINE_SHARE = 0.5


def coarse_sets(
    ig: Float[Tensor, "proxies n_layers d_mlp"], threshold: float = COARSE_THRESHOLD
) -> Bool[Tensor, "proxies n_layers d_mlp"]:
    """Per prompt: neurons whose attribution exceeds ``threshold`` times that prompt's maximum
    (empty when the maximum is not positive)."""
    mx = ig.flatten(1).amax(dim=1).view(-1, *([1] * (ig.ndim - 1)))
    return (ig > threshold * mx) & (mx > 0)


def cluster_and_norm(ig: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """QR-Neuron per item: the cluster (union of the prompts' coarse sets) and the normalised mean attribution."""
    mean = ig.double().mean(dim=0)
    mx = float(mean.max())
    norm = (mean / mx).clamp(min=0) if mx > 0 else torch.zeros_like(mean)
    return coarse_sets(ig, threshold).any(dim=0), norm


def qr_scores(sum_norm: Tensor, n_w: Tensor, N: int, common_share: float) -> tuple[Tensor, dict[str, Any]]:
    common = n_w.double() > common_share * N
    icf = torch.log(torch.tensor(float(N), dtype=torch.float64) / (n_w.double() + 1))
    score = sum_norm * icf / N
    score = torch.where(common | (n_w == 0), torch.zeros_like(score), score).clamp(min=0)
    info = {
        "n_clusters": N,
        "mean_cluster_size": float(n_w.sum()) / N,
        "n_clustered": int((n_w > 0).sum()),
        "n_common_dropped": int((common & (n_w > 0)).sum()),
    }
    return score.float(), info


def refined_sets(ig: Tensor, threshold: float, refine_share: float) -> Tensor:
    """Knowledge neurons per item: the neurons coarse in at least ``refine_share`` of its prompts."""
    count = coarse_sets(ig, threshold).sum(dim=0)
    return (count >= math.ceil(refine_share * ig.shape[0] - 1e-9)) & (count > 0)


@register_reducer("qr_neuron")
@dataclass
class QRNeuronReducer(TensorReducer):
    """QR-Neuron: coarse IG sets, per-query clusters, inverse cluster frequency, common neurons dropped.

    Attributes:
        sum_norm: ``sum_j 1[w in C_j] * A_j(w)`` (float64).
        n_member: ``n_w``, the number of clusters holding ``w`` (int64).
        n_items: The number of clusters N.
    """

    name: ClassVar[str] = "qr_neuron"
    sum_norm: Float[Tensor, "n_layers d_mlp"]
    n_member: Int[Tensor, "n_layers d_mlp"]
    n_items: Int[Tensor, ""]

    def update(
        self,
        attributions: Float[Tensor, "items proxies n_layers d_mlp"],
        mask: Float[Tensor, "items proxies"] | None = None,
        correct: Bool[Tensor, "items proxies"] | None = None,
    ) -> None:
        check_attributions(attributions, tuple(self.sum_norm.shape))
        for i in range(attributions.shape[0]):
            member, norm = cluster_and_norm(proxy_rows(attributions, mask, i), COARSE_THRESHOLD)
            self.sum_norm += member.double() * norm
            self.n_member += member.to(torch.int64)
            self.n_items += 1

    def result(self) -> ReducerResult:
        if self.n_items == 0:
            raise ValueError("no items to score")
        scores, info = qr_scores(self.sum_norm, self.n_member, int(self.n_items), COMMON_SHARE)
        return ReducerResult(scores, True, info)


@register_reducer("knowledge_neurons")
@dataclass
class KnowledgeNeuronsReducer(TensorReducer):
    """Knowledge neurons: coarse IG sets refined to the neurons shared by at least half of an item's prompts.

    Attributes:
        total: ``sum_j 1[w in R_j] * max(mean_p IG_{j,p}(w), 0)`` (float64).
        n_refined: The number of items whose refined set holds ``w`` (int64).
        n_items: The number of items N.
    """

    name: ClassVar[str] = "knowledge_neurons"
    total: Float[Tensor, "n_layers d_mlp"]
    n_refined: Int[Tensor, "n_layers d_mlp"]
    n_items: Int[Tensor, ""]

    def update(
        self,
        attributions: Float[Tensor, "items proxies n_layers d_mlp"],
        mask: Float[Tensor, "items proxies"] | None = None,
        correct: Bool[Tensor, "items proxies"] | None = None,
    ) -> None:
        check_attributions(attributions, tuple(self.total.shape))
        for i in range(attributions.shape[0]):
            ig = proxy_rows(attributions, mask, i)
            refined = refined_sets(ig, COARSE_THRESHOLD, REFINE_SHARE)
            self.total += refined.double() * ig.double().mean(dim=0).clamp(min=0)
            self.n_refined += refined.to(torch.int64)
            self.n_items += 1

    def result(self) -> ReducerResult:
        if self.n_items == 0:
            raise ValueError("no items to score")
        n = int(self.n_items)
        score = (self.total / n).float()
        info = {"mean_refined_size": int(self.n_refined.sum()) / n, "n_refined_any": int((score > 0).sum())}
        return ReducerResult(score, True, info)


@register_reducer("mean_ig")
@dataclass
class MeanIGReducer(TensorReducer):
    """Plain IG: the mean signed attribution over every (item, proxy) pair; no candidates, no filter.

    Attributes:
        total: Sum of the attributions over items and their proxies (float64).
        n_rows: The number of (item, proxy) pairs summed (0-d int64).
        n_items: The number of items.
    """

    name: ClassVar[str] = "mean_ig"
    scalars: ClassVar[tuple[str, ...]] = ("n_rows", "n_items")
    total: Float[Tensor, "n_layers d_mlp"]
    n_rows: Int[Tensor, ""]
    n_items: Int[Tensor, ""]

    def update(
        self,
        attributions: Float[Tensor, "items proxies n_layers d_mlp"],
        mask: Float[Tensor, "items proxies"] | None = None,
        correct: Bool[Tensor, "items proxies"] | None = None,
    ) -> None:
        check_attributions(attributions, tuple(self.total.shape))
        for i in range(attributions.shape[0]):
            rows = proxy_rows(attributions, mask, i)
            self.total += rows.double().sum(dim=0)
            self.n_rows += rows.shape[0]
            self.n_items += 1

    def result(self) -> ReducerResult:
        if self.n_rows == 0:
            raise ValueError("no items to score")
        return ReducerResult((self.total / int(self.n_rows)).float(), False, {"n_rows": int(self.n_rows)})


@register_reducer("activation_contrast")
@dataclass
class ActivationContrastReducer(TensorReducer):
    """Mean site activation on correctly answered proxies minus that on incorrectly answered ones.

    Attributes:
        sum_right / sum_wrong: Sums of the site activations of the right / wrong proxies (float64).
        n_right / n_wrong: Their numbers (0-d int64).
        n_items: The number of items.
    """

    name: ClassVar[str] = "activation_contrast"
    needs_correct: ClassVar[bool] = True
    scalars: ClassVar[tuple[str, ...]] = ("n_right", "n_wrong", "n_items")
    sum_right: Float[Tensor, "n_layers d_mlp"]
    sum_wrong: Float[Tensor, "n_layers d_mlp"]
    n_right: Int[Tensor, ""]
    n_wrong: Int[Tensor, ""]
    n_items: Int[Tensor, ""]

    def update(
        self,
        attributions: Float[Tensor, "items proxies n_layers d_mlp"],
        mask: Float[Tensor, "items proxies"] | None = None,
        correct: Bool[Tensor, "items proxies"] | None = None,
    ) -> None:
        check_attributions(attributions, tuple(self.sum_right.shape))
        if correct is None:
            raise ValueError(
                "activation_contrast needs whether each proxy was answered right (correct=...); kept "
                "attributions do not hold it, so its results cannot be rescored"
            )
        for i in range(attributions.shape[0]):
            for p in range(attributions.shape[1]):
                if mask is not None and not mask[i, p] > 0:
                    continue
                a = attributions[i, p].double()
                if bool(correct[i, p]):
                    self.sum_right += a
                    self.n_right += 1
                else:
                    self.sum_wrong += a
                    self.n_wrong += 1
        self.n_items += attributions.shape[0]

    def result(self) -> ReducerResult:
        right, wrong = int(self.n_right), int(self.n_wrong)
        defined = right > 0 and wrong > 0
        if defined:
            scores = (self.sum_right / right - self.sum_wrong / wrong).float()
        else:
            scores = torch.zeros(tuple(self.sum_right.shape))
            warnings.warn(
                f"activation_contrast: {right} correct and {wrong} incorrect proxies; the contrast needs "
                "both, so no neuron is selected",
                stacklevel=3,
            )
        return ReducerResult(scores, False, {"n_correct": right, "n_incorrect": wrong, "contrast_defined": defined})


__all__ = [
    "COARSE_THRESHOLD",
    "COMMON_SHARE",
    "REFINE_SHARE",
    "ActivationContrastReducer",
    "KnowledgeNeuronsReducer",
    "MeanIGReducer",
    "QRNeuronReducer",
    "cluster_and_norm",
    "coarse_sets",
    "qr_scores",
    "refined_sets",
]
