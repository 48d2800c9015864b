"""The result types of a held-out evaluation: :class:`EvalRow` (one condition) and :class:`EvalResult` (the
table), with their persistence (``evaluation.json`` + ``evaluation.md``). The text views (:meth:`EvalResult.table`,
:meth:`EvalResult.to_markdown`, ...) are drawn by :mod:`tl_neuronllm.report.markdown`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tl_neuronllm.errors import MismatchError
from tl_neuronllm.evaluation.tables import evaluation_markdown, evaluation_table, paper_rows, table_rows
from tl_neuronllm.html_view import grid, panel, require_pandas, task_base

EVAL_JSON = "evaluation.json"
EVAL_MD = "evaluation.md"
EVAL_FORMAT = "tl_neuronllm.EvalResult/1"
_OPTIONAL_ROW_KEYS = ("rank_p", "control")


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
        rank_p: Per metric (``accuracy``, ``gold_prob``, ``balanced_accuracy``), the one-sided rank p-value of
            the change against the random sets' changes in the expected direction
            (:func:`tl_neuronllm.evaluation.stats.rank_p_value`; floor ``1 / (n_random + 1)``).
        control: The off-task record (:mod:`tl_neuronllm.evaluation.controls`): ``task`` (Δaccuracy, Δgold
            probability, Δbalanced accuracy on the control task and their intervals), ``text`` (Δloss per token
            on the control passages), ``specificity`` and ``specificity_ci``.
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
    rank_p: dict[str, float] = field(default_factory=dict)
    control: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The row as plain JSON-able data (``rank_p`` and ``control`` only when set)."""
        d = asdict(self)
        for key in _OPTIONAL_ROW_KEYS:
            if not d[key]:
                del d[key]
        return d

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
        per_item: Per-item values (``evaluation.json["per_item"]``): ``item_ids``, ``labels``, per condition the
            items' mean gold probability, share correct and consistency (``conditions``), the same averaged over
            the random sets (``random_mean``), and the controls' per-item values (``control``).
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
    per_item: dict[str, Any] = field(default_factory=dict)

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
        d["rows"] = [r.to_dict() for r in self.rows]
        if not d["per_item"]:
            del d["per_item"]
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

    # ---- views (the tables: tl_neuronllm.evaluation.tables) --------------------------------------------------------------------------
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

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per condition (baseline first), numbers as float64 columns (NaN
        where a row has none, e.g. n/a rows): ``accuracy``, ``gold_prob``, ... with their intervals as
        ``accuracy_lo`` / ``accuracy_hi``; ``delta_*`` (minus the baseline) with ``delta_*_lo`` / ``_hi``;
        ``RAC`` / ``RCC`` with theirs; ``random_delta_*_mean`` / ``_sd`` (the random sets); ``mcnemar_p``.
        ``condition`` is the row's key, ``description`` its text.

        Raises:
            MissingDependency: (an ``ImportError``) if pandas is not installed.
        """
        pd = require_pandas()
        recs = [frame_record(r) for r in self.rows]
        num_cols = sorted({k for rec in recs for k, v in rec.items() if isinstance(v, float)})
        text = ["condition", "description", "paper_name", "available", "n_good", "n_bad"]
        df = pd.DataFrame(recs, columns=text + num_cols)
        return df.astype(dict.fromkeys(num_cols, "float64") | {"n_good": "int64", "n_bad": "int64", "available": bool})

    def _repr_html_(self) -> str:
        rows = table_rows(self)
        e = self.config.get("eval", {})
        ri = self.result_info
        note = (
            f"{self.n_items} held-out items × proxies = {self.n_queries} questions, mode {self.mode}; neurons from "
            f"{ri.get('method', '?')} ({ri.get('n_good', 0)} good, {ri.get('n_bad', 0)} bad); "
            f"{e.get('n_random', 0)} random sets per condition (mean ± sd), {e.get('n_boot', 0)} bootstrap "
            "resamples. to_pandas() has the numbers."
        )
        title = f"EvalResult: {ri.get('model_name', '?')} on {task_base(self.task)} ({self.n_items} held-out items)"
        return panel(title, grid(rows[0], rows[1:], classes=[""] * (len(rows[0]) - 1) + ["txt"]), note)


# ------------------------------------------------------------------------------------------------
# the pandas view (the tables are in tl_neuronllm.evaluation.tables)
# ------------------------------------------------------------------------------------------------


def frame_record(r: EvalRow) -> dict[str, Any]:
    """One row of :meth:`EvalResult.to_pandas`: text fields, then every number as a float."""
    nan = float("nan")
    rec: dict[str, Any] = {
        "condition": r.name,
        "description": r.description,
        "paper_name": r.paper_name,
        "available": bool(r.available),
        "n_good": int(r.n_good),
        "n_bad": int(r.n_bad),
    }

    def put(name: str, v: Any, ci: Any = None) -> None:
        rec[name] = nan if v is None else float(v)
        if ci is not None:
            lo, hi = (list(ci) + [None, None])[:2] if ci else (None, None)
            rec[f"{name}_lo"] = nan if lo is None else float(lo)
            rec[f"{name}_hi"] = nan if hi is None else float(hi)

    for k, v in r.metrics.items():
        put(k, v, r.ci.get(k, []))
    for k, v in r.delta.items():
        put(f"delta_{k}", v, r.delta_ci.get(k, []))
    for k, v in r.relative.items():
        put(k, v, r.relative_ci.get(k, []))
    for k, x in (r.random.get("metrics", {}) if r.random else {}).items():
        if isinstance(x, dict) and "mean" in x:
            put(f"random_{k}_mean", x["mean"])
            put(f"random_{k}_sd", x.get("sd"))
    if r.mcnemar:
        put("mcnemar_p", r.mcnemar.get("p"))
    return rec


__all__ = [
    "EVAL_FORMAT",
    "EVAL_JSON",
    "EVAL_MD",
    "EvalResult",
    "EvalRow",
    "frame_record",
]
