"""The steps of :func:`tl_neuronllm.evaluation.evaluate.evaluate_many`: the disjointness check, the held-out
questions (:class:`Questions`), the rows of every condition (identified and random neurons), the per-item values,
the controls' rows, the facts about the evaluated result, and which conditions of several results run once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.data.tasks import LETTERS, Item, Task, TaskError
from tl_neuronllm.data.tasks.balance import is_classification
from tl_neuronllm.evaluation.conditions import (
    EXPECTED_DIRECTION,
    INTERVENTIONS,
    PAPER_NAMES,
    Condition,
    ConditionPlan,
)
from tl_neuronllm.evaluation.controls import control_row, item_values
from tl_neuronllm.evaluation.eval_result import EvalRow
from tl_neuronllm.evaluation.stats import (
    DELTA_METRICS,
    METRICS,
    RELATIVE,
    Scored,
    bootstrap_indices,
    letter_counts,
    rank_p_value,
    relative_change,
    score_predictions,
    spread,
)
from tl_neuronllm.model.answers import ProxyPrompt
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.pipeline.prepare import Prepared, prepare
from tl_neuronllm.result.neuron_result import NeuronResult


def check_disjoint(result: NeuronResult, heldout: Task, demo_items: Sequence[Item]) -> None:
    """Refuse held-out items that are identification items or demonstrations (:class:`TaskError`)."""
    tcfg = result.config.get("task", {})
    if "item_keys" in tcfg:  # by content: the same question under another id or option order is caught
        keys = set(tcfg["item_keys"])
        clash = [it.id for it in heldout.items if it.content_key() in keys]
        what = "is an identification item (same context, question and options)"
    else:  # results saved before item_keys existed: only the ids are known
        scored_ids = set(map(str, tcfg.get("item_ids", [])))
        clash = [it.id for it in heldout.items if it.id in scored_ids]
        what = "has the id of an identification item (this result predates content keys)"
    if clash:
        raise TaskError(
            f"held-out item {clash[0]!r} ({len(clash)} in all) {what}; evaluate on items the neurons were not "
            "identified on (Task.split gives disjoint splits), or pass allow_overlap=True to measure them anyway"
        )
    demo_keys = {d.content_key(): d.id for d in demo_items}
    both = [(it.id, demo_keys[it.content_key()]) for it in heldout.items if it.content_key() in demo_keys]
    if both:
        item_id, demo_id = both[0]
        same = "is also a demonstration" if item_id == demo_id else f"has the same content as demonstration {demo_id!r}"
        raise TaskError(f"held-out item {item_id!r} {same}; demos must come from other items")


@dataclass
class Questions:
    """The held-out questions, flat in query order, and what every condition is scored against."""

    queries: list[ProxyPrompt]
    item_of: np.ndarray
    n_items: int
    n_options: int
    gold: np.ndarray
    boot: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, queries: Sequence[Sequence[ProxyPrompt]], n_boot: int, seed: int, task: Task, mode: str) -> Questions:
        flat = [q for qs in queries for q in qs]
        item_of = np.array([i for i, qs in enumerate(queries) for _ in qs])
        n_items = len(queries)
        n_opt = max(q.n_options for q in flat)
        gold = np.array([q.gold for q in flat])
        if mode == "cloze" and is_classification(task):  # the gold answer's text: one label per class
            labels = np.array([str(task.items[i].options[task.items[i].answer]) for i in item_of])
        else:  # the gold letter
            labels = np.array([LETTERS[g] for g in gold])
        boot = bootstrap_indices(n_items, n_boot, seed)
        return cls(flat, item_of, n_items, n_opt, gold, boot, labels)

    def score(self, probs: Sequence[Tensor], base: Scored | None = None) -> Scored:
        return score_predictions(probs, self.gold, self.item_of, self.n_items, base=base, labels=self.labels)


def random_summary(
    plan: ConditionPlan, name: str, probs: list[list[Tensor]], base: Scored, qs: Questions
) -> dict[str, Any]:
    """Per metric (and its change against the baseline, and RAC / RCC) the spread over the random sets."""
    per_seed: dict[str, list[float]] = {}
    let_sum = np.zeros(qs.n_options)
    idx = plan.random_indices(name)
    for c in idx:
        rs = qs.score(probs[c], base)
        for k in METRICS:
            per_seed.setdefault(k, []).append(rs.metrics[k])
        for k in DELTA_METRICS:
            per_seed.setdefault(f"delta_{k}", []).append(rs.metrics[k] - base.metrics[k])
        for rk, k in RELATIVE.items():
            per_seed.setdefault(rk, []).append(relative_change(rs.metrics[k], base.metrics[k]))
        let_sum += np.bincount(rs.pred, minlength=qs.n_options)
    return {
        "seeds": list(plan.seeds),
        "excluded_identified": plan.excluded_identified,
        "random_match": plan.random_match,
        "match_ratio": dict(plan.match_ratio),
        "metrics": {k: spread(v) for k, v in per_seed.items()},
        "letters_mean": {LETTERS[i]: float(let_sum[i] / len(idx)) for i in range(qs.n_options)},
    }


def intervention_row(
    plan: ConditionPlan, name: str, probs: list[list[Tensor]], base: Scored, qs: Questions, ci: float
) -> EvalRow:
    """The row of one available intervention: its metrics, their changes and tests against the baseline."""
    i = plan.index(name)
    cond = plan.conditions[i]
    sc = qs.score(probs[i], base)
    random = random_summary(plan, name, probs, base, qs) if plan.seeds else {}
    rank_p = {}
    for k in ("accuracy", "gold_prob", "balanced_accuracy"):
        values = random["metrics"][f"delta_{k}"]["values"] if random else []
        rank_p[k] = rank_p_value(sc.metrics[k] - base.metrics[k], values, EXPECTED_DIRECTION[name])
    return EvalRow(
        name,
        cond.description,
        n_good=len(cond.neurons["good"]) if "good" in cond.roles else 0,
        n_bad=len(cond.neurons["bad"]) if "bad" in cond.roles else 0,
        metrics=sc.metrics,
        ci=sc.intervals(qs.boot, ci),
        delta={k: sc.metrics[k] - base.metrics[k] for k in DELTA_METRICS},
        delta_ci=sc.intervals(qs.boot, ci, minus=base),
        relative={rk: relative_change(sc.metrics[k], base.metrics[k]) for rk, k in RELATIVE.items()},
        relative_ci=sc.relative_intervals(qs.boot, ci, base),
        paper_name=cond.paper_name,
        mcnemar=sc.mcnemar(base, "correct"),
        mcnemar_consistent=sc.mcnemar(base, "consistent"),
        letters=letter_counts(sc.pred, qs.n_options),
        random=random,
        predictions=sc.pred.tolist(),
        rank_p=rank_p,
    )


def score_rows(
    plan: ConditionPlan, probs: list[list[Tensor]], qs: Questions, interventions: Sequence[str], ci: float
) -> list[EvalRow]:
    """The baseline row, then one row per requested intervention (n/a rows for the unavailable ones)."""
    base = qs.score(probs[0])
    rows = [
        EvalRow(
            "baseline",
            "baseline",
            metrics=base.metrics,
            ci=base.intervals(qs.boot, ci),
            letters=letter_counts(base.pred, qs.n_options),
            predictions=base.pred.tolist(),
        )
    ]
    for name in interventions:
        if name in plan.unavailable:
            desc = INTERVENTIONS[name][0]
            note = plan.unavailable[name]
            rows.append(EvalRow(name, desc, available=False, note=note, paper_name=PAPER_NAMES.get(name, "")))
        else:
            rows.append(intervention_row(plan, name, probs, base, qs, ci))
    return rows


def per_item(plan: ConditionPlan, probs: list[list[Tensor]], qs: Questions, ids: list[str]) -> dict[str, Any]:
    """``EvalResult.per_item``: per condition (identified neurons) and averaged over its random sets, each
    item's mean gold probability, share correct and consistency."""
    base = qs.score(probs[0])
    item_labels = [str(qs.labels[qs.item_of == i][0]) for i in range(qs.n_items)]
    conds: dict[str, Any] = {"baseline": item_values(base)}
    rnd: dict[str, Any] = {}
    for c, cond in enumerate(plan.conditions):
        if c == 0 or cond.is_random:
            continue
        conds[cond.name] = item_values(qs.score(probs[c], base))
        per = [item_values(qs.score(probs[j], base)) for j in plan.random_indices(cond.name)]
        if per:
            rnd[cond.name] = {k: np.mean([p[k] for p in per], axis=0).tolist() for k in per[0]}
    return {"item_ids": ids, "labels": item_labels, "conditions": conds, "random_mean": rnd}


