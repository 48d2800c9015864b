"""Held-out evaluation of a :class:`NeuronResult`: do the identified neurons control the task, and
more than random neurons do?

Protocol (method.md, "Evaluation protocol"). The held-out items are rendered exactly as the
identification run rendered its items (the result's ``config``: mode, instruction, shots, proxies,
permutations, seed) with demonstrations that are neither identification nor held-out items. Every
proxy question is answered under these conditions:

==============================  =================================================
``baseline``                    no intervention
``suppress_good``               good neurons x 0
``suppress_bad``                bad neurons x 0
``enhance_good_suppress_bad``   good neurons x ``factor`` (default 2), bad x 0 (the paper's "Enhance")
``enhance_bad_suppress_good``   bad neurons x ``factor``, good x 0 (the paper's "Degrade")
==============================  =================================================

all at the site (the last prompt token), and each identified condition again with ``n_random``
(default 5) random neuron sets of the same size and the same per-layer counts (a random stand-in
for the good set and one for the bad set, disjoint from each other and from the identified neurons),
matched neuron by neuron in activation magnitude (``random_match="auto"``, the default, or ``"activation"``)
or drawn uniformly within each layer (``random_match="layer"``); see :mod:`tl_neuronllm.evaluation.conditions`.
Every row has a one-sided rank p-value against the random sets (``row.rank_p``; floor ``1 / (n_random + 1)``).
``control=`` / ``control_text=`` add each condition's off-task effect and its specificity
(:mod:`tl_neuronllm.evaluation.controls`). Balanced accuracy (mean per-label recall; the label is the gold
letter in letter mode, the gold option's text in cloze mode on classification tasks) stands beside accuracy;
per-item values are kept in :attr:`EvalResult.per_item`.

Beside the absolute changes, every row has the relative changes against the baseline that we read the
paper's RAC and RCC to be: ``RAC = (acc - acc_base) / acc_base`` and ``RCC = (cacc - cacc_base) /
cacc_base`` for the consistent accuracy (``nan`` when the baseline is 0); see :func:`relative_change`.

Per condition: accuracy (argmax over the options, over all proxy questions), mean gold probability
(softmax over the options), consistent accuracy (share of items answered correctly on all their
proxies: a model that always answers "A" cannot earn it), the share of proxy questions whose
predicted option differs from the baseline, and the distribution of predicted letters. Intervals are
percentile bootstrap intervals over *items* (all proxies of a resampled item travel together; the
same seeded resamples for every condition, so differences are paired). Paired correctness changes
vs the baseline get an exact McNemar test (two-sided binomial test on the discordant pairs), on
proxy questions (``mcnemar``) and on items' consistent correctness (``mcnemar_consistent``). The
proxies of one item are not independent, so the proxy-level p-value is optimistic; the item-level
one is not. Random controls are summarised by mean, standard deviation, min and max over seeds.

Results without a bad set (positive-only baselines such as QR-Neuron, or a run in which no neuron
scored negative) have n/a rows for every condition that involves bad neurons.

Layout: :mod:`tl_neuronllm.evaluation.conditions` (the :class:`Condition` records and the random sets),
:mod:`tl_neuronllm.evaluation.engines` (the two inference engines), :mod:`tl_neuronllm.evaluation.stats` (the statistics),
:mod:`tl_neuronllm.evaluation.eval_result` (:class:`EvalRow`, :class:`EvalResult` and their files),
:mod:`tl_neuronllm.evaluation.steps` (the steps: questions, rows, per-item values) and
:mod:`tl_neuronllm.evaluation.tables` (the tables); this module runs the steps.

Engine: ``engine="prefix"`` (the default for site interventions) runs each proxy's prompt prefix once and
all conditions as continuation rows over it; ``engine="full"`` runs each condition over full prompts (required
for ``positions="all"``). The two agree to float tolerance; see :mod:`tl_neuronllm.evaluation.engines`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from tl_neuronllm.config.identify import IdentifyConfig, config_from_options
from tl_neuronllm.data.tasks import LETTERS, Item, Task, TaskError
from tl_neuronllm.errors import ConfigError
from tl_neuronllm.evaluation.conditions import INTERVENTIONS, Condition, ConditionPlan, plan_conditions
from tl_neuronllm.evaluation.controls import Controls, control_per_item, prepare_controls, run_controls
from tl_neuronllm.evaluation.engines import Engine, run_conditions
from tl_neuronllm.evaluation.eval_result import EvalResult, EvalRow
from tl_neuronllm.evaluation.steps import (
    Questions,
    add_controls,
    check_same_prompts,
    condition_key,
    control_conditions,
    per_item,
    prepared,
    result_info,
    score_rows,
    unique_conditions,
)
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import check_finite_probs
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.model.state import preserved_model_state
from tl_neuronllm.provenance import versions as _versions
from tl_neuronllm.result.neuron_result import NeuronResult
from tl_neuronllm.validate import check_choice, check_count_or_fraction, check_float, check_int


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalConfig:
    """Options of :func:`evaluate`.

    Attributes:
        interventions: Which conditions to run besides the baseline (default: all four of
            :data:`INTERVENTIONS`).
        factor: Enhancement factor (default 2).
        n_random: Random neuron sets per condition (default 5; 0 disables the control).
        k: Re-select the good/bad sets with this size (count or fraction) before evaluating;
            ``None`` keeps the result's sets.
        n_boot: Bootstrap resamples (default 2000).
        ci: Interval coverage (default 0.95).
        seed: Seed of the random sets (seed, seed + 1, ...) and of the bootstrap.
        positions: ``"site"`` (default) or ``"all"`` positions.
        engine: ``"auto"`` (``"prefix"`` for site interventions, ``"full"`` otherwise), ``"prefix"``
            or ``"full"``.
        batch_size: Proxies per forward in the ``"full"`` engine.
        memory_budget_mb: Activation memory to aim for per continuation chunk (``"prefix"`` engine).
        random_match: ``"auto"`` (default: random stand-ins matched per layer on activation magnitude, or, for
            a result where that cannot be satisfied, on layer counts with a ``RandomMatchWarning``),
            ``"activation"`` (refuse what cannot be matched) or ``"layer"`` (uniform within each layer); see
            :mod:`tl_neuronllm.evaluation.conditions`.
        control_max_tokens: Tokens of each ``control_text`` passage that are scored (the rest is cut).
    """

    interventions: tuple[str, ...] = tuple(INTERVENTIONS)
    factor: float = 2.0
    n_random: int = 5
    k: int | float | None = None
    n_boot: int = 2000
    ci: float = 0.95
    seed: int = 0
    positions: Literal["site", "all"] = "site"
    engine: Literal["auto", "prefix", "full"] = "auto"
    batch_size: int = 16
    memory_budget_mb: float = 512.0
    random_match: Literal["auto", "activation", "layer"] = "auto"
    control_max_tokens: int = 128

    def __post_init__(self) -> None:
        if isinstance(self.interventions, str):
            raise ValueError(f"interventions must be a list of names, got the string {self.interventions!r}")
        object.__setattr__(self, "interventions", tuple(self.interventions))
        unknown = [n for n in self.interventions if n not in INTERVENTIONS]
        if unknown:
            raise ValueError(f"unknown intervention(s) {unknown}; known: {list(INTERVENTIONS)}")
        object.__setattr__(self, "factor", check_float("factor", self.factor))
        check_int("n_random", self.n_random, min_value=0)
        if self.k is not None:
            check_count_or_fraction("k", self.k, min_count=1)
        check_int("n_boot", self.n_boot, min_value=1)
        check_float("ci", self.ci, low=0, high=1, low_open=True, high_open=True)
        check_int("seed", self.seed)
        check_choice("positions", self.positions, ("site", "all"))
        check_choice("engine", self.engine, ("auto", "prefix", "full"))
        if self.engine == "prefix" and self.positions == "all":
            raise ValueError("engine='prefix' needs positions='site' (the prefix changes when all positions are hit)")
        check_int("batch_size", self.batch_size, min_value=1)
        check_float("memory_budget_mb", self.memory_budget_mb, low=0, low_open=True)
        check_choice("random_match", self.random_match, ("auto", "activation", "layer"))
        check_int("control_max_tokens", self.control_max_tokens, min_value=2)

    @property
    def resolved_engine(self) -> Engine:
        """The engine ``"auto"`` stands for: ``"prefix"`` for site interventions, else ``"full"``."""
        if self.engine != "auto":
            return self.engine
        return "prefix" if self.positions == "site" else "full"

    @classmethod
    def from_options(cls, config: EvalConfig | None = None, **options: Any) -> EvalConfig:
        """A config from keyword options.

        Raises:
            TypeError: an unknown option (listing the valid ones); ValueError: a bad value.
        """
        return config_from_options(cls, config, options)


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------
def evaluate(
    model: HookedModel,
    result: NeuronResult,
    heldout: Task,
    *,
    demos: Task | Sequence[Item] | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
    allow_overlap: bool = False,
    control: Task | None = None,
    control_demos: Task | Sequence[Item] | None = None,
    control_text: str | Sequence[str] | None = None,
    **options: Any,
) -> EvalResult:
    """Evaluate a result's neurons on held-out items (see the module docstring for the protocol).

    Args:
        model: The model the result was identified on.
        result: A :class:`NeuronResult` (from :func:`tl_neuronllm.identify` or ``NeuronResult.load``).
        heldout: Held-out items, disjoint from the identification items.
        demos: Demonstration items for the k-shot prompts (use the identification run's demos);
            default: ``n_shots`` items drawn from ``heldout`` (and then not evaluated).
        config: A base :class:`EvalConfig`; ``options`` override its fields.
        progress: Show a progress bar.
        allow_overlap: Skip the check that no held-out item is an identification item (compared by
            content: context, question and the set of options, whatever the ids).
        control: An unrelated task: every identified condition also runs on its items (``row.control``,
            specificity; :mod:`tl_neuronllm.evaluation.controls`); ``control_demos``: its demonstrations
            (default: drawn from it).
        control_text: Plain passages scored as language-model loss per token under every identified condition.
        **options: Any :class:`EvalConfig` field, e.g. ``n_random=3``, ``factor=4.0``, ``random_match="layer"``.

    Returns:
        An :class:`EvalResult` (baseline row first).

    Raises:
        TaskError: overlapping items or demos, malformed tasks, a control task for another model or tokenizer.
        ModelError: ``control_text`` for a model without a tokenizer.
        ConfigError: a ``random_match`` the result cannot satisfy.
        ValueError: a result for another model shape, bad options.
    """
    if not isinstance(result, NeuronResult):
        raise ConfigError(
            f"result must be a NeuronResult, got {type(result).__name__} ({result!r:.60}); load a saved one with "
            "NeuronResult.load(path)"
        )
    return evaluate_many(
        model,
        [result],
        heldout,
        demos=demos,
        config=config,
        progress=progress,
        allow_overlap=allow_overlap,
        control=control,
        control_demos=control_demos,
        control_text=control_text,
        **options,
    )[0]


def check_results(results: Any) -> None:
    """Refuse ``results`` that are not a non-empty list of :class:`NeuronResult` (naming the first entry that
    is not one).

    Raises:
        ConfigError: naming the entry.
    """
    if isinstance(results, (NeuronResult, str, bytes, Mapping)) or not isinstance(results, Sequence) or not results:
        raise ConfigError("results must be a non-empty list of NeuronResult (use evaluate for one result)")
    for i, r in enumerate(results):
        if not isinstance(r, NeuronResult):
            raise ConfigError(
                f"results[{i}] is a {type(r).__name__} ({r!r:.60}), not a NeuronResult; load a saved one with "
                "NeuronResult.load(path)"
            )


def evaluate_many(
    model: HookedModel,
    results: Sequence[NeuronResult],
    heldout: Task,
    *,
    demos: Task | Sequence[Item] | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
    allow_overlap: bool = False,
    control: Task | None = None,
    control_demos: Task | Sequence[Item] | None = None,
    control_text: str | Sequence[str] | None = None,
    **options: Any,
) -> list[EvalResult]:
    """:func:`evaluate` of several results on the same held-out items in one pass.

    The questions are rendered and their baseline run once, and every result's conditions run together
    (identical conditions, e.g. two settings that form the same set, once). Each returned
    :class:`EvalResult` equals ``evaluate`` of that result alone up to float rounding (the forwards are
    batched differently); ``seconds`` is the whole pass's.

    Args:
        model, heldout, demos, config, progress, allow_overlap, **options: As for :func:`evaluate`.
        results: Results identified with the same prompt options and hook (mode, shots, proxies,
            permutations, seed, ...), e.g. re-formings of one run by :func:`tl_neuronllm.rescore`.
        control: An unrelated task whose held-out items every identified condition also runs on (its
            demonstrations: ``control_demos``, default drawn from it); see :mod:`tl_neuronllm.evaluation.controls`.
        control_text: Plain passages scored as language-model loss per token under every identified condition.

    Returns:
        One :class:`EvalResult` per result, in order.

    Raises:
        ValueError: no results, results whose prompt options or hook differ (naming the first such one), a
            result for another model shape, bad options.
        TaskError: overlapping items or demos, malformed tasks; a control task of another kind of items (another
            model or tokenizer).
        ConfigError: a ``random_match`` the result cannot satisfy (no recorded activations, a full layer).
    """
    cfg = EvalConfig.from_options(config, **options)
    if not isinstance(heldout, Task):
        raise TaskError(f"heldout must be a tl_neuronllm.Task, got {type(heldout).__name__}")
    check_results(results)
    t0 = time.perf_counter()
    results = _checked_results(model, results, cfg)
    icfg = results[0].identify_config()
    prep = prepared(model, results, heldout, demos, allow_overlap)
    adapter, scored, demo_items = prep.adapter, prep.task, prep.demo_items
    ctrls = prepare_controls(
        model, adapter, icfg, scored, control=control, control_demos=control_demos, control_text=control_text,
        max_tokens=cfg.control_max_tokens,
    )  # fmt: skip
    plans = [_plan(r, cfg) for r in results]
    unique, conditions = unique_conditions(plans)
    qs = Questions.of(list(prep.queries), cfg.n_boot, cfg.seed, scored, icfg.mode)
    ctrl_index, ctrl_conditions = control_conditions(conditions)
    probs, ran = _run_all(model, adapter, qs, conditions, ctrls, ctrl_conditions, cfg, progress)
    ids = [it.id for it in scored.items]
    check_finite_probs([[p] for p in probs[0]], [ids[i] for i in qs.item_of], "evaluate (baseline)")
    seconds = time.perf_counter() - t0
    run_config = _run_config(cfg, icfg, adapter, scored, demo_items)
    out = []
    for r, plan in zip(results, plans):
        mine = [probs[unique[condition_key(c)]] for c in plan.conditions]
        rows, per_item = _rows_and_items(plan, mine, qs, ids, ran, ctrl_index, cfg)
        out.append(
            EvalResult(
                rows=rows,
                task=scored.name,
                mode=icfg.mode,
                n_items=qs.n_items,
                n_queries=len(qs.queries),
                letters=list(LETTERS[: qs.n_options]),
                config={**run_config, "identify": r.identify_config().to_dict()},
                result_info=result_info(r),
                seconds=seconds,
                per_item=per_item,
            )
        )
    return out


def _checked_results(model: HookedModel, results: Sequence[NeuronResult], cfg: EvalConfig) -> list[NeuronResult]:
    """The results re-selected with ``cfg.k`` (if set), each checked against the model's shape, all rendered alike."""
    results = [r.with_k(cfg.k) if cfg.k is not None else r for r in results]
    for r in results:
        r._check_model(model)
    check_same_prompts(results, results[0].identify_config())
    return results


def _plan(result: NeuronResult, cfg: EvalConfig) -> ConditionPlan:
    """The conditions of one result (identified and random neurons) under ``cfg``."""
    return plan_conditions(
        result,
        cfg.interventions,
        factor=cfg.factor,
        positions=cfg.positions,
        n_random=cfg.n_random,
        seed=cfg.seed,
        random_match=cfg.random_match,
    )


def _run_all(
    model: HookedModel,
    adapter: ModelAdapter,
    qs: Questions,
    conditions: list[Condition],
    ctrls: Controls,
    ctrl_conditions: list[Condition],
    cfg: EvalConfig,
    progress: bool,
) -> tuple[list[list[Tensor]], dict[str, Any]]:
    """The model time: every condition's option probabilities on the questions, and the controls' run."""
    with preserved_model_state(model), torch.no_grad():
        adapter.check_widths()
        probs = run_conditions(
            adapter,
            qs.queries,
            conditions,
            engine=cfg.resolved_engine,
            batch_size=cfg.batch_size,
            memory_budget_mb=cfg.memory_budget_mb,
            progress=progress,
        )
        ran = _run_controls(adapter, ctrls, ctrl_conditions, cfg)
    return probs, ran


def _rows_and_items(
    plan: ConditionPlan,
    mine: list[list[Tensor]],
    qs: Questions,
    ids: list[str],
    ran: dict[str, Any],
    ctrl_index: dict[tuple[Any, ...], int],
    cfg: EvalConfig,
) -> tuple[list[EvalRow], dict[str, Any]]:
    """One result's rows and per-item values (with the controls' when they ran)."""
    rows = score_rows(plan, mine, qs, cfg.interventions, cfg.ci)
    items = per_item(plan, mine, qs, ids)
    if ran:
        add_controls(rows, plan, mine, qs, ran, ctrl_index, cfg.ci)
        mine_ctrl = {c.name: ctrl_index[condition_key(c)] for c in plan.conditions if not c.is_random}
        items["control"] = control_per_item(ran, mine_ctrl)
    return rows, items


def _run_config(
    cfg: EvalConfig, icfg: IdentifyConfig, adapter: ModelAdapter, scored: Task, demo_items: Sequence[Item]
) -> dict[str, Any]:
    """The :attr:`EvalResult.config` record: the options, the items and the software that ran."""
    ecfg = asdict(cfg)
    ecfg["engine"] = cfg.resolved_engine
    return {
        "eval": ecfg,
        "identify": icfg.to_dict(),
        "demo_ids": [d.id for d in demo_items],
        "item_ids": [it.id for it in scored.items],
        "kv_backend": adapter.kv_backend,
        "fast_paths": adapter.fast.to_dict(),
        "versions": _versions(),
    }


def _run_controls(
    adapter: ModelAdapter, ctrls: Controls, conditions: list[Condition], cfg: EvalConfig
) -> dict[str, Any]:
    if ctrls.empty:
        return {}
    return run_controls(
        adapter,
        ctrls,
        conditions,
        engine=cfg.resolved_engine,
        batch_size=cfg.batch_size,
        memory_budget_mb=cfg.memory_budget_mb,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
    )


__all__ = ["EvalConfig", "evaluate", "evaluate_many"]
