"""Peer methods as scoring variants of the same harness (same proxies, prompts and budget).

Each baseline maps the tokenized proxies ``[item][proxy]`` to a ``[n_layers, d_mlp]`` score
tensor; :func:`tl_neuronllm.identify` ranks it like ACE (``identify(model, task, method="qr_neuron")``).
Positive-only methods (QR-Neuron, knowledge neurons) return no negative scores, so their bad set is
empty (report it as n/a). The IG baselines use the same exact prefix-cache IG as the method
(:func:`~tl_neuronllm.attribution.ig_fast`, ``cfg.steps`` steps, ``cfg.ig_rule``) but attribute the
gold option's probability under the full vocabulary (``target="vocab_prob"``), as the original
papers do. Every baseline records its wall time in ``info["baseline_seconds"]``.

* ``"qr_neuron"`` (Chen, Dejl, Toni 2024, arXiv 2406.10868). Per proxy ``p`` of item ``j``:
  ``IG_{j,p}``; coarse set ``S_{j,p} = {w : IG_{j,p}(w) > t * max_w IG_{j,p}(w)}`` (``t = 0.2``).
  Cluster of the item (the query): ``C_j = U_p S_{j,p}``. Normalised attribution
  ``A_j = mean_p IG_{j,p} / max_w mean_p IG_{j,p}``. Inverse cluster frequency
  ``icf(w) = log(N / (n_w + 1))`` with ``N`` clusters and ``n_w`` the clusters holding ``w``.
  Neurons in more than 30% of the clusters are *common* and dropped. Task score
  ``(1/N) sum_j 1[w in C_j] * max(A_j(w), 0) * icf(w)`` (0 for common neurons). Note that with
  few items (``N <= 3``) every clustered neuron is common.
* ``"knowledge_neurons"`` (Dai et al. 2022). Per proxy: the same coarse sets on the gold
  probability's IG; refined set of the item ``R_j = {w : #{p : w in S_{j,p}} >= 0.5 * P_j}``
  (shared by at least half of the item's prompts). Task score
  ``(1/N) sum_j 1[w in R_j] * max(mean_p IG_{j,p}(w), 0)``: the attribution-weighted frequency of
  ``w`` among the items' refined sets, which ranks neurons refined for more items (and, among
  those, more strongly attributed) first.
* ``"activation_contrast"``: mean site activation over the correctly answered proxies minus the
  mean over the incorrectly answered ones (argmax over the options, clean run). Signed: positive
  scores are neurons more active when the model is right. With no wrong (or no right) proxy the
  contrast is undefined; the scores are then zero (nothing is selected) and
  ``info["contrast_defined"]`` is False.

``grad_x_act`` (attribution patching) is ``identify(method="grad_x_act")`` and the random control
with matched per-layer counts lives in the evaluation, so neither is repeated here.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .adapter import ModelAdapter
from .answers import Query
from .attribution import grad_x_act, ig_fast

#: Coarse threshold of QR-Neuron and knowledge neurons (fraction of the per-prompt maximum).
COARSE_THRESHOLD = 0.2
#: QR-Neuron: neurons in more than this share of the clusters are common and dropped.
COMMON_SHARE = 0.3
#: Knowledge neurons: a neuron is refined when it is coarse in at least this share of an item's prompts.
REFINE_SHARE = 0.5


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
    """Register ``fn(adapter, queries, cfg, *, progress) -> BaselineOutput`` under ``name``."""

    def deco(fn: BaselineFn) -> BaselineFn:
        BASELINES[name] = fn
        return fn

    return deco


def run_baseline(
    name: str, adapter: ModelAdapter, queries: Sequence[Sequence[Query]], cfg: Any, *, progress: bool = True
) -> BaselineOutput:
    """Run the baseline ``name`` on tokenized proxies with the options in ``cfg`` (an IdentifyConfig)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    t0 = time.perf_counter()
    out = BASELINES[name](adapter, queries, cfg, progress=progress)
    out.info.setdefault("baseline_seconds", time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------------------------
# shared pieces
# ------------------------------------------------------------------------------------------------
def _items(queries: Sequence[Sequence[Query]], progress: bool, desc: str) -> Iterable[tuple[int, Sequence[Query]]]:
    it: Iterable[tuple[int, Sequence[Query]]] = enumerate(queries)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(queries), desc=desc, unit="item")
    return it


