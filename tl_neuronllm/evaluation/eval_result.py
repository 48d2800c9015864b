"""The result types of a held-out evaluation: :class:`EvalRow` (one condition) and :class:`EvalResult` (the
table), with their persistence (``evaluation.json`` + ``evaluation.md``). The text views (:meth:`EvalResult.table`,
:meth:`EvalResult.to_markdown`, ...) are drawn by :mod:`tl_neuronllm.report.markdown`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tl_neuronllm.errors import MismatchError
from tl_neuronllm.evaluation.stats import RELATIVE

EVAL_JSON = "evaluation.json"
EVAL_MD = "evaluation.md"
EVAL_FORMAT = "tl_neuronllm.EvalResult/1"


@dataclass
class EvalRow:
    """One condition of the evaluation table.

    Attributes:
        name: Condition key (``"baseline"`` or a key of :data:`tl_neuronllm.evaluation.conditions.INTERVENTIONS`).
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
            the baseline (:func:`tl_neuronllm.evaluation.stats.relative_change`; our reading of the paper's measures);
            ``relative_ci``: their paired bootstrap intervals.
        paper_name: ``"Enhance"`` / ``"Degrade"`` for the joint conditions
            (:data:`tl_neuronllm.evaluation.conditions.PAPER_NAMES`), else ``""``.
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
        """The row as plain JSON-able data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalRow:
        """A row from :meth:`to_dict` output (unknown keys are ignored).

        Raises:
            TypeError: a required key is missing.
        """
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
        config: The :class:`tl_neuronllm.evaluation.evaluate.EvalConfig` and the identification options used for rendering.
        result_info: Facts about the evaluated :class:`tl_neuronllm.NeuronResult` (model, method, k, set sizes).
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
        """The baseline row (the first)."""
        return self.rows[0]

    def row(self, name: str) -> EvalRow:
        """The row of a condition.

        Raises:
            KeyError: naming the rows there are.
        """
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r.name for r in self.rows]}")

    def check_of(self, result: Any) -> None:
        """Refuse a result other than the one this evaluation measured (by the fingerprint recorded in
        ``result_info``: the good and bad sets, hook, method, model and items; evaluations saved before it
        was recorded are checked by ``k`` and the set sizes).

        Raises:
            MismatchError: naming what differs.
        """
        ri = self.result_info
        want = ri.get("result_fingerprint")
        if want is not None:
            if want != result.fingerprint():
                raise MismatchError(
                    f"this evaluation (of {ri.get('n_good')} good / {ri.get('n_bad')} bad neurons, k={ri.get('k')}, "
                    f"method {ri.get('method')!r}) is of another result than the one given ({len(result.good)} good / "
                    f"{len(result.bad)} bad, k={result.config.get('k')}); report a result with its own evaluation"
                )
            return
        have = (len(result.good), len(result.bad), result.config.get("k"))
        if ("n_good" in ri and "n_bad" in ri) and (ri["n_good"], ri["n_bad"], ri.get("k")) != have:
            raise MismatchError(
                f"this evaluation is of a result with {ri['n_good']} good / {ri['n_bad']} bad neurons (k={ri.get('k')}), "
                f"the one given has {have[0]} / {have[1]} (k={have[2]})"
            )

    # ---- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The evaluation as plain data, with its ``format`` tag."""
        d = asdict(self)
        d["format"] = EVAL_FORMAT
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        """An evaluation from :meth:`to_dict` output (unknown keys, such as ``format``, are ignored).

        Raises:
            KeyError: without ``rows``; TypeError: a required key is missing.
        """
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
        """Read an evaluation saved with :meth:`save` (a directory or the JSON file).

        Raises:
            FileNotFoundError: no such file; ValueError: a file that is not a readable evaluation.
        """
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

    # ---- views (the tables at the end of this module) --------------------------------------------------------------------------
    def table_rows(self) -> list[list[str]]:
        """The compact table: header row, then one row per condition."""
        return table_rows(self)

    def paper_rows(self) -> list[list[str]]:
        """The paper's measures: header, then per intervention its name (Degrade / Enhance for the joint
        conditions), RAC and RCC with paired bootstrap intervals, and the random sets' mean RAC / RCC."""
        return paper_rows(self)

    def table(self) -> str:
        """A plain-text table for the terminal."""
        return evaluation_table(self)

    def to_markdown(self) -> str:
        """The evaluation table and its legend as markdown."""
        return evaluation_markdown(self)


# ------------------------------------------------------------------------------------------------
# the tables (the report reuses them)
# ------------------------------------------------------------------------------------------------


def letters_str(counts: Mapping[str, float], total: int) -> str:
    parts = [(k, v) for k, v in counts.items() if v]
    parts.sort(key=lambda kv: -kv[1])
    return " ".join(f"{k}:{100 * v / max(total, 1):.0f}%" for k, v in parts[:4])


def table_rows(ev: EvalResult) -> list[list[str]]:
    """The compact table: header row, then one row per condition."""
    ci = int(round(100 * ev.config.get("eval", {}).get("ci", 0.95)))
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
    for r in ev.rows:
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
                "" if base else fmt_p(r.mcnemar.get("p", float("nan"))),
                letters_str(r.letters, ev.n_queries),
            ]
        )
    return out


def paper_rows(ev: EvalResult) -> list[list[str]]:
    """The paper's measures: header, then per intervention its name (Degrade / Enhance for the joint
    conditions), RAC and RCC with paired bootstrap intervals, and the random sets' mean RAC / RCC."""
    ci = int(round(100 * ev.config.get("eval", {}).get("ci", 0.95)))
    out = [["condition", "paper name", "RAC", f"RAC {ci}% CI", "random RAC", "RCC", f"RCC {ci}% CI", "random RCC"]]
    fmt = lambda x: "n/a" if x is None or x != x else f"{x:+.3f}"
    for r in ev.rows[1:]:
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


def evaluation_table(ev: EvalResult) -> str:
    """A plain-text table for the terminal."""
    rows = table_rows(ev)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = (
        f"{ev.task}: {ev.n_items} held-out items x proxies = {ev.n_queries} questions, mode {ev.mode}, "
        f"random control: {ev.config.get('eval', {}).get('n_random', 0)} seeds"
    )
    return title + "\n" + "\n".join(lines)


def evaluation_markdown(ev: EvalResult) -> str:
    """The evaluation table and its legend as markdown."""
    rows = table_rows(ev)
    md = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    e = ev.config.get("eval", {})
    ri = ev.result_info
    head = [
        f"## Held-out evaluation: {ev.task}",
        "",
        f"Model {ri.get('model_name', '?')}, neurons from {ri.get('method', '?')} on {ri.get('n_scored', '?')} "
        f"identification items ({ri.get('n_good', 0)} good, {ri.get('n_bad', 0)} bad). "
        f"{ev.n_items} held-out items x proxies = {ev.n_queries} questions, mode {ev.mode}, "
        f"interventions at the {e.get('positions', 'site')}, enhance factor {e.get('factor', 2.0)}, "
        f"{e.get('n_random', 0)} random sets per condition, {e.get('n_boot', 0)} bootstrap resamples. "
        f"Evaluation took {ev.seconds:.1f} s.",
        "",
    ]
    paper = paper_rows(ev)
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


def fmt_p(p: float) -> str:
    if p != p:  # nan
        return ""
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


__all__ = [
    "EVAL_FORMAT",
    "EVAL_JSON",
    "EVAL_MD",
    "EvalResult",
    "EvalRow",
    "evaluation_markdown",
    "evaluation_table",
    "fmt_p",
    "letters_str",
    "paper_rows",
    "table_rows",
]
