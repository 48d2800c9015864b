"""The streaming ACE score: per-item candidate sets, ambiguity filter, task score, good/bad top-K.

Per item ``j`` the proxy attributions are summed, ``ES_j = sum_p IG_{j,p}`` (``[n_layers, d_mlp]``).
Per item candidate sets: ``G_j`` = the neurons with the largest positive ``ES_j``, ``B_j`` = the most
negative (``candidates="topk"``: the top ``z`` of each sign, default ``z`` = 1% of all neurons;
``candidates="threshold"``: ``|ES_j| >= tau * max|ES_j|``). A neuron is *ambiguous* if it is a good
candidate for some items and a bad one for others (``ambiguity=0.0``, strict); with ``ambiguity=rho``
it is dropped only when the minority sign holds at least ``rho`` of its memberships; ``None``
turns the filter off. The task score is

    ACE(w) = 1[w not ambiguous] * (1/N) * sum_j 1[w in G_j or B_j] * ES_j(w)

Everything is a streaming reduction over items kept in :class:`ACEState` (``O(n_layers*d_mlp)``
memory whatever the number of items): ``S = sum_j 1[w in G_j u B_j] ES_j``, the counts of positive
and negative memberships, ``N``, and the sum and sum of squares of ``ES_j`` (for means and stds).
States of different shards merge by addition, which is how the multi-process path all-reduces.
"""

# pyright: strict

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.validate import check_choice, check_count_or_fraction, check_float


@dataclass(frozen=True)
class ScoringConfig:
    """How per-item candidate sets and the ambiguity filter are formed.

    Attributes:
        candidates: ``"topk"`` (top ``z`` per sign per item) or ``"threshold"`` (``|ES| >= tau*max|ES|``).
        z: Per-item candidate count: an int, or a fraction (< 1) of all neurons. Default 10% (the method's
            value is 1%).
        tau: Relative threshold for ``candidates="threshold"``.
        ambiguity: ``0.0`` strict (any neuron both good and bad candidate is dropped), ``rho`` in
            (0, 0.5] drops it only when the minority sign has at least ``rho`` of its memberships,
            ``None`` (default) disables the filter; the method's value is ``0.0``. The defaults are the setting
            cross-validation chose wherever the model has the skill (README, "Cross-validated selection on
            SmolLM2").
    """

    candidates: Literal["topk", "threshold"] = "topk"
    z: float = 0.1
    tau: float = 0.2
    ambiguity: float | None = None

    def __post_init__(self) -> None:
        check_choice("candidates", self.candidates, ("topk", "threshold"))
        object.__setattr__(self, "z", check_count_or_fraction("z", self.z, min_count=1))
        object.__setattr__(self, "tau", check_float("tau", self.tau, low=0, high=1, low_open=True))
        object.__setattr__(
            self, "ambiguity", check_float("ambiguity", self.ambiguity, low=0, high=0.5, allow_none=True)
        )

    def z_count(self, n_neurons: int) -> int:
        """Per-item candidate count for a model with ``n_neurons`` neurons."""
        k = int(round(self.z * n_neurons)) if isinstance(self.z, float) else int(self.z)
        return max(1, min(k, n_neurons))


def candidate_masks(
    es: Float[Tensor, "items n_layers d_mlp"], cfg: ScoringConfig
) -> tuple[Float[Tensor, "items n_layers d_mlp"], Float[Tensor, "items n_layers d_mlp"]]:
    """Per-item good (``G_j``) and bad (``B_j``) candidate masks as 0/1 float tensors."""
    _, L, d = es.shape
    flat = einops.rearrange(es, "i l d -> i (l d)")
    if cfg.candidates == "topk":
        k = cfg.z_count(L * d)
        g = torch.zeros_like(flat)
        b = torch.zeros_like(flat)
        top_v, top_i = flat.topk(k, dim=1)
        bot_v, bot_i = (-flat).topk(k, dim=1)
        g.scatter_(1, top_i, (top_v > 0).to(flat.dtype))
        b.scatter_(1, bot_i, (bot_v > 0).to(flat.dtype))
    else:
        thr = cfg.tau * flat.abs().amax(dim=1, keepdim=True)
        nz = thr > 0
        g = ((flat >= thr) & (flat > 0) & nz).to(flat.dtype)
        b = ((-flat >= thr) & (flat < 0) & nz).to(flat.dtype)
    shape = dict(l=L, d=d)
    return (einops.rearrange(g, "i (l d) -> i l d", **shape), einops.rearrange(b, "i (l d) -> i l d", **shape))