def add_controls(
    rows: list[EvalRow],
    plan: ConditionPlan,
    probs: list[list[Tensor]],
    qs: Questions,
    ran: dict[str, Any],
    ctrl_index: dict[tuple[Any, ...], int],
    ci: float,
) -> None:
    """Fill ``row.control`` of every available intervention row from the controls' run."""
    base = qs.score(probs[0])
    for row in rows[1:]:
        if not row.available:
            continue
        i = plan.index(row.name)
        c = ctrl_index[condition_key(plan.conditions[i])]
        row.control = control_row(ran, c, qs.score(probs[i], base), base, qs.boot, ci)


def result_info(result: NeuronResult) -> dict[str, Any]:
    """Facts about the evaluated result (model, method, k, set sizes, its identification statistics)."""
    tcfg = result.config.get("task", {})
    return {
        "model_name": result.config.get("model", {}).get("model_name", "?"),
        "result_fingerprint": result.fingerprint(),  # the reports refuse an evaluation of another result
        "method": result.config.get("method", "?"),
        "k": result.config.get("k"),
        "n_good": len(result.good),
        "n_bad": len(result.bad),
        "positive_only": bool(result.stats.get("positive_only", False)),
        "identify_task": tcfg.get("name"),
        "n_scored": tcfg.get("n_scored"),
        "identify_stats": {
            k: result.stats[k] for k in ("accuracy", "gold_prob", "consistent_accuracy", "seconds") if k in result.stats
        },
    }


