"""Paired, corrected comparisons of methods on the same held-out items (issue 21, part 4).

Every method is evaluated on the **same** held-out items, at the **same** K (:func:`compare_methods` re-selects
each result's top-K with ``NeuronResult.with_k``), and the effect of a condition is taken per item: the item's
mean gold probability (or share of correct answers) under the condition minus under the baseline
(``EvalResult.per_item``). Two methods are then compared by a **paired bootstrap** of the per-item differences
of their effects (:func:`paired_bootstrap`: one set of seeded resample indices over the items, shared by every
comparison of a table), not by whether two independent intervals overlap. The p-values of all comparisons in
one verdict table are **Holm**-corrected (:func:`holm`); a comparison is a ``"win"`` (the method's effect is
larger in the expected direction), a ``"loss"`` or a ``"tie"`` at the corrected level ``alpha``, and
``"negligible"`` when it is significant but the mean difference is smaller than ``min_diff`` (default 0.005: half a
point of gold probability, or one item in 200 for ``metric="correct"``): two nearly identical sets (``mean_ig``
beside ACE shares 99% of its neurons on BoolQ) differ on every item by about 1e-12, which a paired bootstrap calls
significant and no reader would call a win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from jaxtyping import Float

from tl_neuronllm.data.tasks import Item, Task
from tl_neuronllm.errors import ConfigError
from tl_neuronllm.evaluation.conditions import EXPECTED_DIRECTION
from tl_neuronllm.evaluation.eval_result import EvalResult
from tl_neuronllm.evaluation.evaluate import evaluate
from tl_neuronllm.evaluation.stats import bootstrap_indices
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.result.neuron_result import NeuronResult

#: Per-item metrics of ``EvalResult.per_item`` a comparison can use.
PER_ITEM_METRICS = ("gold_prob", "correct")


@dataclass(frozen=True)
class PairedTest:
    """A paired bootstrap of per-item differences ``a - b``.

    Attributes:
        mean: Mean of the per-item differences.
        ci: Percentile interval of the resampled means.
        p: Two-sided bootstrap p-value ``min(1, 2 (1 + #{resampled means on the far side of 0}) / (n + 1))``.
        n_items: Items compared.
    """

    mean: float
    ci: tuple[float, float]
    p: float
    n_items: int


def paired_bootstrap(
    per_item_a: Sequence[float] | np.ndarray,
    per_item_b: Sequence[float] | np.ndarray,
    n: int = 2000,
    seed: int = 0,
    *,
    ci: float = 0.95,
) -> PairedTest:
    """Paired bootstrap of ``mean(a - b)`` over items: the items are resampled with the seeded indices of
    :func:`tl_neuronllm.evaluation.stats.bootstrap_indices` (the same for every pair compared with the same
    ``n``, ``seed`` and number of items), and ``a`` and ``b`` of an item always travel together.

    Raises:
        ValueError: ``a`` and ``b`` of different lengths or empty, ``n < 1``, ``ci`` outside (0, 1).
    """
    a = np.asarray(per_item_a, dtype=np.float64)
    b = np.asarray(per_item_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"per-item values must be two 1-D arrays of one non-zero length, got {a.shape} and {b.shape}")
    if n < 1:
        raise ValueError(f"n must be >= 1 resamples, got {n}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    d = a - b
    means = d[bootstrap_indices(len(d), n, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    far = min(int((means <= 0).sum()), int((means >= 0).sum()))
    p = min(1.0, 2 * (1 + far) / (n + 1))
    return PairedTest(float(d.mean()), (float(lo), float(hi)), float(p), len(d))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (in the given order): sorted ascending, the ``j``-th (from 0) of ``m`` becomes
    ``max_{i <= j} min(1, (m - i) * p_(i))``; ``nan`` entries stay ``nan`` and do not count in ``m``."""
    p = np.asarray(p_values, dtype=np.float64)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), np.nan)
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out.tolist()


