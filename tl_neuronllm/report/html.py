"""A single-file HTML report of a :class:`NeuronResult`, its :class:`EvalResult` and its :class:`Explanation`.

:func:`report_html` writes ``report.html``: what was run (model, task, split, options, versions), the
held-out intervention table with its bootstrap intervals and the random-set spread, the figures of
:mod:`tl_neuronllm.report.markdown` (embedded as PNG data URIs), and an interactive neuron table (sort by any
column, filter by role and layer) in which every neuron opens a card with its explanation and a
histogram of its site activation on questions the model answers right vs wrong.

The file is self-contained: no network, no CDN, no external file; it works from ``file://``. The
data sit in one ``<script type="application/json">`` block and about 150 lines of plain JavaScript
render the table and the cards (text goes in through ``textContent``, never as HTML).
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tl_neuronllm.evaluation.conditions import EXPECTED_DIRECTION
from tl_neuronllm.evaluation.eval_result import EvalResult
from tl_neuronllm.report.figures import task_title
from tl_neuronllm.report.html_assets import CSS as _CSS
from tl_neuronllm.report.html_assets import JS as _JS
from tl_neuronllm.report.records import FIRE_TOKENS, FIRE_TOP, columns, neuron_records, shared_records, to_json
from tl_neuronllm.report.records import HIST_BINS as HIST_BINS
from tl_neuronllm.report.records import TOP_TOKENS as TOP_TOKENS
from tl_neuronllm.result.neuron_result import NeuronResult

REPORT_HTML = "report.html"


# ------------------------------------------------------------------------------------------------
# HTML pieces
# ------------------------------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(float(v), spec)


def _run_section(
    result: NeuronResult, evaluation: EvalResult | None, run_info: dict[str, Any] | None, explanation: Any
) -> str:
    c, st = result.config, result.stats
    m, t = c.get("model", {}), c.get("task", {})
    rows = [
        (
            "model",
            f"{m.get('model_name', '?')} ({m.get('model_class', '?')}; {m.get('n_layers', '?')} layers × "
            f"{m.get('d_mlp', '?')} neurons at {m.get('hook', 'hook_post')}, "
            f"{'gated' if m.get('gated_mlp') else 'plain'} MLP, act {m.get('act_fn', '?')})",
        ),
        (
            "task",
            f"{t.get('name', '?')}: {t.get('n_scored', '?')} identification items × {c.get('n_proxies', '?')} "
            f"proxies ({st.get('n_queries', '?')} questions), {c.get('n_shots', '?')}-shot, mode "
            f"{c.get('mode', '?')}"
            + (
                f", options listed: {'unlettered' if c.get('cloze_listing') else c.get('show_options')}"
                if c.get("mode") == "cloze"
                else ""
            ),
        ),
        (
            "method",
            f"{c.get('method', '?')} (steps {c.get('steps', '?')}, {c.get('ig_rule', '?')}), target "
            f"{c.get('target', '?')}, z = {c.get('z', '?')}, ambiguity filter {c.get('ambiguity', '?')}, "
            f"k = {c.get('k', '?')}: {len(result.good)} good, {len(result.bad)} bad, seed {c.get('seed', '?')}",
        ),
        (
            "model on the identification items",
            f"accuracy {_num(st.get('accuracy'))}, consistent "
            f"{_num(st.get('consistent_accuracy'))}, gold probability "
            f"{_num(st.get('gold_prob'))}; {_num(st.get('seconds'), '.1f')} s",
        ),
    ]
    if run_info:
        rows.append(("split", ", ".join(f"{k} = {v}" for k, v in run_info.items())))
    if evaluation is not None:
        e = evaluation.config.get("eval", {})
        rows.append(
            (
                "held-out evaluation",
                f"{evaluation.n_items} items × proxies = {evaluation.n_queries} questions, "
                f"{e.get('n_random', '?')} random sets per condition, {e.get('n_boot', '?')} "
                f"bootstrap resamples, enhance factor {e.get('factor', '?')}, "
                f"{evaluation.seconds:.1f} s",
            )
        )
    if explanation is not None:
        i = explanation.info
        rows.append(
            (
                "explanations",
                f"activations on {i.get('n_questions')} questions of {i.get('n_items')} "
                f"{i.get('items')} items ({i.get('n_right')} answered right); direct effects: "
                f"W_out row {i.get('norm')}, times W_U (direct path only); stability from "
                f"{i.get('stability_boot') or 'no'} bootstrap resamples",
            )
        )
    versions = c.get("versions", {})
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    rows.append(("written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="info">{body}</table>'


def _interval(ci: Any) -> str:
    if not ci or ci[0] is None:
        return ""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _eval_section(ev: EvalResult) -> str:
    from tl_neuronllm.report.markdown import verdict

    head = [
        "condition",
        "neurons",
        "accuracy [95% CI]",
        "Δ accuracy [95% CI]",
        "random Δ accuracy",
        "gold p",
        "Δ gold p [95% CI]",
        "random Δ gold p",
        "consistent",
        "changed (random)",
        "McNemar p",
    ]
    trs, verdicts = [], []
    for r in ev.rows:
        if not r.available:
            trs.append(
                f'<tr class="na"><td>{_e(r.description)}</td><td colspan="{len(head) - 1}">n/a: {_e(r.note)}</td></tr>'
            )
            continue
        m, base = r.metrics, r.name == "baseline"
        rnd = r.random.get("metrics", {}) if r.random else {}

        def spread(key: str) -> str:
            x = rnd.get(key)
            if not x:
                return ""
            return f"{x['mean']:+.3f} ± {x['sd']:.3f}<br><small>({x['min']:+.3f} … {x['max']:+.3f})</small>"

        ci = r.ci.get("accuracy", [None, None])
        exp = "" if base else (' class="up"' if EXPECTED_DIRECTION.get(r.name, 0) > 0 else ' class="down"')
        changed_r = rnd.get("changed")
        d_acc = "" if base else f"{r.delta['accuracy']:+.3f}<br><small>{_interval(r.delta_ci.get('accuracy'))}</small>"
        d_gold = (
            "" if base else f"{r.delta['gold_prob']:+.3f}<br><small>{_interval(r.delta_ci.get('gold_prob'))}</small>"
        )
        changed = "" if base else f"{m['changed']:.3f}" + (f" ({changed_r['mean']:.3f})" if changed_r else "")
        neurons = "–" if base else f"{r.n_good} good / {r.n_bad} bad"
        cells = [
            f"<td{exp}>{_e(r.description)}</td>",
            f"<td>{neurons}</td>",
            f"<td>{m['accuracy']:.3f}<br><small>[{ci[0]:.3f}, {ci[1]:.3f}]</small></td>",
            f"<td>{d_acc}</td>",
            f"<td>{spread('delta_accuracy')}</td>",
            f"<td>{m['gold_prob']:.3f}</td>",
            f"<td>{d_gold}</td>",
            f"<td>{spread('delta_gold_prob')}</td>",
            f"<td>{m['consistent_accuracy']:.3f}</td>",
            f"<td>{changed}</td>",
            f"<td>{'' if base else _num(r.mcnemar.get('p'), '.2g')}</td>",
        ]
        if not base:
            verdicts.append(f"<li>{_e(r.description)}: {_e(verdict(r))}</li>")
        trs.append(f"<tr>{''.join(cells)}</tr>")
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        f'<div class="scroll"><table id="interventions" class="grid"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(trs)}</tbody></table></div>"
        f'<p class="note">{ev.n_items} held-out items, mode {_e(ev.mode)}. Intervals: percentile bootstrap over '
        "items (paired for Δ). Random: mean ± sd (min … max) over same-size neuron sets with the same per-layer "
        "counts. Condition names in blue are expected to raise the scores, in red to lower them.</p>"
        f'<p class="note">Gold probability against the expected direction and the random sets:</p>'
        f'<ul class="note" id="verdicts">{"".join(verdicts)}</ul>'
    )


def _figures_section(figures: dict[str, Path]) -> str:
    captions = {
        "layer_counts": "good and bad neurons per layer",
        "ace_distribution": "ACE scores",
        "interventions": "intervention effects against the random sets",
        "letters": "predicted letters",
    }
    out = []
    for name, path in figures.items():
        p = Path(path)
        if not p.is_file():
            continue
        data = base64.b64encode(p.read_bytes()).decode()
        wide = ' class="wide"' if name == "interventions" else ""
        out.append(
            f'<figure{wide}><img alt="{_e(captions.get(name, name))}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(captions.get(name, name))}</figcaption></figure>"
        )
    return "".join(out)


def _neuron_section(records: list[dict[str, Any]], n_layers: int, shared: dict[str, Any]) -> str:
    heads = [
        ("rank", "rank"),
        ("label", "neuron"),
        ("role", "role"),
        ("layer", "layer"),
        ("neuron", "index"),
        ("score", "ACE score"),
        ("stability", "stability"),
        ("dla_margin", "DLA margin"),
        ("d", "d right−wrong"),
        ("promoted", "promotes"),
    ]
    if all(r.get("stability") is None for r in records):  # no kept attributions: an empty column
        heads = [h for h in heads if h[0] != "stability"]
    note_stab = (
        "" if any(h[0] == "stability" for h in heads) else " (No stability column: the result kept no attributions.)"
    )
    ths = "".join(f'<th data-key="{k}">{_e(h)}</th>' for k, h in heads)
    layers = sorted({r["layer"] for r in records})
    opts = "".join(f'<option value="{x}">{x}</option>' for x in layers)
    payload = to_json(columns(records), thin=False)
    shared_json = to_json(shared)
    return f"""