def gold_prob_ig(
    adapter: ModelAdapter, queries: Sequence[Sequence[Query]], cfg: Any, *, progress: bool = False, desc: str = "IG"
) -> Iterable[tuple[int, Float[Tensor, "proxies n_layers d_mlp"], list[Tensor], Tensor]]:
    """Per item: IG of the gold option's full-vocabulary probability for each proxy.

    Yields ``(item index, ig [P, n_layers, d_mlp], clean option probs per proxy, site activation sum)``.
    """
    for j, qs in _items(queries, progress, desc):
        igs, probs = [], []
        act = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float64)
        for q in qs:
            s, pr, a = ig_fast(
                adapter,
                q,
                steps=cfg.steps,
                rule=cfg.ig_rule,
                target="vocab_prob",
                layers=cfg.layers,
                chunk_rows=cfg.chunk_rows,
                memory_budget_mb=cfg.memory_budget_mb,
            )
            igs.append(s)
            probs.append(pr)
            act += a.double()
        yield j, torch.stack(igs), probs, act


def coarse_sets(
    ig: Float[Tensor, "proxies n_layers d_mlp"], threshold: float = COARSE_THRESHOLD
) -> Bool[Tensor, "proxies n_layers d_mlp"]:
    """Per prompt: neurons whose attribution exceeds ``threshold`` times that prompt's maximum
    (empty when the maximum is not positive)."""
    mx = ig.flatten(1).amax(dim=1).view(-1, *([1] * (ig.ndim - 1)))
    return (ig > threshold * mx) & (mx > 0)


def qr_neuron_scores(
    igs: Sequence[Float[Tensor, "proxies n_layers d_mlp"]],
    *,
    threshold: float = COARSE_THRESHOLD,
    common_share: float = COMMON_SHARE,
) -> tuple[Float[Tensor, "n_layers d_mlp"], dict[str, Any]]:
    """QR-Neuron task scores from per-item proxy attributions (see the module docstring)."""
    if not igs:
        raise ValueError("no items to score")
    N = len(igs)
    clusters, norm = [], []
    for ig in igs:
        clusters.append(coarse_sets(ig, threshold).any(dim=0))
        mean = ig.double().mean(dim=0)
        mx = float(mean.max())
        norm.append((mean / mx).clamp(min=0) if mx > 0 else torch.zeros_like(mean))
    member = torch.stack(clusters)  # [N, L, d]
    n_w = member.sum(dim=0)
    common = n_w.double() > common_share * N
    icf = torch.log(torch.tensor(float(N), dtype=torch.float64) / (n_w.double() + 1))
    score = (member.double() * torch.stack(norm)).sum(dim=0) * icf / N
    score = torch.where(common | (n_w == 0), torch.zeros_like(score), score).clamp(min=0)
    info = {
        "n_clusters": N,
        "mean_cluster_size": float(member.sum(dim=(1, 2)).double().mean()),
        "n_clustered": int((n_w > 0).sum()),
        "n_common_dropped": int((common & (n_w > 0)).sum()),
    }
    return score.float(), info


def knowledge_neuron_scores(
    igs: Sequence[Float[Tensor, "proxies n_layers d_mlp"]],
    *,
    threshold: float = COARSE_THRESHOLD,
    refine_share: float = REFINE_SHARE,
) -> tuple[Float[Tensor, "n_layers d_mlp"], dict[str, Any]]:
    """Knowledge-neuron task scores from per-item proxy attributions (see the module docstring)."""
    if not igs:
        raise ValueError("no items to score")
    total = None
    sizes = []
    for ig in igs:
        P = ig.shape[0]
        count = coarse_sets(ig, threshold).sum(dim=0)
        refined = count >= math.ceil(refine_share * P - 1e-9)
        refined &= count > 0
        sizes.append(int(refined.sum()))
        contrib = refined.double() * ig.double().mean(dim=0).clamp(min=0)
        total = contrib if total is None else total + contrib
    assert total is not None
    score = (total / len(igs)).float()
    info = {"mean_refined_size": sum(sizes) / len(sizes), "n_refined_any": int((score > 0).sum())}
    return score, info


