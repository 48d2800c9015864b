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

Beside the absolute changes, every row has the relative changes against the baseline that we read the
paper's RAC and RCC to be: ``RAC = (acc - acc_base) / acc_base`` and ``RCC = (cacc - cacc_base) /
cacc_base`` for the consistent accuracy (``nan`` when the baseline is 0); see :func:`relative_change`.

all at the site (the last prompt token), and each identified condition again with ``n_random``
(default 5) random neuron sets of the same size and the same per-layer counts (a random stand-in
for the good set and one for the bad set, disjoint from each other and, when the layer has room,
from the identified neurons).

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

Engine: interventions act at the site only, so every position before the site is the same in all
conditions. ``engine="prefix"`` (the default for site interventions) runs each proxy's prompt
prefix once and all conditions as rows of one batched continuation over its key/value cache (the
same shortcut as exact IG; on models without a cache the prefix is re-run per row, still exact).
``engine="full"`` runs each condition over right-padded full prompts with
:func:`tl_neuronllm.answers.predict` (required for ``positions="all"``). The two agree to float
tolerance (tested). Either way the hooks are :func:`tl_neuronllm.interventions.make_hooks`, the same
ones :meth:`NeuronResult.hooks` returns.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .adapter import ModelAdapter, preserved_model_state
from .answers import Query, predict, suffix_scores
from .interventions import Intervention, make_hooks
from .memory import ig_chunk_rows
from .pipeline import IdentifyConfig, _versions, build_queries, check_finite_probs, choose_demos, config_from_options
from .proxies import TokenFormat
from .result import NeuronResult
from .tasks import LETTERS, Item, Task, TaskError
from .validate import check_choice, check_count_or_fraction, check_float, check_int

EVAL_JSON = "evaluation.json"
EVAL_MD = "evaluation.md"

#: Condition name -> (description, [(role, mode)]); ``mode`` is ``"zero"`` or ``"scale"``.
INTERVENTIONS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "suppress_good": ("suppress good", (("good", "zero"),)),
    "suppress_bad": ("suppress bad", (("bad", "zero"),)),
    "enhance_good_suppress_bad": ("Enhance: enhance good + suppress bad", (("good", "scale"), ("bad", "zero"))),
    "enhance_bad_suppress_good": ("Degrade: enhance bad + suppress good", (("bad", "scale"), ("good", "zero"))),
}
#: The paper's names of the joint conditions (issue 12): Degrade = suppress good + enhance bad, Enhance =
#: enhance good + suppress bad. The single-role conditions keep their plain names.
PAPER_NAMES = {"enhance_good_suppress_bad": "Enhance", "enhance_bad_suppress_good": "Degrade"}
#: Relative measures (our reading of the paper's RAC / RCC): key -> the metric they are relative changes of.
RELATIVE = {"RAC": "accuracy", "RCC": "consistent_accuracy"}
#: The direction method.md expects: +1 scores rise, -1 scores fall.
EXPECTED_DIRECTION = {
    "suppress_good": -1,
    "suppress_bad": 1,
    "enhance_good_suppress_bad": 1,
    "enhance_bad_suppress_good": -1,
}
METRICS = ("accuracy", "gold_prob", "consistent_accuracy", "changed")


# ------------------------------------------------------------------------------------------------
# statistics (small, exact, dependency-free)
# ------------------------------------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    Under the null each discordant pair goes either way with probability 1/2, so
    ``p = min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])``; ``p = 1`` when there are no
    discordant pairs.
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
        ``(low, high)``.
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