@dataclass
class ACEState:
    """Streaming sufficient statistics of the ACE score (all ``[n_layers, d_mlp]`` but ``n_items``).

    Attributes:
        sum_member: ``sum_j 1[w in G_j u B_j] * ES_j(w)`` (float64).
        n_good: Number of items with ``w in G_j`` (int64).
        n_bad: Number of items with ``w in B_j`` (int64).
        sum_es: ``sum_j ES_j(w)`` (float64), for means.
        sumsq_es: ``sum_j ES_j(w)^2`` (float64), for standard deviations.
        n_items: Number of items N (a 0-d int64 tensor).
    """

    sum_member: Float[Tensor, "n_layers d_mlp"]
    n_good: Int[Tensor, "n_layers d_mlp"]
    n_bad: Int[Tensor, "n_layers d_mlp"]
    sum_es: Float[Tensor, "n_layers d_mlp"]
    sumsq_es: Float[Tensor, "n_layers d_mlp"]
    n_items: Int[Tensor, ""]

    @classmethod
    def zeros(cls, n_layers: int, d_mlp: int) -> ACEState:
        f = lambda: torch.zeros(n_layers, d_mlp, dtype=torch.float64)
        i = lambda: torch.zeros(n_layers, d_mlp, dtype=torch.int64)
        return cls(f(), i(), i(), f(), f(), torch.zeros((), dtype=torch.int64))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.sum_member.shape)  # type: ignore[return-value]

    def update(
        self,
        ig: Float[Tensor, "items proxies n_layers d_mlp"],
        cfg: ScoringConfig,
        proxy_mask: Float[Tensor, "items proxies"] | None = None,
    ) -> Float[Tensor, "items n_layers d_mlp"]:
        """Add a batch of items' proxy attributions; returns their ``ES_j``."""
        if ig.ndim != 4 or tuple(ig.shape[2:]) != self.shape:
            raise ValueError(
                f"expected attributions [items, proxies, {self.shape[0]}, {self.shape[1]}], got {tuple(ig.shape)}"
            )
        ig = ig.to(torch.float64)
        if proxy_mask is None:
            proxy_mask = torch.ones(ig.shape[:2], dtype=torch.float64)
        es = einops.einsum(ig, proxy_mask.to(torch.float64), "i p l d, i p -> i l d")
        g, b = candidate_masks(es, cfg)
        member = (g + b).clamp(max=1)
        self.sum_member += einops.einsum(member, es, "i l d, i l d -> l d")
        self.n_good += g.sum(0).to(torch.int64)
        self.n_bad += b.sum(0).to(torch.int64)
        self.sum_es += es.sum(0)
        self.sumsq_es += (es * es).sum(0)
        self.n_items += es.shape[0]
        return es

    def merge(self, other: ACEState) -> ACEState:
        """The state of the union of two disjoint item shards."""
        if other.shape != self.shape:
            raise ValueError(f"cannot merge states of shapes {self.shape} and {other.shape}")
        return ACEState(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def tensors(self) -> dict[str, Tensor]:
        """The state as named tensors (for saving, resuming and all-reduce)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> ACEState:
        return cls(**{f.name: t[f.name].clone() for f in fields(cls)})

    def ambiguous(self, rho: float | None) -> Float[Tensor, "n_layers d_mlp"]:
        """Boolean mask of neurons dropped by the ambiguity filter."""
        if rho is None:
            return torch.zeros(self.shape, dtype=torch.bool)
        minority = torch.minimum(self.n_good, self.n_bad)
        total = self.n_good + self.n_bad
        amb = minority > 0
        if rho > 0:
            amb &= minority.double() >= rho * total.double()
        return amb

    def ace(self, rho: float | None = 0.0) -> Float[Tensor, "n_layers d_mlp"]:
        """The ACE task score (float32)."""
        n = int(self.n_items)
        if n == 0:
            raise ValueError("no items have been scored")
        score = self.sum_member / n
        score = torch.where(self.ambiguous(rho), torch.zeros_like(score), score)
        return score.to(torch.float32)

    def es_mean_std(self) -> tuple[Float[Tensor, "n_layers d_mlp"], Float[Tensor, "n_layers d_mlp"]]:
        """Mean and (population) standard deviation of ``ES_j`` over items."""
        n = max(int(self.n_items), 1)
        mean = self.sum_es / n
        var = (self.sumsq_es / n - mean * mean).clamp(min=0)
        return mean.to(torch.float32), var.sqrt().to(torch.float32)


def select(
    scores: Float[Tensor, "n_layers d_mlp"], k: int | float, sign: Literal[1, -1]
) -> list[tuple[int, int, float]]:
    """Top-``k`` neurons by ``sign * score`` with ``sign * score > 0``, as ``(layer, neuron, score)``.

    ``k`` is an int count, or a float fraction in (0, 1) of all neurons.

    Raises:
        ValueError: for any other ``k`` (see :func:`tl_neuronllm.validate.check_count_or_fraction`).
    """
    n = scores.numel()
    k = check_count_or_fraction("k", k, min_count=1)  # k=0 would be two empty sets
    kk = min(int(round(k * n)) if isinstance(k, float) else k, n)
    flat = (sign * scores).flatten()
    vals, idx = flat.topk(kk) if kk else (flat[:0], flat[:0].long())
    d = scores.shape[1]
    return [(int(i) // d, int(i) % d, float(sign * v)) for v, i in zip(vals, idx) if v > 0]
