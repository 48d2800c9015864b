"""The result types of a held-out evaluation: :class:`EvalRow` (one condition) and :class:`EvalResult` (the
table), with their persistence (``evaluation.json`` + ``evaluation.md``). The text views (:meth:`EvalResult.table`,
:meth:`EvalResult.to_markdown`, ...) are drawn by :mod:`tl_neuronllm.report`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

EVAL_JSON = "evaluation.json"
EVAL_MD = "evaluation.md"
EVAL_FORMAT = "tl_neuronllm.EvalResult/1"


@dataclass
class EvalRow:
    """One condition of the evaluation table.

    Attributes:
        name: Condition key (``"baseline"`` or a key of :data:`tl_neuronllm.eval_conditions.INTERVENTIONS`).
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
            the baseline (:func:`tl_neuronllm.stats.relative_change`; our reading of the paper's measures);
            ``relative_ci``: their paired bootstrap intervals.
        paper_name: ``"Enhance"`` / ``"Degrade"`` for the joint conditions
            (:data:`tl_neuronllm.eval_conditions.PAPER_NAMES`), else ``""``.
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
        config: The :class:`tl_neuronllm.evaluate.EvalConfig` and the identification options used for rendering.
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

    # ---- views (drawn by tl_neuronllm.report; imported here on use because the report stage sits above this
    # one and imports these types) --------------------------------------------------------------------------
    def table_rows(self) -> list[list[str]]:
        """The compact table: header row, then one row per condition."""
        from .report import table_rows

        return table_rows(self)

    def paper_rows(self) -> list[list[str]]:
        """The paper's measures: header, then per intervention its name (Degrade / Enhance for the joint
        conditions), RAC and RCC with paired bootstrap intervals, and the random sets' mean RAC / RCC."""
        from .report import paper_rows

        return paper_rows(self)

    def table(self) -> str:
        """A plain-text table for the terminal."""
        from .report import evaluation_table

        return evaluation_table(self)

    def to_markdown(self) -> str:
        """The evaluation table and its legend as markdown."""
        from .report import evaluation_markdown

        return evaluation_markdown(self)


__all__ = ["EVAL_FORMAT", "EVAL_JSON", "EVAL_MD", "EvalResult", "EvalRow"]
