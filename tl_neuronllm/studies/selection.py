"""Cross-validated choice of the scoring options, without looking at held-out items.

The method's fixed defaults (z = 1%, strict ambiguity filter) are one point of a space of settings that
:func:`tl_neuronllm.rescore` re-forms for free from kept attributions. :func:`select_cv` chooses among
them using the identification items only:

1. split the identification items into ``n_folds`` folds (seeded);
2. for each fold and setting, re-form the sets from the other folds' attributions (``rescore(items=...)``,
   exactly ``identify`` on those items, no model time);
3. measure the interventions on the left-out fold (forward passes only, :func:`tl_neuronllm.evaluation.evaluate`):
   ``suppress_good`` should lower the gold-option probability, ``suppress_bad`` raise it;
4. choose the setting with the best mean validated effect (ties: the earlier setting in the grid, whose
   first entry is the method's own, ``preset="paper"``), and re-form the sets from all identification items
   with it.

Where the model has the skill (five testbeds, SmolLM2 on CommonsenseQA) it chose no filter, with z = 10% on
all but one testbed (5%): that is ``identify``'s default since 0.5.0. Where SmolLM2 is at chance (OpenBookQA,
BoolQ) the validated effects are noise-sized and it chose other settings (docs/results.md).

The held-out split is never an argument, so it cannot be touched.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tl_neuronllm.data.tasks import Item, Task, TaskError
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.prompts.proxies import demo_pool_size
from tl_neuronllm.result.neuron_result import NeuronResult
from tl_neuronllm.validate import check_choice, check_count_or_fraction, check_int

CV_JSON = "selection.json"
CV_FORMAT = "tl_neuronllm.CVSelection/1"
SETTING_KEYS = ("z", "ambiguity", "candidates", "tau", "proxies", "k")
Objective = Literal["both", "good", "bad"]

#: The default grid: the method's own setting first (z = 1%, strict filter), then larger per-item candidate
#: sets and the tolerant / no filter (the last entry is identify's default).
DEFAULT_GRID: tuple[dict[str, Any], ...] = tuple(
    {"z": z, "ambiguity": amb} for amb in (0.0, 0.25, None) for z in (0.01, 0.02, 0.05, 0.1)
)


@dataclass
class CVSelection:
    """The outcome of :func:`select_cv`.

    Attributes:
        grid: The settings tried (``rescore`` options), in order.
        folds: The identification item indices of each fold (indices into the result's scored items).
        effects: ``[setting][fold]``: ``d_gold_good`` (Δ gold probability when the good set is suppressed
            on the left-out fold), ``d_gold_bad`` (bad set suppressed), ``d_acc_good``, ``d_acc_bad``,
            ``n_good``, ``n_bad``, ``objective``.
        mean_objective: Per setting, the mean objective over folds (higher is better).
        best: Index of the chosen setting in ``grid``.
        objective: ``"both"`` (``-d_gold_good + d_gold_bad``), ``"good"`` (``-d_gold_good``) or ``"bad"``.
        config: Folds, seed, k, the evaluation options, item ids and versions.
        result: The result re-formed from all identification items with the chosen setting (not in the
            JSON; :meth:`save` writes it to ``result/``).
    """

    grid: list[dict[str, Any]]
    folds: list[list[int]]
    effects: list[list[dict[str, float]]]
    mean_objective: list[float]
    best: int
    objective: str
    config: dict[str, Any] = field(default_factory=dict)
    result: NeuronResult | None = None

    @property
    def setting(self) -> dict[str, Any]:
        """The chosen setting."""
        return dict(self.grid[self.best])

    def to_markdown(self) -> str:
        """One row per setting: its options, the mean validated effects and the objective (chosen row marked)."""
        lines = [
            "| setting | mean Δgold p, good suppressed | mean Δgold p, bad suppressed | mean objective | chosen |",
            "|---|---:|---:|---:|---|",
        ]
        for i, (s, eff) in enumerate(zip(self.grid, self.effects)):
            g = sum(e["d_gold_good"] for e in eff) / len(eff)
            b = sum(e["d_gold_bad"] for e in eff) / len(eff)
            lines.append(
                f"| {_fmt_setting(s)} | {g:+.4f} | {b:+.4f} | {self.mean_objective[i]:+.4f} | "
                f"{'**yes**' if i == self.best else ''} |"
            )
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write ``selection.json`` (and the chosen result to ``result/``, safetensors + JSON)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        d = {f: getattr(self, f) for f in ("grid", "folds", "effects", "mean_objective", "best", "objective", "config")}
        (path / CV_JSON).write_text(json.dumps({"format": CV_FORMAT, **d}, indent=1, default=str))
        if self.result is not None:
            self.result.save(path / "result")
        return path

    @classmethod
    def load(cls, path: str | Path) -> CVSelection:
        """Read a selection written by :meth:`save` (with its result when saved).

        Raises:
            FileNotFoundError: if ``selection.json`` is missing; ValueError: for another format.
        """
        path = Path(path)
        if not (path / CV_JSON).exists():
            raise FileNotFoundError(f"{path} holds no {CV_JSON}")
        meta = json.loads((path / CV_JSON).read_text(encoding="utf-8"))
        if meta.pop("format", None) != CV_FORMAT:
            raise ValueError(f"{path / CV_JSON}: not a {CV_FORMAT} file")
        result = NeuronResult.load(path / "result") if (path / "result").is_dir() else None
        return cls(result=result, **meta)


def _fmt_setting(s: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.items()) or "(the result's own)"


def make_folds(n: int, n_folds: int, seed: int) -> list[list[int]]:
    """``n_folds`` disjoint, nearly equal, sorted folds of ``range(n)`` after a seeded shuffle.

    Raises:
        ValueError: for ``n_folds`` < 2 or more folds than items.
    """
    check_int("n_folds", n_folds, min_value=2)
    if n_folds > n:
        raise ValueError(f"n_folds = {n_folds} is more than the {n} identification items")
    order = list(range(n))
    random.Random(f"cv:{seed}").shuffle(order)
    return [sorted(order[f::n_folds]) for f in range(n_folds)]


def _check_grid(grid: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(grid, (str, bytes, Mapping)) or not isinstance(grid, Sequence) or not grid:
        raise ValueError(f"grid must be a non-empty list of rescore settings (dicts), got {grid!r}")
    out = []
    for i, s in enumerate(grid):
        if not isinstance(s, Mapping):
            raise ValueError(f"grid[{i}] must be a dict of rescore options, got {s!r}")
        unknown = sorted(set(s) - set(SETTING_KEYS))
        if unknown:
            raise ValueError(f"grid[{i}] has unknown option(s) {unknown}; allowed: {list(SETTING_KEYS)}")
        for key in ("k", "z"):  # before any model time: k=0 would validate empty sets
            if s.get(key) is not None:
                check_count_or_fraction(f"grid[{i}][{key!r}]", s[key], min_count=1)
        out.append(dict(s))
    return out


def _fold_effects(
    model: HookedModel,
    result: NeuronResult,
    ident: Task,
    demo_items: Sequence[Item],
    folds: Sequence[Sequence[int]],
    settings: Sequence[dict[str, Any]],
    objective: Objective,
    opts: dict[str, Any],
    progress: bool,
) -> list[list[dict[str, float]]]:
    """Per setting and fold: the suppression effects on the fold's items of the sets re-formed on the other folds.

    Every setting of a fold is evaluated in one pass (:func:`tl_neuronllm.evaluation.evaluate.evaluate_many`: the
    baseline once, identical sets once).
    """
    from tl_neuronllm.evaluation.evaluate import evaluate_many
    from tl_neuronllm.pipeline.rescore import rescore

    n = len(ident)
    effects: list[list[dict[str, float]]] = [[] for _ in settings]
    for f, held_idx in enumerate(folds):
        train = [i for i in range(n) if i not in set(held_idx)]
        fold_task = ident.subset(list(held_idx), name=f"{ident.name}:fold{f}")
        fold_results = [rescore(result, items=train, **setting) for setting in settings]
        evs = evaluate_many(model, fold_results, fold_task, demos=demo_items, progress=progress, **opts)
        for s, (fold_res, ev) in enumerate(zip(fold_results, evs)):
            row_g, row_b = ev.row("suppress_good"), ev.row("suppress_bad")
            dg = row_g.delta.get("gold_prob", 0.0) if row_g.available else 0.0
            db = row_b.delta.get("gold_prob", 0.0) if row_b.available else 0.0
            obj = {"both": -dg + db, "good": -dg, "bad": db}[objective]
            effects[s].append(
                {
                    "d_gold_good": dg,
                    "d_gold_bad": db,
                    "d_acc_good": row_g.delta.get("accuracy", 0.0) if row_g.available else 0.0,
                    "d_acc_bad": row_b.delta.get("accuracy", 0.0) if row_b.available else 0.0,
                    "n_good": len(fold_res.good),
                    "n_bad": len(fold_res.bad),
                    "objective": obj,
                }
            )
    return effects


def _cv_config(
    n_folds: int, seed: int, k: Any, opts: dict[str, Any], ident: Task, demo_items: Sequence[Item]
) -> dict[str, Any]:
    """What a :class:`CVSelection` records of its run."""
    from tl_neuronllm.provenance import versions as _versions

    return {
        "n_folds": n_folds,
        "seed": seed,
        "k": k,
        "eval": dict(opts.items()),
        "item_ids": [it.id for it in ident.items],
        "demo_ids": [d.id for d in demo_items],
        "versions": _versions(),
    }


def select_cv(
    model: HookedModel,
    result: NeuronResult,
    task: Task,
    *,
    demos: Task | Sequence[Item] | None = None,
    grid: Sequence[Mapping[str, Any]] = DEFAULT_GRID,
    n_folds: int = 4,
    objective: Objective = "both",
    seed: int = 0,
    progress: bool = False,
    **eval_options: Any,
) -> CVSelection:
    """Choose the scoring setting by cross-validation over the identification items (no held-out items).

    Args:
        model: The model the result was identified on (forward passes only).
        result: A result of ``identify(..., keep_attributions=True)``.
        task: The task it was identified on (its identification items are found by id; demos are skipped).
        demos: The identification run's demonstrations (default: the ones it recorded, from ``task``).
        grid: Settings to try: dicts of :func:`tl_neuronllm.rescore` options (``z``, ``ambiguity``,
            ``candidates``, ``tau``, ``proxies``, ``k``). Default :data:`DEFAULT_GRID`.
        n_folds: Folds of the identification items (>= 2).
        objective: ``"both"`` (``-Δgold(suppress good) + Δgold(suppress bad)``), ``"good"`` or ``"bad"``.
        seed: Seed of the folds.
        progress: Progress bars of the evaluations.
        **eval_options: :class:`tl_neuronllm.evaluation.evaluate.EvalConfig` options for the fold evaluations
            (default ``n_random=0``, ``n_boot=200``).

    Returns:
        A :class:`CVSelection` whose ``result`` is ``rescore(result, **chosen setting)``.

    Raises:
        ValueError: a result without kept attributions, a malformed grid, bad ``n_folds`` / ``objective``.
        TaskError: a task that lacks the result's identification items.
    """
    from tl_neuronllm.pipeline.prepare import identification_items
    from tl_neuronllm.pipeline.rescore import rescore

    if result.attributions is None:
        raise ValueError("select_cv needs the per-item attributions: run identify(..., keep_attributions=True)")
    check_choice("objective", objective, ("both", "good", "bad"))
    settings = _check_grid(grid)
    c = result.config
    icfg = result.identify_config()
    pool = demo_pool_size(icfg.prompt, icfg.augment)  # cloze proxies: one demonstration block per proxy
    ident, demo_items = identification_items(result.config, task, demos, "identified", pool, int(c.get("seed", 0)))
    n = int(result.attributions.shape[0])
    if len(ident) != n:
        raise TaskError(
            f"task {task.name!r} gives {len(ident)} identification items but the result kept attributions of {n}"
        )
    folds = make_folds(n, n_folds, seed)
    opts = {"n_random": 0, "n_boot": 200, **eval_options, "interventions": ("suppress_good", "suppress_bad")}
    effects = _fold_effects(model, result, ident, demo_items, folds, settings, objective, opts, progress)
    mean_obj = [sum(e["objective"] for e in eff) / len(eff) for eff in effects]
    best = max(range(len(settings)), key=lambda i: (mean_obj[i], -i))
    chosen = rescore(result, **settings[best])
    chosen.config = chosen.config.replace(
        selection={
            "method": "cv",
            "setting": settings[best],
            "n_folds": n_folds,
            "objective": objective,
            "mean_objective": mean_obj[best],
        }
    )
    config = _cv_config(n_folds, seed, c.get("k"), opts, ident, demo_items)
    return CVSelection(
        grid=json.loads(json.dumps(settings)),
        folds=folds,
        effects=effects,
        mean_objective=mean_obj,
        best=best,
        objective=objective,
        config=json.loads(json.dumps(config, default=str)),
        result=chosen,
    )


__all__ = ["CVSelection", "DEFAULT_GRID", "make_folds", "select_cv"]