def matched_random_sets(
    counts: dict[str, Sequence[int]],
    d_mlp: int,
    *,
    seed: int,
    exclude: Tensor | None = None,
) -> tuple[dict[str, list[tuple[int, int]]], bool]:
    """Random neuron sets with exactly the given per-layer counts, pairwise disjoint.

    Args:
        counts: Role -> neurons per layer (e.g. ``{"good": [3, 0, 2], "bad": [1, 1, 0]}``).
        d_mlp: Neurons per layer.
        seed: Seed of the draw.
        exclude: Optional ``[n_layers, d_mlp]`` boolean mask of neurons to avoid (the identified
            ones). Where a layer has too few other neurons for all roles, that layer draws from all
            neurons not taken by another role instead.

    Returns:
        ``(sets, excluded_all)``: role -> sorted ``(layer, neuron)`` pairs, and whether every layer
        could avoid ``exclude``.

    Raises:
        ValueError: if a layer needs more neurons than it has.
    """
    rng = random.Random(seed)
    roles = list(counts)
    n_layers = max((len(c) for c in counts.values()), default=0)
    out: dict[str, list[tuple[int, int]]] = {r: [] for r in roles}
    excluded_all = True
    for layer in range(n_layers):
        need = [int(counts[r][layer]) if layer < len(counts[r]) else 0 for r in roles]
        total = sum(need)
        if total == 0:
            continue
        if total > d_mlp:
            raise ValueError(f"layer {layer} needs {total} random neurons but has only {d_mlp}")
        pool = list(range(d_mlp))
        if exclude is not None:
            allowed = [i for i in pool if not bool(exclude[layer, i])]
            if len(allowed) >= total:
                pool = allowed
            else:
                excluded_all = False
        picked = rng.sample(pool, total)
        pos = 0
        for r, n in zip(roles, need):
            out[r] += [(layer, i) for i in sorted(picked[pos : pos + n])]
            pos += n
    return out, excluded_all


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
            check_count_or_fraction("k", self.k)
        check_int("n_boot", self.n_boot, min_value=1)
        check_float("ci", self.ci, low=0, high=1, low_open=True, high_open=True)
        check_int("seed", self.seed)
        check_choice("positions", self.positions, ("site", "all"))
        check_choice("engine", self.engine, ("auto", "prefix", "full"))
        if self.engine == "prefix" and self.positions == "all":
            raise ValueError("engine='prefix' needs positions='site' (the prefix changes when all positions are hit)")
        check_int("batch_size", self.batch_size, min_value=1)
        check_float("memory_budget_mb", self.memory_budget_mb, low=0, low_open=True)

    @classmethod
    def from_options(cls, config: EvalConfig | None = None, **options: Any) -> EvalConfig:
        """A config from keyword options (unknown names raise a ``TypeError`` listing the valid ones)."""
        return config_from_options(cls, config, options)


def identify_config_of(result: NeuronResult) -> IdentifyConfig:
    """The :class:`IdentifyConfig` (prompt and augmentation options) a result was identified with."""
    c = dict(result.config)
    names = {f.name for f in fields(IdentifyConfig)}
    kw = {k: v for k, v in c.items() if k in names}
    tf = kw.get("token_format")
    if isinstance(tf, dict):
        kw["token_format"] = TokenFormat(**tf)
    if kw.get("layers") is not None:
        kw["layers"] = tuple(kw["layers"])
    kw["method"] = "ig"  # rendering does not depend on the method; a baseline may not be registered
    return IdentifyConfig(**kw)


