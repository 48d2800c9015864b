"""Text and markdown views of a :class:`NeuronResult` and its :class:`EvalResult`, and the report.

* :func:`table_rows`, :func:`paper_rows`, :func:`evaluation_table`, :func:`evaluation_markdown`: the evaluation
  table (also as :meth:`EvalResult.table`, :meth:`EvalResult.to_markdown`, ...);
* :func:`verdict`: an intervention's change against the expected direction and the random sets;
* :func:`write_report` draws the figures (:mod:`tl_neuronllm.report.figures`) and writes ``report.md`` (the result
  summary, identification statistics, the top neurons, the evaluation table and the figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tl_neuronllm.errors import ConfigError
from tl_neuronllm.evaluation.conditions import EXPECTED_DIRECTION
from tl_neuronllm.evaluation.eval_result import EvalResult
from tl_neuronllm.evaluation.tables import evaluation_markdown, evaluation_table, paper_rows, table_rows
from tl_neuronllm.report.figures import (
    FIGURES,
    make_figures,
    plot_ace_distribution,
    plot_interventions,
    plot_layer_counts,
    plot_letters,
)
from tl_neuronllm.result.neuron_result import NeuronResult

REPORT_MD = "report.md"


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------
def _neuron_table(result: NeuronResult, n: int = 10) -> list[str]:
    lines = ["| rank | good neuron | ACE | bad neuron | ACE |", "|---|---|---|---|---|"]
    for i in range(min(n, max(len(result.good), len(result.bad)))):
        g = result.good[i] if i < len(result.good) else None
        b = result.bad[i] if i < len(result.bad) else None
        lines.append(
            f"| {i + 1} | {g.label if g else ''} | {f'{g.score:.3g}' if g else ''} | "
            f"{b.label if b else ''} | {f'{b.score:.3g}' if b else ''} |"
        )
    return lines


def report_markdown(
    result: NeuronResult,
    evaluation: EvalResult | None,
    figures: dict[str, Path] | None = None,
    *,
    base: str | Path | None = None,
    run_info: dict[str, Any] | None = None,
) -> str:
    """The markdown report (figure links relative to ``base``)."""
    c, st = result.config, result.stats
    model = c.get("model", {})
    task = c.get("task", {})
    lines = [
        f"# NeuronLLM report: {model.get('model_name', '?')} on {task.get('name', '?')}",
        "",
        "## Identification",
        "",
        f"- model: {model.get('model_name', '?')} ({model.get('n_layers', '?')} layers x {model.get('d_mlp', '?')} "
        f"neurons at `{model.get('hook', 'hook_post')}`)",
        f"- method: {c.get('method', '?')} (steps {c.get('steps', '?')}, rule {c.get('ig_rule', '?')}), target "
        f"{c.get('target', '?')}, mode {c.get('mode', '?')}"
        + (
            f", options listed: {'unlettered' if c.get('cloze_listing') else c.get('show_options')}"
            if c.get("mode") == "cloze"
            else ""
        ),
        f"- items scored: {task.get('n_scored', '?')} x {c.get('n_proxies', '?')} proxies ({st.get('n_queries', '?')} "
        f"questions), {c.get('n_shots', '?')}-shot, seed {c.get('seed', '?')}",
        f"- k = {c.get('k', '?')}: {len(result.good)} good and {len(result.bad)} bad neurons"
        + (" (positive-only method: no bad set)" if st.get("positive_only") else ""),
        f"- model on the identification items: accuracy {_f(st.get('accuracy'))}, consistent accuracy "
        f"{_f(st.get('consistent_accuracy'))}, gold probability {_f(st.get('gold_prob'))}",
        f"- time: {_f(st.get('seconds'), '.1f')} s",
    ]
    if run_info:
        lines.append(f"- run: {', '.join(f'{k}={v}' for k, v in run_info.items())}")
    lines += ["", *_neuron_table(result), ""]
    lines += [
        "Good per layer: " + str(result.layer_counts("good")),
        "",
        "Bad per layer: " + str(result.layer_counts("bad")),
        "",
    ]
    figures = figures or {}

    def img(name: str, alt: str) -> list[str]:
        if name not in figures:
            return []
        p = Path(figures[name])
        rel = p.relative_to(base) if base is not None and p.is_relative_to(base) else p
        return [f"![{alt}]({rel.as_posix()})", ""]

    lines += img("layer_counts", "good and bad neurons per layer")
    lines += img("ace_distribution", "ACE score distribution")
    if evaluation is not None:
        lines += [evaluation.to_markdown().replace("## Held-out", "## Held-out", 1), ""]
        lines += img("interventions", "intervention effects vs random control")
        lines += img("letters", "predicted letters per condition")
        lines += ["## Reading the table", "", *_reading(evaluation), ""]
    return "\n".join(lines)


def _f(v: Any, fmt: str = ".3f") -> str:
    return "?" if v is None else format(float(v), fmt)


def verdict(row: Any, metric: str = "gold_prob") -> str:
    """Read an intervention's change of ``metric`` from its paired interval and its rank p against the random sets.

    Returns ``"n/a"``, ``"no change"``, ``"no clear change (interval covers 0)"``, ``"opposite to expected"``
    (interval excludes 0 the other way), ``"expected direction (no random control)"``, or for an interval
    that excludes 0 in the expected direction: ``"expected direction, beyond every random set (rank p = ...)"``
    (no random set as extreme: rank p at its floor 1/(n+1)), ``"expected direction, beyond the random sets
    (rank p = ...)"`` (rank p <= 0.05) or ``"expected direction, within the random range (rank p = ...)"``.
    A change whose interval covers 0 is never called beyond the random sets.
    """
    if not row.available:
        return "n/a"
    delta = row.delta[metric]
    if abs(delta) < 1e-12:
        return "no change"
    lo, hi = row.delta_ci.get(metric, [float("nan"), float("nan")])
    if lo == lo and hi == hi and lo <= 0 <= hi:
        return "no clear change (interval covers 0)"
    if delta * EXPECTED_DIRECTION[row.name] < 0:
        return "opposite to expected"
    rm = row.random.get("metrics", {}).get(f"delta_{metric}") if row.random else None
    if rm is None:
        return "expected direction (no random control)"
    n = len(rm.get("values", []))
    p = (getattr(row, "rank_p", None) or {}).get(metric)
    if p is None or p != p:  # an evaluation saved before rank p: count the random sets at least as extreme
        vals = rm.get("values", [])
        sign = EXPECTED_DIRECTION[row.name]
        p = (1 + sum(1 for v in vals if sign * v >= sign * delta)) / (len(vals) + 1)
    ps = f"rank p = {p:.2g}, {n} random sets"
    if p <= 1 / (n + 1) + 1e-12:
        return f"expected direction, beyond every random set ({ps})"
    if p <= 0.05:
        return f"expected direction, beyond the random sets ({ps})"
    return f"expected direction, within the random range ({ps})"


def _reading(ev: EvalResult) -> list[str]:
    """Plain statements comparing each intervention with its random control."""
    out = []
    for r in ev.rows[1:]:
        if not r.available:
            out.append(f"- {r.description}: n/a ({r.note}).")
            continue
        rnd = r.random.get("metrics", {}) if r.random else {}
        ra, rg, rc = rnd.get("delta_accuracy"), rnd.get("delta_gold_prob"), rnd.get("changed")
        lo, hi = r.delta_ci["accuracy"]
        glo, ghi = r.delta_ci["gold_prob"]
        exp = "rise" if EXPECTED_DIRECTION[r.name] > 0 else "fall"
        s = (
            f"- **{r.description}** ({r.n_good} good, {r.n_bad} bad; expected: scores {exp}): "
            f"gold probability {r.delta['gold_prob']:+.3f} [{glo:+.3f}, {ghi:+.3f}], accuracy "
            f"{r.delta['accuracy']:+.3f} [{lo:+.3f}, {hi:+.3f}] (McNemar p = {r.mcnemar['p']:.2g}), "
            f"{100 * r.metrics['changed']:.0f}% of the predictions changed"
        )
        if ra and rg and rc:
            s += (
                f"; {len(rc['values'])} random sets: gold probability {rg['mean']:+.3f} ± {rg['sd']:.3f} "
                f"(range {rg['min']:+.3f} to {rg['max']:+.3f}), accuracy {ra['mean']:+.3f} ± {ra['sd']:.3f}, "
                f"{100 * rc['mean']:.0f}% changed"
            )
        s += f". Gold probability: {verdict(r)}."
        out.append(s)
    return out


def check_report_inputs(result: Any, evaluation: Any, where: str) -> None:
    """Refuse a report of something that is not a result, of an evaluation that is not one, or of an
    evaluation of another result (:meth:`EvalResult.check_of`).

    Raises:
        ConfigError: wrong types (naming the argument); MismatchError: an evaluation of another result.
    """
    if not isinstance(result, NeuronResult):
        raise ConfigError(f"{where}: result must be a NeuronResult, got {type(result).__name__}")
    if evaluation is None:
        return
    if not isinstance(evaluation, EvalResult):
        hint = (
            " (the output folder is the third argument, or out_dir=...)" if isinstance(evaluation, (str, Path)) else ""
        )
        raise ConfigError(
            f"{where}: evaluation must be an EvalResult or None, got {type(evaluation).__name__} {evaluation!r}{hint}"
        )
    evaluation.check_of(result)


def write_report(
    result: NeuronResult,
    evaluation: EvalResult | None,
    out_dir: str | Path,
    *,
    run_info: dict[str, Any] | None = None,
    figures_dir: str = "figures",
) -> Path:
    """Draw the figures into ``out_dir/figures`` and write ``out_dir/report.md``; returns its path.

    Raises:
        ConfigError: ``evaluation`` that is not an :class:`EvalResult`; MismatchError: an evaluation of another
            result.
    """
    check_report_inputs(result, evaluation, "write_report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = make_figures(result, evaluation, out / figures_dir)
    md = report_markdown(result, evaluation, figs, base=out, run_info=run_info)
    path = out / REPORT_MD
    path.write_text(md)
    return path


__all__: Sequence[str] = (
    "FIGURES",
    "check_report_inputs",
    "evaluation_markdown",
    "evaluation_table",
    "make_figures",
    "plot_ace_distribution",
    "plot_interventions",
    "plot_layer_counts",
    "paper_rows",
    "plot_letters",
    "report_markdown",
    "table_rows",
    "verdict",
    "write_report",
)
