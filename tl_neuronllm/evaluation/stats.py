"""Statistics on the model's answers to multiple-choice questions: accuracy, consistent accuracy, gold
probability, percentile bootstrap intervals over items, the exact McNemar test and relative changes.

Small, exact and free of model code (numpy only), so that every stage that scores answers (identification
statistics, the testbed, the held-out evaluation) computes them the same way: :func:`accuracy_stats` is the
one accuracy implementation.

Per condition: accuracy (argmax over the options, over all proxy questions), mean gold probability
(softmax over the options), consistent accuracy (share of items answered correctly on all their proxies),
the share of proxy questions whose predicted option differs from a baseline, and the distribution of
predicted letters. Intervals are percentile bootstrap intervals over *items* (all proxies of a resampled
item travel together; the same seeded resamples for every condition, so differences are paired).

Beside them, the overlap that chance gives for two random neuron sets (:func:`chance_overlap`,
:func:`overlap_p_value`; hypergeometric), which :func:`tl_neuronllm.studies.compare` reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from torch import Tensor

from tl_neuronllm.data.tasks import LETTERS

#: Relative measures (our reading of the paper's RAC / RCC): key -> the metric they are relative changes of.
RELATIVE = {"RAC": "accuracy", "RCC": "consistent_accuracy"}
#: The metrics of a condition that the random control summarises per seed.
METRICS = ("accuracy", "gold_prob", "consistent_accuracy", "changed", "balanced_accuracy")
#: The metrics whose change against the baseline is reported (``delta``).
DELTA_METRICS = ("accuracy", "gold_prob", "consistent_accuracy", "balanced_accuracy")

Probs = Sequence[Tensor] | Sequence[Sequence[float]]


# ------------------------------------------------------------------------------------------------
# tests and intervals
# ------------------------------------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    Under the null each discordant pair goes either way with probability 1/2, so
    ``p = min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])``; ``p = 1`` when there are no
    discordant pairs.

    Raises:
        ValueError: for a negative count.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def relative_change(value: float, base: float) -> float:
    """``(value - base) / base``: the relative change of a metric against the baseline (RAC for
    accuracy, RCC for consistent accuracy, as we read the paper); ``nan`` when ``base`` is 0."""
    return (value - base) / base if base != 0 else float("nan")


def bootstrap_indices(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n_items]`` item indices drawn with replacement (seeded; shared by all conditions)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, size=(n_boot, n_items))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    indices: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(values) / sum(weights)`` over resampled items.

    Args:
        values: Per-item totals (e.g. correct proxies of the item).
        weights: Per-item denominators (e.g. its number of proxies); default 1 each (a plain mean).
        n_boot: Number of resamples (ignored when ``indices`` is given).
        ci: Coverage of the interval.
        seed: Seed of the resamples (ignored when ``indices`` is given).
        indices: Precomputed ``[n_boot, n_items]`` resample indices (pairs intervals across metrics).

    Returns:
        ``(low, high)``; ``(nan, nan)`` without items.

    Raises:
        ValueError: values and weights of different shapes, or ``ci`` outside ``(0, 1)``.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    if v.ndim != 1 or v.shape != w.shape:
        raise ValueError(f"values and weights must be 1-D of the same length, got {v.shape} and {w.shape}")
    if len(v) == 0:
        return (float("nan"), float("nan"))
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    idx = bootstrap_indices(len(v), n_boot, seed) if indices is None else indices
    stats = v[idx].sum(1) / np.maximum(w[idx].sum(1), 1e-12)
    a = (1 - ci) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return (float(lo), float(hi))


def rank_p_value(effect: float, random_effects: Sequence[float], direction: int) -> float:
    """One-sided rank p-value of an identified set's effect against the random sets' effects.

    ``(1 + #{random effects at least as far in ``direction`` as effect}) / (n + 1)``: its floor is
    ``1 / (n + 1)`` (no random set as extreme), so 5 sets can never give less than 1/6. ``nan`` without
    random sets.

    Raises:
        ValueError: ``direction`` other than +1 / -1.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    r = np.asarray(random_effects, dtype=np.float64)
    if len(r) == 0:
        return float("nan")
    return float((1 + int((direction * r >= direction * effect).sum())) / (len(r) + 1))


def balanced_accuracy(correct: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray) -> float:
    """Mean per-class recall: per gold label, the share of its questions answered right, averaged over the
    labels present (a model that always gives one answer scores ``1 / n_labels``)."""
    c = np.asarray(correct, dtype=np.float64)
    lab = np.asarray(labels)
    if len(c) == 0:
        return 0.0
    return float(np.mean([c[lab == u].mean() for u in np.unique(lab)]))


def _balanced_boot(
    correct: np.ndarray, labels: np.ndarray, item_of: np.ndarray, n_items: int, indices: np.ndarray
) -> np.ndarray:
    """Balanced accuracy of every resample of the items (``indices``: ``[n_boot, n_items]``)."""
    w = np.stack([np.bincount(row, minlength=n_items) for row in indices]).astype(np.float64)[:, item_of]
    recalls = []
    for u in np.unique(labels):
        m = labels == u
        den = w[:, m].sum(1)
        recalls.append(np.where(den > 0, (w[:, m] @ correct[m]) / np.maximum(den, 1e-12), np.nan))
    return np.nanmean(np.stack(recalls), axis=0)


def spread(values: Sequence[float]) -> dict[str, Any]:
    """``mean``, ``sd`` (``ddof=1``; 0 for one value), ``min``, ``max`` and the ``values`` themselves."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "values": [float(x) for x in v],
    }


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def chance_overlap(a: int, b: int, n: int) -> dict[str, float]:
    """Overlap of two sets of sizes ``a`` and ``b`` drawn uniformly at random from ``n`` items.

    Returns:
        ``{"expected_shared": a*b/n, "expected_jaccard": E[|A∩B| / |A∪B|]}`` (exact, hypergeometric; 0 when a
        set is empty). The tail probability is :func:`overlap_p_value`.

    Raises:
        ValueError: for sizes outside ``[0, n]``.
    """
    if not (0 <= a <= n and 0 <= b <= n) or n < 1:
        raise ValueError(f"set sizes must be in [0, n]; got a={a}, b={b}, n={n}")
    if a == 0 or b == 0:
        return {"expected_shared": 0.0, "expected_jaccard": 0.0}
    ej = 0.0
    for k in range(max(0, a + b - n), min(a, b) + 1):
        logp = _log_comb(a, k) + _log_comb(n - a, b - k) - _log_comb(n, b)
        ej += math.exp(logp) * k / (a + b - k)
    return {"expected_shared": a * b / n, "expected_jaccard": ej}


def overlap_p_value(shared: int, a: int, b: int, n: int) -> float:
    """Probability that random sets of sizes ``a`` and ``b`` among ``n`` share at least ``shared`` items
    (the upper tail of the hypergeometric distribution)."""
    lo = max(shared, 0, a + b - n)
    return float(
        min(
            1.0,
            sum(
                math.exp(_log_comb(a, k) + _log_comb(n - a, b - k) - _log_comb(n, b)) for k in range(lo, min(a, b) + 1)
            ),
        )
    )


# ------------------------------------------------------------------------------------------------
# accuracy
# ------------------------------------------------------------------------------------------------
def _outcomes(
    probs: Probs, gold: np.ndarray, item_of: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per question: predicted option, gold probability, correctness; per item: consistent correctness."""
    pred = np.array([int(np.argmax(np.asarray(p, dtype=np.float64))) for p in probs], dtype=np.int64)
    gp = np.array([float(p[g]) for p, g in zip(probs, gold)], dtype=np.float64)
    correct = (pred == gold).astype(np.float64)
    per_item = np.bincount(item_of, weights=correct, minlength=n_items)
    n_q = np.bincount(item_of, minlength=n_items)
    consistent = ((per_item == n_q) & (n_q > 0)).astype(np.float64)
    return pred, gp, correct, consistent


def accuracy_stats(
    probs: Probs,
    gold: Sequence[int] | np.ndarray,
    item_of: Sequence[int] | np.ndarray,
    n_items: int | None = None,
) -> dict[str, float]:
    """Accuracy, mean gold probability and consistent accuracy of answered questions.

    Args:
        probs: Per question, the option probabilities (argmax is the prediction; ties go to the first).
        gold: Per question, the gold option.
        item_of: Per question, its item index (``0..n_items-1``).
        n_items: Number of items (default ``max(item_of) + 1``); an item without questions is not consistent.

    Returns:
        ``{"accuracy", "gold_prob", "consistent_accuracy"}``: means over questions, and the share of items
        whose questions are all correct. All 0.0 when there are no questions.

    Raises:
        ValueError: ``probs``, ``gold`` and ``item_of`` of different lengths.
    """
    if not (len(probs) == len(gold) == len(item_of)):
        raise ValueError(f"probs, gold and item_of differ in length: {len(probs)}, {len(gold)}, {len(item_of)}")
    if len(probs) == 0:
        return {"accuracy": 0.0, "gold_prob": 0.0, "consistent_accuracy": 0.0}
    item_arr = np.asarray(item_of, dtype=np.int64)
    n = int(item_arr.max()) + 1 if n_items is None else int(n_items)
    _, gp, correct, consistent = _outcomes(probs, np.asarray(gold, dtype=np.int64), item_arr, n)
    return {
        "accuracy": float(correct.mean()),
        "gold_prob": float(gp.mean()),
        "consistent_accuracy": float(consistent.mean()),
    }


class _HasGold(Protocol):
    @property
    def gold(self) -> int: ...


def item_accuracy(queries: Sequence[Sequence[_HasGold]], probs: Sequence[Sequence[Tensor]]) -> dict[str, float]:
    """:func:`accuracy_stats` of questions grouped by item (``queries[i][p]`` answered by ``probs[i][p]``).

    Raises:
        ValueError: a different number of items, or of an item's questions and answers.
    """
    if len(queries) != len(probs):
        raise ValueError(f"{len(queries)} items of questions but {len(probs)} of answers")
    flat_p: list[Tensor] = []
    gold: list[int] = []
    item_of: list[int] = []
    for i, (qs, ps) in enumerate(zip(queries, probs)):
        if len(qs) != len(ps):
            raise ValueError(f"item {i} has {len(qs)} questions but {len(ps)} answers")
        flat_p += list(ps)
        gold += [q.gold for q in qs]
        item_of += [i] * len(qs)
    return accuracy_stats(flat_p, gold, item_of, len(queries))


# ------------------------------------------------------------------------------------------------
# one condition's answers
# ------------------------------------------------------------------------------------------------
@dataclass
class Scored:
    """Per-question and per-item outcomes of one condition (see :func:`score_predictions`).

    Attributes:
        pred: Predicted option (letter index) per question.
        gold_prob: Gold-option probability per question.
        correct: 1.0 where the prediction is the gold option.
        consistent: Per item, 1.0 when all of its questions are correct.
        changed: 1.0 where the prediction differs from the baseline's (zeros without a baseline).
        item_of: Item index of every question.
        metrics: ``accuracy``, ``gold_prob``, ``consistent_accuracy``, ``changed``, ``changed_items``,
            ``balanced_accuracy`` (mean per-class recall over the gold labels; see :func:`balanced_accuracy`).
        labels: Gold label of every question (default: its gold letter).
    """

    pred: np.ndarray
    gold_prob: np.ndarray
    correct: np.ndarray
    consistent: np.ndarray
    changed: np.ndarray
    item_of: np.ndarray
    metrics: dict[str, float]
    labels: np.ndarray | None = None

    def _item_sum(self, x: np.ndarray) -> np.ndarray:
        return np.bincount(self.item_of, weights=x.astype(np.float64), minlength=len(self.consistent))

    def item_vectors(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per metric, per-item ``(totals, denominators)`` for the bootstrap."""
        n_q = self._item_sum(np.ones(len(self.pred)))
        return {
            "accuracy": (self._item_sum(self.correct), n_q),
            "gold_prob": (self._item_sum(self.gold_prob), n_q),
            "consistent_accuracy": (self.consistent, np.ones(len(self.consistent))),
        }

    def intervals(self, indices: np.ndarray, ci: float, minus: Scored | None = None) -> dict[str, list[float]]:
        """Bootstrap intervals of the metrics (of the paired differences to ``minus``)."""
        mine = self.item_vectors()
        other = minus.item_vectors() if minus is not None else None
        out = {}
        for k, (v, w) in mine.items():
            if other is not None:
                v = v - other[k][0]
            out[k] = list(bootstrap_ci(v, w, indices=indices, ci=ci))
        if self.labels is not None:
            n = len(self.consistent)
            stats = _balanced_boot(self.correct, self.labels, self.item_of, n, indices)
            if minus is not None and minus.labels is not None:
                stats = stats - _balanced_boot(minus.correct, minus.labels, minus.item_of, n, indices)
            a = (1 - ci) / 2
            out["balanced_accuracy"] = [float(x) for x in np.nanquantile(stats, [a, 1 - a])]
        return out

    def relative_intervals(self, indices: np.ndarray, ci: float, base: Scored) -> dict[str, list[float]]:
        """Paired bootstrap intervals of RAC and RCC (:data:`RELATIVE`) against ``base``: per resample of
        the items, ``(sum here - sum base) / sum base`` (resamples whose baseline sum is 0 are left out)."""
        mine, other = self.item_vectors(), base.item_vectors()
        out: dict[str, list[float]] = {}
        a = (1 - ci) / 2
        for name, metric in RELATIVE.items():
            here, there = mine[metric][0][indices].sum(1), other[metric][0][indices].sum(1)
            ok = there > 0
            if not ok.any():
                out[name] = [float("nan"), float("nan")]
                continue
            lo, hi = np.quantile((here[ok] - there[ok]) / there[ok], [a, 1 - a])
            out[name] = [float(lo), float(hi)]
        return out

    def mcnemar(self, base: Scored, level: Literal["correct", "consistent"] = "correct") -> dict[str, float]:
        """Exact McNemar test vs ``base``: ``b`` = right there, wrong here; ``c`` = the reverse."""
        x, y = getattr(base, level), getattr(self, level)
        b = int(((x == 1) & (y == 0)).sum())
        c = int(((x == 0) & (y == 1)).sum())
        return {"b": b, "c": c, "p": mcnemar_exact(b, c)}


def score_predictions(
    probs: Probs,
    gold: Sequence[int] | np.ndarray,
    item_of: Sequence[int] | np.ndarray,
    n_items: int | None = None,
    *,
    base: Scored | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> Scored:
    """Score the option probabilities of the questions of one condition.

    Args:
        probs: Per question, the option probabilities (any length; argmax is the prediction).
        gold: Per question, the gold option.
        item_of: Per question, its item index (``0..n_items-1``).
        n_items: Number of items (default ``max(item_of) + 1``).
        base: The baseline condition, for ``changed``.
        labels: Per question, its gold label for balanced accuracy (default: the gold letter).

    Returns:
        A :class:`Scored`; accuracy and gold probability are means over questions, consistent
        accuracy over items (the same numbers as :func:`accuracy_stats`).

    Raises:
        ValueError: without questions (``n_items`` not given).
    """
    item_of = np.asarray(item_of, dtype=np.int64)
    gold = np.asarray(gold, dtype=np.int64)
    if n_items is None and len(item_of) == 0:
        raise ValueError("score_predictions needs at least one question (or n_items)")
    n_items = int(item_of.max()) + 1 if n_items is None else int(n_items)
    pred, gp, correct, consistent = _outcomes(probs, gold, item_of, n_items)
    changed = (pred != base.pred).astype(np.float64) if base is not None else np.zeros(len(pred))
    changed_items = np.bincount(item_of, weights=changed, minlength=n_items) > 0
    metrics = {
        "accuracy": float(correct.mean()),
        "gold_prob": float(gp.mean()),
        "consistent_accuracy": float(consistent.mean()),
        "changed": float(changed.mean()),
        "changed_items": float(changed_items.mean()),
    }
    lab = np.asarray(gold if labels is None else labels)
    if len(lab) != len(gold):
        raise ValueError(f"labels must have one entry per question: {len(lab)} for {len(gold)}")
    metrics["balanced_accuracy"] = balanced_accuracy(correct, lab)
    return Scored(pred, gp, correct, consistent, changed, item_of, metrics, lab)


def letter_counts(pred: Sequence[int] | np.ndarray, n_options: int) -> dict[str, int]:
    """How often each letter ``A..`` was predicted."""
    cnt = np.bincount(np.asarray(pred, dtype=np.int64), minlength=n_options)
    return {LETTERS[i]: int(cnt[i]) for i in range(n_options)}


__all__ = [
    "DELTA_METRICS",
    "METRICS",
    "RELATIVE",
    "Scored",
    "accuracy_stats",
    "balanced_accuracy",
    "bootstrap_ci",
    "bootstrap_indices",
    "chance_overlap",
    "item_accuracy",
    "letter_counts",
    "mcnemar_exact",
    "overlap_p_value",
    "rank_p_value",
    "relative_change",
    "score_predictions",
    "spread",
]