# ------------------------------------------------------------------------------------------------
# result objects
# ------------------------------------------------------------------------------------------------
@dataclass
class EvalRow:
    """One condition of the evaluation table.

    Attributes:
        name: Condition key (``"baseline"`` or a key of :data:`INTERVENTIONS`).
        description: Human-readable condition.
        available: False for n/a rows (conditions involving a bad set the result does not have).
        note: Why a row is n/a.
        n_good / n_bad: Neurons intervened on.
        metrics: ``accuracy``, ``gold_prob``, ``consistent_accuracy``, ``changed`` (share of proxy
            questions whose prediction differs from the baseline), ``changed_items`` (share of
            items with at least one changed prediction).
        ci: Bootstrap intervals of the metrics.
        delta: Metric minus baseline; ``delta_ci``: paired bootstrap intervals of the deltas.
        relative: ``{"RAC": ..., "RCC": ...}``, relative changes of accuracy and consistent accuracy against
            the baseline (:func:`relative_change`; our reading of the paper's measures); ``relative_ci``:
            their paired bootstrap intervals.
        paper_name: ``"Enhance"`` / ``"Degrade"`` for the joint conditions (:data:`PAPER_NAMES`), else ``""``.
        mcnemar: ``{"b": base right -> wrong, "c": base wrong -> right, "p": exact p}`` on proxies.
        mcnemar_consistent: The same on items' consistent correctness.
        letters: Predicted-letter counts over all proxy questions.
        random: Random control summary: per metric (and ``delta_*``) ``mean``, ``sd``, ``min``,
            ``max`` and ``values`` over seeds, ``letters_mean``, ``seeds``, ``excluded_identified``.
        predictions: Predicted option (letter index) of every proxy question, in query order.
    """

    name: str
    description: str
    available: bool = True
    note: str = ""
    n_good: int = 0
    n_bad: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    delta_ci: dict[str, list[float]] = field(default_factory=dict)
    relative: dict[str, float] = field(default_factory=dict)
    relative_ci: dict[str, list[float]] = field(default_factory=dict)
    paper_name: str = ""
    mcnemar: dict[str, float] = field(default_factory=dict)
    mcnemar_consistent: dict[str, float] = field(default_factory=dict)
    letters: dict[str, int] = field(default_factory=dict)
    random: dict[str, Any] = field(default_factory=dict)
    predictions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalRow:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class EvalResult:
    """The evaluation table of a result on held-out items.

    Attributes:
        rows: Baseline first, then one row per intervention (n/a rows included).
        task: Held-out task name.
        mode: ``"letter"`` or ``"cloze"``.
        n_items: Held-out items.
        n_queries: Proxy questions (items x proxies).
        letters: The option letters of the letter distributions.
        config: The :class:`EvalConfig` and the identification options used for rendering.
        result_info: Facts about the evaluated :class:`NeuronResult` (model, method, k, set sizes).
        seconds: Wall time of the evaluation.
    """

    rows: list[EvalRow]
    task: str
    mode: str
    n_items: int
    n_queries: int
    letters: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    result_info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def baseline(self) -> EvalRow:
        return self.rows[0]

    def row(self, name: str) -> EvalRow:
        """The row of a condition."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r.name for r in self.rows]}")

    # ---- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = "tl_neuronllm.EvalResult/1"
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["rows"] = [EvalRow.from_dict(r) for r in d["rows"]]
        return cls(**kw)

    def save(self, path: str | Path) -> Path:
        """Write ``evaluation.json`` and ``evaluation.md`` into the directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / EVAL_JSON).write_text(self.to_json())
        (path / EVAL_MD).write_text(self.to_markdown())
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        """Read an evaluation saved with :meth:`save` (a directory or the JSON file)."""
        path = Path(path)
        f = path / EVAL_JSON if path.is_dir() else path
        if not f.exists():
            raise FileNotFoundError(f"{path} holds no {EVAL_JSON}")
        try:
            return cls.from_dict(json.loads(f.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(
                f"{f}: not a readable evaluation ({type(e).__name__}: {e}); the file is truncated or "
                "edited: run the evaluation again"
            ) from None

    # ---- views --------------------------------------------------------------------------
    def _letters_str(self, counts: dict[str, float], total: int) -> str:
        parts = [(k, v) for k, v in counts.items() if v]
        parts.sort(key=lambda kv: -kv[1])
        return " ".join(f"{k}:{100 * v / max(total, 1):.0f}%" for k, v in parts[:4])

    def table_rows(self) -> list[list[str]]:
        """The compact table: header row, then one row per condition."""
        ci = int(round(100 * self.config.get("eval", {}).get("ci", 0.95)))
        head = [
            "condition",
            "neurons",
            "accuracy",
            f"{ci}% CI",
            "Δacc",
            "random Δacc",
            "gold p",
            "Δgold p",
            "random Δgold p",
            "consistent",
            "changed",
            "random changed",
            "McNemar p",
            "letters",
        ]
        out = [head]
        for r in self.rows:
            if not r.available:
                out.append([r.description, "n/a", "n/a"] + [""] * (len(head) - 4) + [r.note])
                continue
            m = r.metrics
            rnd = r.random.get("metrics", {}) if r.random else {}
            base = r.name == "baseline"

            def spread(key: str, sign: bool = True) -> str:
                x = rnd.get(key)
                return f"{x['mean']:{'+' if sign else ''}.3f}±{x['sd']:.3f}" if x else ""

            out.append(
                [
                    r.description,
                    "-" if base else f"{r.n_good}g/{r.n_bad}b",
                    f"{m['accuracy']:.3f}",
                    f"[{r.ci['accuracy'][0]:.3f}, {r.ci['accuracy'][1]:.3f}]",
                    "" if base else f"{r.delta['accuracy']:+.3f}",
                    spread("delta_accuracy"),
                    f"{m['gold_prob']:.3f}",
                    "" if base else f"{r.delta['gold_prob']:+.3f}",
                    spread("delta_gold_prob"),
                    f"{m['consistent_accuracy']:.3f}",
                    "" if base else f"{m['changed']:.3f}",
                    spread("changed", sign=False),
                    "" if base else _fmt_p(r.mcnemar.get("p", float("nan"))),
                    self._letters_str(r.letters, self.n_queries),
                ]
            )
        return out

    def paper_rows(self) -> list[list[str]]:
        """The paper's measures: header, then per intervention its name (Degrade / Enhance for the joint
        conditions), RAC and RCC with paired bootstrap intervals, and the random sets' mean RAC / RCC."""
        ci = int(round(100 * self.config.get("eval", {}).get("ci", 0.95)))
        out = [["condition", "paper name", "RAC", f"RAC {ci}% CI", "random RAC", "RCC", f"RCC {ci}% CI", "random RCC"]]
        fmt = lambda x: "n/a" if x is None or x != x else f"{x:+.3f}"
        for r in self.rows[1:]:
            if not r.available or not r.relative:
                out.append([r.description, r.paper_name or "-", "n/a", "", "", "n/a", "", ""])
                continue
            rnd = r.random.get("metrics", {}) if r.random else {}
            cells = [r.description, r.paper_name or "-"]
            for key in RELATIVE:
                lo, hi = r.relative_ci.get(key, [float("nan")] * 2)
                cells += [
                    fmt(r.relative[key]),
                    f"[{fmt(lo)}, {fmt(hi)}]" if lo == lo else "",
                    fmt(rnd[key]["mean"]) if key in rnd else "",
                ]
            out.append(cells)
        return out

    def table(self) -> str:
        """A plain-text table for the terminal."""
        rows = self.table_rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        title = (
            f"{self.task}: {self.n_items} held-out items x proxies = {self.n_queries} questions, mode {self.mode}, "
            f"random control: {self.config.get('eval', {}).get('n_random', 0)} seeds"
        )
        return title + "\n" + "\n".join(lines)

    def to_markdown(self) -> str:
        """The evaluation table and its legend as markdown."""
        rows = self.table_rows()
        md = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
        e = self.config.get("eval", {})
        ri = self.result_info
        head = [
            f"## Held-out evaluation: {self.task}",
            "",
            f"Model {ri.get('model_name', '?')}, neurons from {ri.get('method', '?')} on {ri.get('n_scored', '?')} "
            f"identification items ({ri.get('n_good', 0)} good, {ri.get('n_bad', 0)} bad). "
            f"{self.n_items} held-out items x proxies = {self.n_queries} questions, mode {self.mode}, "
            f"interventions at the {e.get('positions', 'site')}, enhance factor {e.get('factor', 2.0)}, "
            f"{e.get('n_random', 0)} random sets per condition, {e.get('n_boot', 0)} bootstrap resamples. "
            f"Evaluation took {self.seconds:.1f} s.",
            "",
        ]
        paper = self.paper_rows()
        md += [
            "",
            "Relative changes against the baseline (RAC: accuracy, RCC: consistent accuracy; our reading "
            "of the paper's measures; Degrade = suppress good + enhance bad, Enhance = enhance good + suppress bad):",
            "",
            "| " + " | ".join(paper[0]) + " |",
            "|" + "---|" * len(paper[0]),
        ]
        md += ["| " + " | ".join(paper_row) + " |" for paper_row in paper[1:]]
        legend = [
            "",
            "accuracy: argmax over the options, over all proxy questions; CI: bootstrap over items; "
            "Δacc: minus baseline; gold p: mean softmax-over-options probability of the gold option (Δ: minus "
            "baseline); "
            "consistent: share of items right on all their proxies; changed: share of questions whose "
            "predicted option differs from the baseline; McNemar p: exact test of the paired correctness "
            "changes (proxy level, optimistic because proxies of an item are correlated); random: mean ± sd over "
            "same-size neuron sets with the same per-layer counts; letters: the most predicted letters.",
        ]
        return "\n".join(head + md + legend) + "\n"


def _fmt_p(p: float) -> str:
    if p != p:  # nan
        return ""
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


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
        metrics: ``accuracy``, ``gold_prob``, ``consistent_accuracy``, ``changed``, ``changed_items``.
    """

    pred: np.ndarray
    gold_prob: np.ndarray
    correct: np.ndarray
    consistent: np.ndarray
    changed: np.ndarray
    item_of: np.ndarray
    metrics: dict[str, float]

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
    probs: Sequence[Tensor] | Sequence[Sequence[float]],
    gold: Sequence[int] | np.ndarray,
    item_of: Sequence[int] | np.ndarray,
    n_items: int | None = None,
    *,
    base: Scored | None = None,
) -> Scored:
    """Score the option probabilities of the questions of one condition.

    Args:
        probs: Per question, the option probabilities (any length; argmax is the prediction).
        gold: Per question, the gold option.
        item_of: Per question, its item index (``0..n_items-1``).
        n_items: Number of items (default ``max(item_of) + 1``).
        base: The baseline condition, for ``changed``.

    Returns:
        A :class:`Scored`; accuracy and gold probability are means over questions, consistent
        accuracy over items.
    """
    item_of = np.asarray(item_of, dtype=np.int64)
    gold = np.asarray(gold, dtype=np.int64)
    n_items = int(item_of.max()) + 1 if n_items is None else int(n_items)
    pred = np.array([int(np.argmax(np.asarray(p, dtype=np.float64))) for p in probs], dtype=np.int64)
    gp = np.array([float(p[g]) for p, g in zip(probs, gold)], dtype=np.float64)
    correct = (pred == gold).astype(np.float64)
    per_item = np.bincount(item_of, weights=correct, minlength=n_items)
    n_q = np.bincount(item_of, minlength=n_items)
    consistent = ((per_item == n_q) & (n_q > 0)).astype(np.float64)
    changed = (pred != base.pred).astype(np.float64) if base is not None else np.zeros(len(pred))
    changed_items = np.bincount(item_of, weights=changed, minlength=n_items) > 0
    metrics = {
        "accuracy": float(correct.mean()),
        "gold_prob": float(gp.mean()),
        "consistent_accuracy": float(consistent.mean()),
        "changed": float(changed.mean()),
        "changed_items": float(changed_items.mean()),
    }
    return Scored(pred, gp, correct, consistent, changed, item_of, metrics)


def letter_counts(pred: Sequence[int] | np.ndarray, n_options: int) -> dict[str, int]:
    """How often each letter ``A..`` was predicted."""
    cnt = np.bincount(np.asarray(pred, dtype=np.int64), minlength=n_options)
    return {LETTERS[i]: int(cnt[i]) for i in range(n_options)}


# ------------------------------------------------------------------------------------------------
# engines
# ------------------------------------------------------------------------------------------------
Condition = list[Intervention]


def _site_hooks(
    hook_names: Sequence[str], conditions: Sequence[Condition], V: int, sites: Tensor
) -> list[tuple[str, Any]]:
    """One hook per layer applying condition ``c``'s :func:`make_hooks` hooks at the sites of rows
    ``c*V..(c+1)*V``, given as flat indices into ``act.reshape(-1, d_mlp)`` (packed or batched rows)."""
    per_layer: dict[str, list[tuple[Tensor, Any]]] = {}
    first = torch.zeros(V, dtype=torch.long)  # each site becomes a one-position row of its own
    for c, ivs in enumerate(conditions):
        rows = sites[c * V : (c + 1) * V]
        for iv in ivs:
            for name, fn in make_hooks(hook_names, iv, first):
                per_layer.setdefault(name, []).append((rows, fn))

    def make(entries: list[tuple[Tensor, Any]]) -> Any:
        def hook(act: Tensor, hook: Any) -> Tensor:
            flat = act.reshape(-1, act.shape[-1]).clone()
            for rows, fn in entries:
                r = rows.to(flat.device)
                flat[r] = fn(flat[r][:, None], hook)[:, 0]
            return flat.view(act.shape)

        return hook

    return [(name, make(entries)) for name, entries in per_layer.items()]


@torch.no_grad()
def _probs_prefix(adapter: ModelAdapter, q: Query, conditions: Sequence[Condition], memory_budget_mb: float) -> Tensor:
    """Option probabilities ``[n_conditions, n_options]`` of one query, all conditions as continuation rows
    of one prefix (:meth:`ModelAdapter.run_rows`: packed into one sequence where verified)."""
    state = adapter.prefix(q.prompt[:-1])
    suffix = q.suffixes()
    V, T = len(suffix), max(len(r) for r in suffix)
    per_chunk = max(1, ig_chunk_rows(adapter, len(q.prompt) - 1, T, len(conditions) * V, memory_budget_mb) // V)
    out = []
    for c0 in range(0, len(conditions), per_chunk):
        chunk = conditions[c0 : c0 + per_chunk]
        logits = adapter.run_rows(
            state,
            suffix * len(chunk),
            fwd_hooks=lambda sites, chunk=chunk: _site_hooks(adapter.hook_names, chunk, V, sites),
        )
        z = suffix_scores(logits, q, len(chunk))
        out.append(torch.softmax(z.float(), dim=-1).cpu())
        del logits
    return torch.cat(out)


def _probs_full(adapter: ModelAdapter, queries: Sequence[Query], cond: Condition, batch_size: int) -> list[Tensor]:
    def hooks_at(site: Tensor) -> list[tuple[str, Any]]:
        return [h for iv in cond for h in make_hooks(adapter.hook_names, iv, site)]

    return predict(adapter, queries, fwd_hooks=hooks_at if cond else (), batch_size=batch_size)


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------
def _role_interventions(
    neurons: dict[str, list[tuple[int, int]]], spec: tuple[tuple[str, str], ...], cfg: EvalConfig
) -> Condition:
    return [
        Intervention(tuple(neurons[role]), mode, cfg.factor, None, cfg.positions)
        for role, mode in spec
        if neurons[role]
    ]


def _check_disjoint(result: NeuronResult, heldout: Task, demo_items: Sequence[Item]) -> None:
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
    demo_keys = {d.content_key() for d in demo_items}
    both = [it.id for it in heldout.items if it.content_key() in demo_keys]
    if both:
        raise TaskError(f"held-out item {both[0]!r} is also a demonstration; demos must come from other items")


def evaluate(
    model: Any,
    result: NeuronResult,
    heldout: Task,
    *,
    demos: Task | Sequence[Item] | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
    allow_overlap: bool = False,
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
        **options: Any :class:`EvalConfig` field, e.g. ``n_random=3``, ``factor=4.0``.

    Returns:
        An :class:`EvalResult` (baseline row first).

    Raises:
        TaskError: overlapping items or demos, malformed tasks.
        ValueError: a result for another model shape, bad options.
    """
    cfg = EvalConfig.from_options(config, **options)
    if not isinstance(heldout, Task):
        raise TaskError(f"heldout must be a tl_neuronllm.Task, got {type(heldout).__name__}")
    t0 = time.perf_counter()
    result._check_model(model)
    if cfg.k is not None:
        result = result.with_k(cfg.k)
    icfg = identify_config_of(result)
    adapter = ModelAdapter(model, hook=icfg.hook, kv_cache=icfg.kv_cache)
    scored, demo_items = choose_demos(heldout, icfg.n_shots, icfg.seed, demos)
    if not allow_overlap:
        _check_disjoint(result, scored, demo_items)
    engine = cfg.engine if cfg.engine != "auto" else ("prefix" if cfg.positions == "site" else "full")

    # ---- conditions -------------------------------------------------------------------------
    positive_only = bool(result.stats.get("positive_only", False))
    ident = {"good": [(n.layer, n.neuron) for n in result.good], "bad": [(n.layer, n.neuron) for n in result.bad]}
    counts = {"good": result.layer_counts("good"), "bad": result.layer_counts("bad")}
    exclude = result.mask("both")
    random_sets = []
    excluded_all = True
    for s in range(cfg.n_random):
        sets, ok = matched_random_sets(counts, result.d_mlp, seed=cfg.seed + s, exclude=exclude)
        random_sets.append(sets)
        excluded_all &= ok
    names: list[str] = ["baseline"]
    conds: list[Condition] = [[]]
    na: dict[str, str] = {}
    for name in cfg.interventions:
        spec = INTERVENTIONS[name][1]
        roles = {role for role, _ in spec}
        missing = [r for r in roles if not ident[r]]
        if missing:
            na[name] = (
                "positive-only method: no bad set"
                if positive_only and "bad" in missing
                else f"no {' / '.join(sorted(missing))} neurons"
            )
            continue
        names.append(name)
        conds.append(_role_interventions(ident, spec, cfg))
        for s, sets in enumerate(random_sets):
            names.append(f"{name}@random{s}")
            conds.append(_role_interventions(sets, spec, cfg))

    # ---- run ----------------------------------------------------------------------------------
    queries = build_queries(adapter, scored, icfg, demo_items)  # tokenizer only: errors before any model time
    flat = [q for qs in queries for q in qs]
    item_of = np.array([i for i, qs in enumerate(queries) for _ in qs])
    with preserved_model_state(model), torch.no_grad():
        adapter.check_widths()
        probs: list[list[Tensor]] = [[] for _ in conds]  # [condition][query]
        if engine == "prefix":
            adapter.share_prefix([q.prompt for q in flat])
            it: Any = flat
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(flat, desc=f"evaluate ({len(conds)} conditions)", unit="question")
            for q in it:
                p = _probs_prefix(adapter, q, conds, cfg.memory_budget_mb)
                for c in range(len(conds)):
                    probs[c].append(p[c])
        else:
            it = range(len(conds))
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(it, desc=f"evaluate ({len(flat)} questions)", unit="condition")
            for c in it:
                probs[c] = _probs_full(adapter, flat, conds[c], cfg.batch_size)

    # ---- statistics ---------------------------------------------------------------------------
    ids = [it.id for it in scored.items]
    check_finite_probs([[p] for p in probs[0]], [ids[i] for i in item_of], "evaluate (baseline)")
    n_items = len(queries)
    n_opt = max(q.n_options for q in flat)
    letters = list(LETTERS[:n_opt])
    gold = np.array([q.gold for q in flat])
    boot = bootstrap_indices(n_items, cfg.n_boot, cfg.seed)
    base = score_predictions(probs[0], gold, item_of, n_items)
    rows: list[EvalRow] = [
        EvalRow(
            "baseline",
            "baseline",
            metrics=base.metrics,
            ci=base.intervals(boot, cfg.ci),
            letters=letter_counts(base.pred, n_opt),
            predictions=base.pred.tolist(),
        )
    ]
    index = {n: i for i, n in enumerate(names)}
    for name in cfg.interventions:
        desc = INTERVENTIONS[name][0]
        if name in na:
            rows.append(EvalRow(name, desc, available=False, note=na[name], paper_name=PAPER_NAMES.get(name, "")))
            continue
        sc = score_predictions(probs[index[name]], gold, item_of, n_items, base=base)
        roles = {role for role, _ in INTERVENTIONS[name][1]}
        rnd: dict[str, Any] = {}
        if cfg.n_random:
            per_seed: dict[str, list[float]] = {}
            let_sum = np.zeros(n_opt)
            for s in range(cfg.n_random):
                rs = score_predictions(probs[index[f"{name}@random{s}"]], gold, item_of, n_items, base=base)
                for k in METRICS:
                    per_seed.setdefault(k, []).append(rs.metrics[k])
                for k in ("accuracy", "gold_prob", "consistent_accuracy"):
                    per_seed.setdefault(f"delta_{k}", []).append(rs.metrics[k] - base.metrics[k])
                for rk, k in RELATIVE.items():
                    per_seed.setdefault(rk, []).append(relative_change(rs.metrics[k], base.metrics[k]))
                let_sum += np.bincount(rs.pred, minlength=n_opt)
            rnd = {
                "seeds": [cfg.seed + s for s in range(cfg.n_random)],
                "excluded_identified": excluded_all,
                "metrics": {k: _spread(v) for k, v in per_seed.items()},
                "letters_mean": {letters[i]: float(let_sum[i] / cfg.n_random) for i in range(n_opt)},
            }
        rows.append(
            EvalRow(
                name,
                desc,
                n_good=len(ident["good"]) if "good" in roles else 0,
                n_bad=len(ident["bad"]) if "bad" in roles else 0,
                metrics=sc.metrics,
                ci=sc.intervals(boot, cfg.ci),
                delta={k: sc.metrics[k] - base.metrics[k] for k in ("accuracy", "gold_prob", "consistent_accuracy")},
                delta_ci=sc.intervals(boot, cfg.ci, minus=base),
                relative={rk: relative_change(sc.metrics[k], base.metrics[k]) for rk, k in RELATIVE.items()},
                relative_ci=sc.relative_intervals(boot, cfg.ci, base),
                paper_name=PAPER_NAMES.get(name, ""),
                mcnemar=sc.mcnemar(base, "correct"),
                mcnemar_consistent=sc.mcnemar(base, "consistent"),
                letters=letter_counts(sc.pred, n_opt),
                random=rnd,
                predictions=sc.pred.tolist(),
            )
        )

    tcfg = result.config.get("task", {})
    info = {
        "model_name": result.config.get("model", {}).get("model_name", "?"),
        "method": result.config.get("method", "?"),
        "k": result.config.get("k"),
        "n_good": len(result.good),
        "n_bad": len(result.bad),
        "positive_only": positive_only,
        "identify_task": tcfg.get("name"),
        "n_scored": tcfg.get("n_scored"),
        "identify_stats": {
            k: result.stats[k] for k in ("accuracy", "gold_prob", "consistent_accuracy", "seconds") if k in result.stats
        },
    }
    ecfg = asdict(cfg)
    ecfg["engine"] = engine
    return EvalResult(
        rows=rows,
        task=scored.name,
        mode=icfg.mode,
        n_items=n_items,
        n_queries=len(flat),
        letters=letters,
        config={
            "eval": ecfg,
            "identify": icfg.to_dict(),
            "demo_ids": [d.id for d in demo_items],
            "item_ids": [it.id for it in scored.items],
            "kv_backend": adapter.kv_backend,
            "fast_paths": adapter.fast.to_dict(),
            "versions": _versions(),
        },
        result_info=info,
        seconds=time.perf_counter() - t0,
    )


def _spread(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "values": [float(x) for x in v],
    }