@dataclass
class Comparison:
    """One row of a verdict table: ``method`` against ``reference`` on one condition.

    Attributes:
        condition: The intervention (a key of :data:`~tl_neuronllm.evaluation.conditions.INTERVENTIONS`).
        method / reference: The compared methods' names.
        effect / reference_effect: Mean per-item effect (condition minus baseline) of each.
        diff: Mean per-item difference of the effects, signed so that > 0 favours ``method`` (the expected
            direction of the condition); ``ci`` its paired bootstrap interval.
        p / p_holm: Bootstrap p-value and its Holm correction across the table.
        verdict: ``"win"``, ``"loss"`` or ``"tie"`` for ``method`` at the corrected level; ``"negligible"``
            when significant but ``|diff|`` is below the table's ``min_diff``.
    """

    condition: str
    method: str
    reference: str
    effect: float
    reference_effect: float
    diff: float
    ci: tuple[float, float]
    p: float
    p_holm: float = float("nan")
    verdict: str = "tie"


@dataclass
class VerdictTable:
    """Paired, Holm-corrected comparisons of methods on the same held-out items.

    Attributes:
        metric: ``"gold_prob"`` or ``"correct"``.
        k: The common set size (``None`` when each result kept its own).
        n_items: Held-out items.
        alpha: The corrected level of the verdicts.
        rows: The comparisons.
        min_diff: Smallest ``|diff|`` called a win or a loss.
        evaluations: Method -> its :class:`EvalResult` (when :func:`compare_methods` ran them).
    """

    metric: str
    k: int | float | None
    n_items: int
    alpha: float
    rows: list[Comparison] = field(default_factory=list)
    evaluations: dict[str, EvalResult] = field(default_factory=dict)
    min_diff: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (without the evaluations)."""
        return {
            "metric": self.metric,
            "k": self.k,
            "n_items": self.n_items,
            "alpha": self.alpha,
            "min_diff": self.min_diff,
            "rows": [asdict(r) for r in self.rows],
        }

    def to_markdown(self) -> str:
        """The table as markdown."""
        head = "| condition | method | vs | effect | vs effect | diff [95% CI] | p | Holm p | verdict |"
        lines = [head, "|" + "---|" * 9]
        for r in self.rows:
            lines.append(
                f"| {r.condition} | {r.method} | {r.reference} | {r.effect:+.4f} | {r.reference_effect:+.4f} | "
                f"{r.diff:+.4f} [{r.ci[0]:+.4f}, {r.ci[1]:+.4f}] | {r.p:.3g} | {r.p_holm:.3g} | {r.verdict} |"
            )
        return "\n".join(lines) + "\n"


def item_effects(ev: EvalResult, condition: str, metric: str = "gold_prob") -> Float[np.ndarray, " items"] | None:
    """Per item: ``metric`` under ``condition`` minus under the baseline (``None`` for an n/a condition).

    Raises:
        ConfigError: an evaluation without per-item values, or an unknown metric.
    """
    if metric not in PER_ITEM_METRICS:
        raise ConfigError(f"metric must be one of {PER_ITEM_METRICS}, got {metric!r}")
    conds = ev.per_item.get("conditions") if ev.per_item else None
    if not conds:
        raise ConfigError(f"evaluation of task {ev.task!r} has no per-item values; evaluate it again with this version")
    if condition not in conds:
        return None
    return np.asarray(conds[condition][metric]) - np.asarray(conds["baseline"][metric])


def paired_table(
    evaluations: Mapping[str, EvalResult],
    reference: str | Mapping[str, str],
    *,
    conditions: Sequence[str] = tuple(EXPECTED_DIRECTION),
    metric: str = "gold_prob",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    k: int | float | None = None,
    min_diff: float = 0.005,
) -> VerdictTable:
    """Every method against ``reference`` on every condition, paired over items, Holm-corrected across the table.

    ``reference`` is one method every other is compared with, or a mapping method -> its own reference (e.g. a
    baseline that selects fewer than K neurons against the default at the baseline's size); then only those
    pairs are compared, Holm-corrected together. A significant comparison whose mean difference is below
    ``min_diff`` is ``"negligible"``, not a win or a loss.

    Raises:
        ConfigError: an unknown reference or method, evaluations of different held-out items, missing per-item
            values, a negative ``min_diff``.
    """
    if not min_diff >= 0:
        raise ConfigError(f"min_diff must be >= 0, got {min_diff!r}")
    if isinstance(reference, str):
        pairs = {name: reference for name in evaluations if name != reference}
        first = reference
    else:
        pairs = dict(reference)
        if not pairs:
            raise ConfigError("reference mapping is empty: give method -> reference pairs")
        first = next(iter(pairs.values()))
    for name in [first, *pairs.values(), *pairs]:
        if name not in evaluations:
            role = "reference" if name == first or name in pairs.values() else "method"
            raise ConfigError(f"{role} {name!r} is not among the evaluations {sorted(evaluations)}")
    ids = {name: tuple(ev.per_item.get("item_ids", ())) for name, ev in evaluations.items()}
    if len(set(ids.values())) != 1:
        other = next(n for n in ids if ids[n] != ids[first])
        raise ConfigError(f"evaluations {first!r} and {other!r} are on different held-out items; pair them on the same")
    rows: list[Comparison] = []
    for cond in conditions:
        sign = EXPECTED_DIRECTION[cond]
        for name, ref_name in pairs.items():
            ref = item_effects(evaluations[ref_name], cond, metric)
            eff = item_effects(evaluations[name], cond, metric)
            if ref is None or eff is None:
                continue
            t = paired_bootstrap(sign * eff, sign * ref, n_boot, seed)
            rows.append(Comparison(cond, name, ref_name, float(eff.mean()), float(ref.mean()), t.mean, t.ci, t.p))
    for r, ph in zip(rows, holm([r.p for r in rows])):
        r.p_holm = ph
        if not ph < alpha:
            r.verdict = "tie"
        elif abs(r.diff) < min_diff:
            r.verdict = "negligible"
        else:
            r.verdict = "win" if r.diff > 0 else "loss"
    n_items = len(ids[first])
    return VerdictTable(metric, k, n_items, alpha, rows, dict(evaluations), min_diff)


def compare_methods(
    model: HookedModel,
    results: Mapping[str, NeuronResult],
    heldout: Task,
    *,
    k: int | float | None,
    reference: str,
    demos: Task | Sequence[Item] | None = None,
    metric: str = "gold_prob",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    min_diff: float = 0.005,
    progress: bool = False,
    **eval_options: Any,
) -> VerdictTable:
    """Evaluate every result on the same held-out items at the same ``k`` (each re-selected with
    ``NeuronResult.with_k``; ``None`` keeps each result's own sets) and compare them with :func:`paired_table`.

    Args:
        model, heldout, demos: As for :func:`tl_neuronllm.evaluate` (give the identification run's demos).
        results: Method name -> its result on the same identification items.
        k: The common set size.
        reference: The method every other is compared with.
        metric, n_boot, seed, alpha: As for :func:`paired_table`.
        **eval_options: Options of :func:`tl_neuronllm.evaluate` (``n_random``, ``random_match``, ...).

    Raises:
        ConfigError: as :func:`paired_table`; the errors of :func:`tl_neuronllm.evaluate`.
    """
    if reference not in results:
        raise ConfigError(f"reference {reference!r} is not among the results {sorted(results)}")
    evals = {
        name: evaluate(model, r, heldout, demos=demos, k=k, progress=progress, **eval_options)
        for name, r in results.items()
    }
    return paired_table(evals, reference, metric=metric, n_boot=n_boot, seed=seed, alpha=alpha, k=k, min_diff=min_diff)


__all__ = [
    "PER_ITEM_METRICS",
    "Comparison",
    "PairedTest",
    "VerdictTable",
    "compare_methods",
    "holm",
    "item_effects",
    "paired_bootstrap",
    "paired_table",
]