# ------------------------------------------------------------------------------------------------
# registered baselines
# ------------------------------------------------------------------------------------------------
def _gold_ig_baseline(
    name: str,
    scores_fn: Callable[[list[Tensor]], tuple[Tensor, dict[str, Any]]],
    adapter: ModelAdapter,
    queries: Sequence[Sequence[Query]],
    cfg: Any,
    progress: bool,
) -> BaselineOutput:
    """The positive-only baselines built on the IG of the gold answer's probability: collect every item's
    ``[P, n_layers, d_mlp]`` IG, then score them with ``scores_fn``."""
    igs: list[Tensor] = []
    probs: list[list[Tensor]] = []
    act_sum = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float64)
    for _, ig, pr, act in gold_prob_ig(adapter, queries, cfg, progress=progress, desc=f"{name} ({len(queries)} items)"):
        igs.append(ig)
        probs.append(pr)
        act_sum += act
    scores, info = scores_fn(igs)
    return BaselineOutput(scores, act_sum, probs, positive_only=True, info=info)


@register("qr_neuron")
def qr_neuron(
    adapter: ModelAdapter, queries: Sequence[Sequence[Query]], cfg: Any, *, progress: bool = True
) -> BaselineOutput:
    """QR-Neuron: coarse IG sets, per-query clusters, inverse cluster frequency, common neurons dropped."""
    return _gold_ig_baseline("qr_neuron", qr_neuron_scores, adapter, queries, cfg, progress)


@register("knowledge_neurons")
def knowledge_neurons(
    adapter: ModelAdapter, queries: Sequence[Sequence[Query]], cfg: Any, *, progress: bool = True
) -> BaselineOutput:
    """Knowledge neurons: coarse IG sets refined to the neurons shared by at least half of an item's prompts."""
    return _gold_ig_baseline("knowledge_neurons", knowledge_neuron_scores, adapter, queries, cfg, progress)


@register("activation_contrast")
def activation_contrast(
    adapter: ModelAdapter, queries: Sequence[Sequence[Query]], cfg: Any, *, progress: bool = True
) -> BaselineOutput:
    """Mean site activation on correctly answered proxies minus that on incorrectly answered ones."""
    t0 = time.perf_counter()
    flat = [(j, q) for j, qs in enumerate(queries) for q in qs]
    L, d = adapter.n_layers, adapter.d_mlp
    sums = {True: torch.zeros(L, d, dtype=torch.float64), False: torch.zeros(L, d, dtype=torch.float64)}
    counts = {True: 0, False: 0}
    probs: list[list[Tensor]] = [[] for _ in queries]
    act_sum = torch.zeros(L, d, dtype=torch.float64)
    step = max(1, cfg.batch_size * 8)
    starts: Iterable[int] = range(0, len(flat), step)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(
            starts, total=math.ceil(len(flat) / step), desc=f"activation_contrast ({len(queries)} items)", unit="batch"
        )
    for b in starts:
        chunk = flat[b : b + step]
        _, pr, acts = grad_x_act(
            adapter,
            [q for _, q in chunk],
            target=cfg.target,
            layers=cfg.layers,
            batch_size=cfg.batch_size,
            with_grad=False,
        )
        for (j, q), p, a in zip(chunk, pr, acts):
            ok = int(p.argmax()) == q.gold
            sums[ok] += a.double()
            counts[ok] += 1
            probs[j].append(p)
            act_sum += a.double()
    defined = counts[True] > 0 and counts[False] > 0
    if defined:
        scores = (sums[True] / counts[True] - sums[False] / counts[False]).float()
    else:
        scores = torch.zeros(L, d)
        warnings.warn(
            f"activation_contrast: {counts[True]} correct and {counts[False]} incorrect proxies; the contrast needs "
            "both, so no neuron is selected",
            stacklevel=2,
        )
    info = {
        "n_correct": counts[True],
        "n_incorrect": counts[False],
        "contrast_defined": defined,
        "baseline_seconds": time.perf_counter() - t0,
    }
    return BaselineOutput(scores, act_sum, probs, positive_only=False, info=info)