def prompt_key(icfg: IdentifyConfig) -> tuple[Any, ...]:
    """What decides how a result's held-out questions are rendered and where its neurons are hooked."""
    return (icfg.prompt, icfg.augment, icfg.hook)


def condition_key(c: Condition) -> tuple[Any, ...]:
    return (c.name, tuple(sorted(c.neurons.items())), c.factor, c.positions)


def check_same_prompts(results: Sequence[NeuronResult], icfg: IdentifyConfig) -> None:
    """Refuse results rendered with other prompt options or hook than the first (``icfg``), naming the first."""
    for i, r in enumerate(results[1:], 1):
        if prompt_key(r.identify_config()) != prompt_key(icfg):
            raise ValueError(
                f"results[{i}] was identified with other prompt options or hook than results[0]; "
                "evaluate_many renders the questions once, so evaluate it separately"
            )


def prepared(
    model: HookedModel,
    results: Sequence[NeuronResult],
    heldout: Task,
    demos: Task | Sequence[Item] | None,
    allow_overlap: bool,
) -> Prepared:
    """The held-out questions rendered as the results' run rendered its items, checked disjoint from them."""
    prep = prepare(
        model, heldout, results[0].identify_config(), demos=demos
    )  # tokenizer only: errors before any model time
    if not allow_overlap:
        for r in results:
            check_disjoint(r, prep.task, prep.demo_items)
    return prep


def unique_conditions(plans: Sequence[ConditionPlan]) -> tuple[dict[tuple[Any, ...], int], list[Condition]]:
    """The conditions of all plans, identical ones once, and each one's index by :func:`condition_key`."""
    unique: dict[tuple[Any, ...], int] = {}  # identical conditions of several results run once
    conditions: list[Condition] = []
    for plan in plans:
        for c in plan.conditions:
            if condition_key(c) not in unique:
                unique[condition_key(c)] = len(conditions)
                conditions.append(c)
    return unique, conditions


def control_conditions(conditions: Sequence[Condition]) -> tuple[dict[tuple[Any, ...], int], list[Condition]]:
    """The conditions that run on the controls (the identified ones), and each one's index by key."""
    ctrl_index: dict[tuple[Any, ...], int] = {}
    ctrl_conditions: list[Condition] = []
    for c in conditions:
        if not c.is_random:
            ctrl_index[condition_key(c)] = len(ctrl_conditions)
            ctrl_conditions.append(c)
    return ctrl_index, ctrl_conditions


__all__ = [
    "Questions",
    "add_controls",
    "check_disjoint",
    "check_same_prompts",
    "condition_key",
    "control_conditions",
    "intervention_row",
    "per_item",
    "prepared",
    "prompt_key",
    "random_summary",
    "result_info",
    "score_rows",
    "unique_conditions",
]
