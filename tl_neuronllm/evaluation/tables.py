"""The evaluation tables of an :class:`~tl_neuronllm.evaluation.eval_result.EvalResult`: the compact table, the
paper's measures (RAC / RCC), the controls, and their plain-text and markdown renderings (the report reuses them).

The functions take any object with an evaluation's fields (:class:`EvalView`), so this module does not import
:mod:`tl_neuronllm.evaluation.eval_result` (which imports it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tl_neuronllm.evaluation.stats import RELATIVE


class EvalView(Protocol):
    """What the tables read of an :class:`~tl_neuronllm.evaluation.eval_result.EvalResult`."""

    @property
    def rows(self) -> Sequence[Any]: ...
    @property
    def task(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def n_items(self) -> int: ...
    @property
    def n_queries(self) -> int: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def result_info(self) -> dict[str, Any]: ...
    @property
    def seconds(self) -> float: ...


def letters_str(counts: Mapping[str, float], total: int) -> str:
    parts = [(k, v) for k, v in counts.items() if v]
    parts.sort(key=lambda kv: -kv[1])
    return " ".join(f"{k}:{100 * v / max(total, 1):.0f}%" for k, v in parts[:4])


def table_rows(ev: EvalView) -> list[list[str]]:
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


def paper_rows(ev: EvalView) -> list[list[str]]:
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


def control_rows(ev: EvalView) -> list[list[str]]:
    """Balanced accuracy, rank p against the random sets and the off-task controls: header, then one row per
    intervention (empty when the evaluation predates them)."""
    if not any(r.rank_p or r.control for r in ev.rows[1:]):
        return []
    f = lambda x: "" if x is None or x != x else f"{x:+.3f}"
    ci = lambda c: "" if not c or c[0] != c[0] else f"[{c[0]:+.3f}, {c[1]:+.3f}]"
    out = [
        [
            "condition",
            "Δbal acc",
            "Δbal acc CI",
            "rank p (gold p)",
            "rank p (acc)",
            "random/identified |act|",
            "off-task Δgold p",
            "off-task CI",
            "Δloss/token",
            "Δloss CI",
            "specificity",
            "specificity CI",
        ]
    ]
    for r in ev.rows[1:]:
        if not r.available:
            out.append([r.description] + ["n/a"] + [""] * 10)
            continue
        ratio = (r.random or {}).get("match_ratio", {})
        ratio_s = " / ".join(f"{k} {v:.2f}" for k, v in ratio.items() if v == v)
        c = r.control or {}
        task, text = c.get("task", {}), c.get("text", {})
        spec = c.get("specificity")
        out.append(
            [
                r.description,
                f(r.delta.get("balanced_accuracy")),
                ci(r.delta_ci.get("balanced_accuracy")),
                fmt_p(r.rank_p.get("gold_prob", float("nan"))),
                fmt_p(r.rank_p.get("accuracy", float("nan"))),
                ratio_s,
                f(task.get("delta", {}).get("gold_prob")),
                ci(task.get("delta_ci", {}).get("gold_prob")),
                f(text.get("delta_loss")),
                ci(text.get("delta_loss_ci")),
                "" if spec is None or spec != spec else f"{spec:.2f}",
                ""
                if not c.get("specificity_ci") or c["specificity_ci"][0] != c["specificity_ci"][0]
                else f"[{c['specificity_ci'][0]:.2f}, {c['specificity_ci'][1]:.2f}]",
            ]
        )
    return out


def evaluation_table(ev: EvalView) -> str:
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


def evaluation_markdown(ev: EvalView) -> str:
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
    extra = control_rows(ev)
    if extra:
        md += [
            "",
            "Against the random sets and off-task (rank p: one-sided, floor 1/(n+1); specificity: |Δgold p on task| / "
            "(|on task| + |off task|); Δloss: language-model loss per token on the control passages, neurons acted "
            "on at every position):",
            "",
            "| " + " | ".join(extra[0]) + " |",
            "|" + "---|" * len(extra[0]),
        ]
        md += ["| " + " | ".join(x) + " |" for x in extra[1:]]
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
    "EvalView",
    "control_rows",
    "evaluation_markdown",
    "evaluation_table",
    "fmt_p",
    "letters_str",
    "paper_rows",
    "table_rows",
]
