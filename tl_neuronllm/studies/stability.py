"""How stable are the good and bad sets under resampling of the identification items?

From a result that kept its per-item attributions (``identify(..., keep_attributions=True)``) the sets
are re-formed on resamples of the identification items with :func:`tl_neuronllm.rescore` (its
``items=`` option: exactly ``identify`` on those items, no model time). Two summaries:

* **selection frequency** of every neuron: the share of resamples whose good (bad) set contains it;
* **mean Jaccard** between the sets of every pair of resamples (1: the same set every time; sets of
  ``k`` drawn at random from ``N`` neurons give about ``k / (2N - k)``).

Resamples: with ``n_items=None`` a bootstrap (``n`` items drawn with replacement from the ``n``
scored items; the scheme :func:`tl_neuronllm.explain.explainer.selection_stability` reports); with
``n_items=m < n`` subsets of ``m`` distinct items, for stability as a function of the number of
identification items (:func:`stability_curve`). Two subsets of ``m`` of ``n`` items share ``m * m / n``
items on average, so subsets larger than about ``n / 2`` agree by construction: read the curve up to
``n / 2`` and the bootstrap (about 63% distinct items per draw) for the full size.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from tl_neuronllm.validate import check_count_or_fraction, check_int

if TYPE_CHECKING:
    from tl_neuronllm.result.neuron_result import NeuronResult

STABILITY_FILE = "stability.safetensors"
STABILITY_JSON = "stability.json"
STABILITY_FORMAT = "tl_neuronllm.Stability/1"


@dataclass
class Stability:
    """Selection frequencies and set agreement over resamples of the identification items.

    Attributes:
        frequency_good: Share of resamples whose good set holds each neuron ``[n_layers, d_mlp]``.
        frequency_bad: The same for the bad sets.
        mean_jaccard_good: Mean Jaccard index between the good sets of every pair of resamples (``nan``
            when fewer than 2 resamples or every set is empty).
        mean_jaccard_bad: The same for the bad sets.
        mean_size_good / mean_size_bad: Mean set size over the resamples.
        n_items: Items per resample.
        n_scored: Identification items of the result.
        n_resamples: Number of resamples.
        replace: True for draws with replacement (bootstrap).
        seed: Seed of the draws.
        config: The scoring options (k, z, ambiguity, ...) the sets were formed with, and versions.
    """

    frequency_good: Float[Tensor, "n_layers d_mlp"]
    frequency_bad: Float[Tensor, "n_layers d_mlp"]
    mean_jaccard_good: float
    mean_jaccard_bad: float
    mean_size_good: float
    mean_size_bad: float
    n_items: int
    n_scored: int
    n_resamples: int
    replace: bool
    seed: int
    config: dict[str, Any] = field(default_factory=dict)

    def frequency(self, layer: int, neuron: int, role: str) -> float:
        """Selection frequency of one neuron in the ``"good"`` or ``"bad"`` sets.

        Raises:
            ValueError: for another role.
        """
        if role not in ("good", "bad"):
            raise ValueError(f"role must be 'good' or 'bad', got {role!r}")
        t = self.frequency_good if role == "good" else self.frequency_bad
        return float(t[layer, neuron])

    def summary(self) -> dict[str, Any]:
        """The scalar fields (no tensors), JSON-able."""
        d = {k: v for k, v in asdict(self).items() if not k.startswith("frequency_")}
        return json.loads(json.dumps(d, default=str))

    def save(self, path: str | Path) -> Path:
        """Write ``stability.safetensors`` (frequencies) and ``stability.json`` into the directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {"frequency_good": self.frequency_good.contiguous(), "frequency_bad": self.frequency_bad.contiguous()},
            str(path / STABILITY_FILE),
        )
        (path / STABILITY_JSON).write_text(json.dumps({"format": STABILITY_FORMAT, **self.summary()}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Stability:
        """Read a :class:`Stability` written by :meth:`save`.

        Raises:
            FileNotFoundError: if the files are missing.
            ValueError: for another format, or frequencies of different shapes.
        """
        path = Path(path)
        if not (path / STABILITY_FILE).exists() or not (path / STABILITY_JSON).exists():
            raise FileNotFoundError(f"{path} holds no {STABILITY_FILE} + {STABILITY_JSON}")
        meta = json.loads((path / STABILITY_JSON).read_text(encoding="utf-8"))
        if meta.pop("format", None) != STABILITY_FORMAT:
            raise ValueError(f"{path / STABILITY_JSON}: not a {STABILITY_FORMAT} file")
        t = load_file(str(path / STABILITY_FILE))
        if t["frequency_good"].shape != t["frequency_bad"].shape:
            raise ValueError(f"{path / STABILITY_FILE}: good and bad frequencies have different shapes")
        return cls(t["frequency_good"], t["frequency_bad"], **meta)


def resample_indices(
    n: int, n_items: int | None, n_resamples: int, seed: int, replace: bool | None = None
) -> tuple[list[list[int]], bool]:
    """The item indices of every resample and whether they were drawn with replacement.

    ``n_items=None`` (or ``n``) draws ``n`` items with replacement, else ``n_items`` distinct items.
    The draws of the bootstrap are those of :func:`tl_neuronllm.explain.explainer.selection_stability`.

    Raises:
        ValueError: for ``n_items`` outside ``[1, n]``, ``n_resamples < 1`` or ``replace=False`` with
            ``n_items == n`` (every resample would be the same).
    """
    check_int("n_resamples", n_resamples, min_value=1)
    m = n if n_items is None else cast(int, check_int("n_items", n_items, min_value=1))
    if m > n:
        raise ValueError(f"n_items = {m} is more than the {n} identification items the result kept")
    if replace is None:
        replace = m == n
    if not replace and m == n:
        raise ValueError(
            f"n_items = {m} distinct items of {n} give the same set every time; use replace=True or fewer items"
        )
    rng = random.Random(f"stability:{seed}")
    if replace:
        return [[rng.randrange(n) for _ in range(m)] for _ in range(n_resamples)], True
    return [sorted(rng.sample(range(n), m)) for _ in range(n_resamples)], False


def mean_pairwise_jaccard(masks: Float[Tensor, "resamples neurons"]) -> float:
    """Mean Jaccard index over all pairs of rows of a 0/1 matrix (pairs of two empty sets count 1)."""
    r = masks.shape[0]
    if r < 2:
        return float("nan")
    m = masks.double()
    inter = m @ m.T
    size = m.sum(1)
    union = size[:, None] + size[None, :] - inter
    jac = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    iu = torch.triu_indices(r, r, offset=1)
    return float(jac[iu[0], iu[1]].mean())


def stability(
    result: NeuronResult,
    *,
    n_items: int | None = None,
    n_resamples: int = 50,
    seed: int = 0,
    replace: bool | None = None,
) -> Stability:
    """Selection frequency of every neuron and mean Jaccard between resampled sets (no model time).

    Args:
        result: A result of ``identify(..., keep_attributions=True)`` (or of :func:`tl_neuronllm.rescore`).
        n_items: Items per resample; ``None`` draws all ``n`` with replacement (bootstrap).
        n_resamples: Number of resamples.
        seed: Seed of the draws.
        replace: Draw with replacement; default: only when ``n_items`` is ``None`` or ``n``.

    Returns:
        A :class:`Stability`; the sets are the result's ``k`` with its scoring options.

    Raises:
        ValueError: a result without kept attributions, or bad ``n_items`` / ``n_resamples``.
    """
    from tl_neuronllm.pipeline.rescore import rescore
    from tl_neuronllm.provenance import versions as _versions

    if result.attributions is None:
        raise ValueError("stability needs the per-item attributions: run identify(..., keep_attributions=True)")
    if result.config.get("k") is not None:  # k=0: empty sets, whose Jaccard would read 1.0
        check_count_or_fraction("the result's k", result.config.get("k"), min_count=1)
    n = int(result.attributions.shape[0])
    draws, replaced = resample_indices(n, n_items, n_resamples, seed, replace)
    L, d = result.n_layers, result.d_mlp
    masks = {role: torch.zeros(len(draws), L * d, dtype=torch.float64) for role in ("good", "bad")}
    for r, idx in enumerate(draws):
        res = rescore(result, items=idx)
        for role in ("good", "bad"):
            for x in res.neurons(role):  # type: ignore[arg-type]
                masks[role][r, x.layer * d + x.neuron] = 1.0
    c = result.config
    cfg = {key: c.get(key) for key in ("k", "z", "ambiguity", "candidates", "tau", "n_proxies", "method", "mode")}
    cfg["versions"] = _versions()
    return Stability(
        frequency_good=masks["good"].mean(0).reshape(L, d),
        frequency_bad=masks["bad"].mean(0).reshape(L, d),
        mean_jaccard_good=mean_pairwise_jaccard(masks["good"]),
        mean_jaccard_bad=mean_pairwise_jaccard(masks["bad"]),
        mean_size_good=float(masks["good"].sum(1).mean()),
        mean_size_bad=float(masks["bad"].sum(1).mean()),
        n_items=len(draws[0]),
        n_scored=n,
        n_resamples=len(draws),
        replace=replaced,
        seed=seed,
        config=cfg,
    )


def stability_curve(
    result: NeuronResult, sizes: Sequence[int], *, n_resamples: int = 30, seed: int = 0
) -> list[Stability]:
    """:func:`stability` on subsets of each size in ``sizes`` (distinct items; the full size is a bootstrap).

    Raises:
        ValueError: as :func:`stability`, naming the bad size.
    """
    n = None if result.attributions is None else int(result.attributions.shape[0])
    return [stability(result, n_items=m, n_resamples=n_resamples, seed=seed, replace=(m == n) or None) for m in sizes]


def curve_markdown(curves: dict[str, list[Stability]]) -> str:
    """A markdown table: per result name and resample size, the mean Jaccard of the good and bad sets and
    the number of neurons selected in at least 80% of the resamples."""
    lines = [
        "| task | items per resample | resamples | draw | mean Jaccard good | mean Jaccard bad | "
        "good neurons with frequency >= 0.8 | bad neurons with frequency >= 0.8 |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, curve in curves.items():
        for s in curve:
            lines.append(
                f"| {name} | {s.n_items} of {s.n_scored} | {s.n_resamples} | "
                f"{'bootstrap' if s.replace else 'subsets'} | {s.mean_jaccard_good:.3f} | "
                f"{s.mean_jaccard_bad:.3f} | {int((s.frequency_good >= 0.8).sum())} | "
                f"{int((s.frequency_bad >= 0.8).sum())} |"
            )
    return "\n".join(lines) + "\n"


__all__ = ["Stability", "curve_markdown", "mean_pairwise_jaccard", "resample_indices", "stability", "stability_curve"]