<div id="controls">
  <label>role <select id="role-filter"><option value="all">all</option><option value="good">good</option>
    <option value="bad">bad</option></select></label>
  <label>layer <select id="layer-filter"><option value="all">all</option>{opts}</select></label>
  <span id="shown"></span> — click a column to sort, a row to open its card.
</div>
<div id="layout">
  <div id="table-wrap"><table id="neurons" class="grid"><thead><tr>{ths}</tr></thead><tbody></tbody></table></div>
  <aside id="card" hidden></aside>
</div>
<p class="note">stability: share of bootstrap resamples of the identification items that select the neuron in the
same role again. DLA margin: mean over questions of activation × (direct effect on the gold option − mean direct
effect on the distractors); direct effect = the neuron's W_out row through the final norm's weight times W_U (direct
path only, the norm's per-input scale left out). d: Cohen's d of the site activation, right minus wrong questions.
Tokens: ␣ marks a space, \n a newline.{note_stab} Where it fires (in the cards of the top {FIRE_TOP} neurons of each
role): the neuron's activation on every token of the last {FIRE_TOKENS} tokens of a few identification prompts, blue
positive, red negative, strongest in full colour; the answer position (where the method scores) is outlined.</p>
<script type="application/json" id="neuron-data">{payload}</script>
<script type="application/json" id="shared-data">{shared_json}</script>"""


def report_html(
    result: NeuronResult,
    evaluation: EvalResult | None = None,
    out_dir: str | Path = ".",
    *,
    explanation: Any = None,
    run_info: dict[str, Any] | None = None,
    figures: dict[str, Path] | None = None,
    filename: str = REPORT_HTML,
) -> Path:
    """Write the single-file HTML report into ``out_dir`` and return its path.

    Args:
        result: The identified neurons.
        evaluation: The held-out evaluation (its table is left out when ``None``).
        out_dir: Output directory (created).
        explanation: :func:`tl_neuronllm.explain.explainer.explain`'s result for ``result`` (cards show only the
            score without it).
        run_info: Extra facts to show (e.g. the split: ``n_identify``, ``n_heldout``, ``split_seed``).
        figures: ``name -> PNG path`` to embed; default: drawn into ``out_dir/figures`` with
            :func:`tl_neuronllm.report.markdown.make_figures`.
        filename: Name of the file.

    Returns:
        The path of the written file.

    Raises:
        ValueError: if ``explanation`` is not of ``result``.
        ConfigError: ``evaluation`` that is not an :class:`EvalResult` (e.g. an output folder given second).
        MismatchError: an evaluation of another result.
    """
    from tl_neuronllm.report.figures import make_figures
    from tl_neuronllm.report.markdown import check_report_inputs

    check_report_inputs(result, evaluation, "report_html")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = neuron_records(result, explanation)
    if figures is None:
        figures = make_figures(result, evaluation, out / "figures")
    c = result.config
    title = f"NeuronLLM report: {c.get('model', {}).get('model_name', '?')} on {task_title(result)}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        '<p class="note">Good neurons raise the model\'s preference for the correct option over the distractors; '
        "bad neurons push toward the distractors (signed integrated-gradient ACE score, NeuronLLM).</p>",
        "<h2>What was run</h2>",
        _run_section(result, evaluation, run_info, explanation),
    ]
    if evaluation is not None:
        parts += ["<h2>Held-out interventions</h2>", _eval_section(evaluation)]
    fig_html = _figures_section(figures)
    if fig_html:
        parts += ["<h2>Figures</h2>", fig_html]
    parts += [
        f"<h2>Neurons ({len(result.good)} good, {len(result.bad)} bad)</h2>",
        _neuron_section(records, result.n_layers, shared_records(explanation)),
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    path = out / filename
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


__all__ = ["REPORT_HTML", "neuron_records", "report_html"]
