"""The single-file HTML report: its content, self-containment, and behaviour in a real headless Chromium.

The browser test drives Debian's ``chromium`` over the DevTools protocol on a pipe (``tests/_chromium.py``,
standard library only). Where no Chromium executable is installed it is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch
from _chromium import Chromium, find_chromium
from _scaffold import tiny_cli_args
from helpers import make_model, token_task

from tl_neuronllm import evaluate, explain, identify
from tl_neuronllm.cli import app as cli
from tl_neuronllm.report.html import FIRE_TOKENS, HIST_BINS, TOP_TOKENS, neuron_records, report_html

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    torch.manual_seed(0)
    model = make_model("native", False)
    task, fmt = token_task(40)
    ident, held, demo = task.split(16, 20, n_demo=1, seed=0)
    result = identify(
        model,
        ident,
        k=8,
        method="grad_x_act",
        progress=False,
        keep_attributions=True,
        z=0.05,
        token_format=fmt,
        demos=demo,
    )
    ev = evaluate(model, result, held, demos=demo, n_random=2, n_boot=50, progress=False)
    ex = explain(result, model, ident, demos=demo, n_boot=10)
    out = tmp_path_factory.mktemp("report")
    path = report_html(result, ev, out, explanation=ex, run_info={"n_identify": 16, "n_heldout": 20, "split_seed": 0})
    return path, result, ev, ex


def _data(html: str) -> list[dict]:
    """The neuron records of a report (one table of columns and rows), a field a record lacks left out."""
    m = re.search(r'<script type="application/json" id="neuron-data">(.*?)</script>', html, re.S)
    assert m
    table = json.loads(m.group(1))
    recs = [dict(zip(table["columns"], row)) for row in table["rows"]]
    return [{k: v for k, v in r.items() if v is not None or k == "stability"} for r in recs]


def _shared(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="shared-data">(.*?)</script>', html, re.S)
    assert m
    return json.loads(m.group(1))


def test_report_content_and_self_contained(report):
    path, result, ev, ex = report
    html = path.read_text()
    assert path.name == "report.html"
    # no external resource: every src/href is a data: URI or a fragment, no @import / url(http)
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), refs
    assert not re.search(r"@import|url\(\s*['\"]?https?:|<link", html)
    assert html.count('src="data:image/png;base64,') == 4  # the four figures, embedded
    # what was run
    for text in (
        "native",
        "tokens:identify",
        "16 identification items",
        "grad_x_act",
        "n_heldout = 20",
        "transformer_lens",
        "torch",
    ):
        assert text in html, text
    # the intervention table: baseline + four conditions with intervals and the random spread
    table = re.search(r'<table id="interventions".*?</table>', html, re.S).group(0)
    assert table.count("<tr>") == 1 + 5
    from tl_neuronllm.report.markdown import verdict

    verdicts = re.search(r'<ul class="note" id="verdicts">(.*?)</ul>', html, re.S).group(1)
    assert verdicts.count("<li>") == 4 and f"suppress good: {verdict(ev.row('suppress_good'))}" in verdicts
    sup = ev.row("suppress_good")
    rnd = sup.random["metrics"]["delta_gold_prob"]
    assert (
        f"{sup.delta['gold_prob']:+.3f}<br><small>[{sup.delta_ci['gold_prob'][0]:+.3f}, "
        f"{sup.delta_ci['gold_prob'][1]:+.3f}]</small>"
    ) in table
    assert f"{rnd['mean']:+.3f} ± {rnd['sd']:.3f}" in table and f"({rnd['min']:+.3f} … {rnd['max']:+.3f})" in table
    # the neuron data: one record per neuron, equal to the explanation
    data = _data(html)
    assert data == json.loads(json.dumps(neuron_records(result, ex)))
    shared = _shared(html)
    assert [t["item"] for t in shared["traces"]] == [t.item_id for t in ex.traces]
    assert all(shared["items"][i] == text for x in ex.neurons for i, _, text in x.top_items)
    assert [d["label"] for d in data] == result.labels("both")
    for d, x in zip(data, ex.neurons):
        assert d["score"] == pytest.approx(x.score) and d["stability"] == x.stability
        assert sum(d["hist"]["right"]) == x.n_right and sum(d["hist"]["wrong"]) == x.n_wrong
        assert len(d["hist"]["right"]) == len(d["hist"]["wrong"]) == HIST_BINS
        acts = ex.activations[:, ex.column(d["label"])]
        assert d["hist"]["lo"] == pytest.approx(float(acts.min()), rel=1e-3) and d["hist"]["hi"] == pytest.approx(
            float(acts.max()), rel=1e-3
        )
    # a wrong explanation is refused
    with pytest.raises(ValueError, match="not of this result"):
        report_html(result.with_k(2), None, path.parent / "other", explanation=ex)


def test_report_without_evaluation_or_explanation(report, tmp_path):
    _, result, _, _ = report
    path = report_html(result, None, tmp_path)
    html = path.read_text()
    assert 'id="interventions"' not in html and html.count('src="data:image/png;base64,') == 2
    data = _data(html)
    assert len(data) == len(result.good) + len(result.bad) and "hist" not in data[0]


def test_report_in_headless_chromium(report):
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium executable found (CI installs Debian's chromium; or set CHROMIUM=/path/to/chrome)")
    path, result, ev, ex = report
    data = _data(path.read_text())
    data_of = lambda label: next(d for d in data if d["label"] == label)
    rows_js = "[...document.querySelectorAll('#neurons tbody tr')]"
    col = lambda i: f"{rows_js}.map(r => r.cells[{i}].textContent)"
    n = len(result.good) + len(result.bad)
    with Chromium(exe) as b:
        b.open(path.resolve().as_uri())
        assert b.eval(f"{rows_js}.length") == n
        assert b.eval(col(1)) == result.labels("both")  # initial order: good by rank, then bad
        assert b.eval("document.getElementById('card').hidden") is True

        # sort by score: first click descending, second ascending (missing values would go last)
        by_label = {x.label: x.score for x in result.good + result.bad}
        b.eval("document.querySelector('#neurons th[data-key=score]').click()")
        labels = b.eval(col(1))
        assert labels == [x.label for x in sorted(result.good + result.bad, key=lambda x: -x.score)]
        scores = [by_label[lb] for lb in labels]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0 > scores[-1]
        assert b.eval("document.querySelector('#neurons th[data-key=score]').className") == "sorted-desc"
        b.eval("document.querySelector('#neurons th[data-key=score]').click()")
        assert b.eval(col(1)) == labels[::-1]
        # sort by layer (ascending, stable), by stability (descending)
        b.eval("document.querySelector('#neurons th[data-key=layer]').click()")
        assert [int(v) for v in b.eval(col(3))] == sorted(x.layer for x in result.good + result.bad)
        b.eval("document.querySelector('#neurons th[data-key=stability]').click()")
        stab = [float(v) for v in b.eval(col(6))]
        assert stab == sorted((x.stability for x in ex.neurons), reverse=True)

        # filters: role, then layer on top of it
        set_select = (
            "(id, v) => { const s = document.getElementById(id); s.value = v; s.dispatchEvent(new Event('change')); }"
        )
        b.eval(f"({set_select})('role-filter', 'bad')")
        assert b.eval(f"{rows_js}.length") == len(result.bad)
        assert set(b.eval(col(2))) == {"bad"}
        layer = result.bad[0].layer
        b.eval(f"({set_select})('layer-filter', '{layer}')")
        assert sorted(b.eval(col(1))) == sorted(x.label for x in result.bad if x.layer == layer)
        assert b.eval("document.getElementById('shown').textContent").startswith(
            f"{sum(x.layer == layer for x in result.bad)} of {n}"
        )
        b.eval(f"({set_select})('layer-filter', 'all')")
        b.eval(f"({set_select})('role-filter', 'all')")
        b.eval("document.querySelector('#neurons th[data-key=score]').click()")  # back to score, descending

        # a card opens on click, with the explanation and the histogram of right vs wrong questions
        top = result.good[0]
        b.eval(f"{rows_js}.find(r => r.cells[1].textContent === '{top.label}').click()")
        assert b.eval("document.getElementById('card').hidden") is False
        assert b.eval("document.getElementById('card').getBoundingClientRect().height") > 200
        assert b.eval("document.querySelector('#card h3').textContent") == f"{top.label} — good #1"
        x = ex[top.label]
        card = b.eval("document.getElementById('card').textContent")
        shown = lambda t: json.dumps(t)[1:-1].replace(" ", "␣")  # whitespace made visible
        tops = x.top_promoted[:TOP_TOKENS] + x.top_suppressed[:TOP_TOKENS]
        assert all(shown(t) in card for t, _ in tops) and x.top_items[0][0] in card
        assert f"{x.top_items[0][0]} (" in card and x.top_items[0][2] in card  # the item's text, from the shared block
        # the histogram has a y axis up to the tallest bar
        tallest = max(max(h) for h in (data_of(top.label)["hist"]["right"], data_of(top.label)["hist"]["wrong"]))
        assert b.eval("document.querySelectorAll('#card svg .y-axis').length") == 1
        assert b.eval("[...document.querySelectorAll('#card svg .y-tick')].map(t => +t.textContent).at(-1)") == tallest
        # where it fires: one strip per traced prompt, the answer position outlined, tokens coloured by sign
        assert b.eval("document.querySelectorAll('#card .fire').length") == len(ex.traces)
        assert b.eval("document.querySelectorAll('#card .fire span.site').length") == len(ex.traces)
        fires = ex.fires(top.label)
        site_titles = b.eval("[...document.querySelectorAll('#card .fire span.site')].map(s => s.title)")
        scale = max(abs(a) for _, acts, _ in fires for a in acts[-FIRE_TOKENS:])
        for (_tokens, acts, site), title in zip(fires, site_titles):
            assert f"(position {site}, answer position)" in title
            shown_v = float(title.rsplit(": ", 1)[1])
            assert shown_v == pytest.approx(acts[site], abs=scale / 99 + 1e-3)  # quantised to 1/99 of the scale
        colours = b.eval(
            "[...document.querySelectorAll('#card .fire')[0].querySelectorAll('span:not(.gap)')]"
            ".map(s => s.style.background)"
        )
        acts0 = fires[0][1][-FIRE_TOKENS:]
        assert len(colours) == len(acts0)
        for a, c in zip(acts0, colours):
            if abs(a) > scale / 50:
                assert c.startswith("rgba(42, 122, 185" if a > 0 else "rgba(209, 73, 91"), (a, c)
        assert b.eval("document.querySelectorAll('#card svg rect').length") == 2 * HIST_BINS
        titles = b.eval("[...document.querySelectorAll('#card svg rect title')].map(t => t.textContent)")
        count = lambda kind: sum(int(t.split(": ")[1].split(" ")[0]) for t in titles if t.startswith(kind))
        assert (count("right"), count("wrong")) == (x.n_right, x.n_wrong)
        assert b.eval(f"{rows_js}.filter(r => r.className === 'open').map(r => r.cells[1].textContent)") == [top.label]

        shot = b.screenshot(path.parent / "report.png")
        assert b.exceptions() == []
        assert all(u.startswith(("file:", "data:")) for u in b.requests()), b.requests()
        b.eval("document.querySelector('#card .close').click()")
        assert b.eval("document.getElementById('card').hidden") is True
    assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 20_000
    keep = os.environ.get("TL_NEURONLLM_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    print(f"screenshot: {shot}")


@pytest.mark.slow
def test_cli_run_writes_report_html_and_ends_with_its_path(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", *tiny_cli_args(steps=2), "--n-random", "2", "--n-boot", "50", "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    html = out / "report.html"
    assert printed[-1] == f"open the report: {html.resolve().as_uri()}"
    assert html.is_file() and (out / "explanation.csv").is_file() and (out / "explanation.md").is_file()
    data = _data(html.read_text())
    assert data and all("hist" in d for d in data)  # explained
    # `report` alone rebuilds it from run.json (model and task reloaded); --no-explain without the model
    html.unlink()
    assert cli.main(["report", "--out", str(out), "--no-progress", "--quiet"]) == 0
    assert _data(html.read_text()) == data
    # --no-explain reuses the explanations the last report saved for these neurons (explanation.json) ...
    assert cli.main(["report", "--out", str(out), "--no-progress", "--quiet", "--no-explain"]) == 0
    assert _data(html.read_text()) == data
    # ... and without them writes the report without explanations
    (out / "explanation.json").unlink()
    assert cli.main(["report", "--out", str(out), "--no-progress", "--quiet", "--no-explain"]) == 0
    assert all("hist" not in d for d in _data(html.read_text()))


def test_notebook_displays_in_headless_chromium(report, tmp_path):
    """The ``_repr_html_`` of a result, an evaluation and an explanation, on one page as a notebook shows them."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium executable found (CI installs Debian's chromium; or set CHROMIUM=/path/to/chrome)")
    _, result, ev, ex = report
    page = tmp_path / "notebook.html"
    body = "".join(f'<section id="{k}">{o._repr_html_()}</section>' for k, o in (("r", result), ("e", ev), ("x", ex)))
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>")
    with Chromium(exe) as b:
        b.open(page.resolve().as_uri())
        assert b.eval("document.querySelectorAll('.tlnl').length") == 3
        # the scoped styles apply: header cells shaded, numbers right-aligned
        assert b.eval("getComputedStyle(document.querySelector('#e table.grid thead th')).backgroundColor") == (
            "rgb(244, 244, 244)"
        )
        assert b.eval("getComputedStyle(document.querySelector('#r table.grid tbody td:last-child')).textAlign") == (
            "right"
        )
        first_rows = b.eval(
            "[...document.querySelectorAll('#r table.grid')[0].tBodies[0].rows].map(r => r.cells[0].textContent)"
        )
        assert first_rows[: len(result.good[:10])] == [n.label for n in result.good[:10]]
        assert b.eval("document.querySelectorAll('#e table.grid tbody tr').length") == len(ev.rows)
        # where it fires: strips of the top good and bad neuron, each with the answer position outlined and laid out
        assert b.eval("document.querySelectorAll('#x .fire').length") == 2 * len(ex.traces)
        assert b.eval("getComputedStyle(document.querySelector('#x .fire span.site')).outlineStyle") == "solid"
        assert (
            b.eval("Math.min(...[...document.querySelectorAll('.tlnl')].map(e => e.getBoundingClientRect().height))")
            > 50
        )
        shot = b.screenshot(tmp_path / "notebook.png")
        assert b.exceptions() == []
        assert all(u.startswith(("file:", "data:")) for u in b.requests()), b.requests()
    assert shot.read_bytes()[:8] == PNG


@pytest.mark.slow
def test_default_size_report_stays_under_1_mb(tmp_path):
    """1,000 neurons (the command's k = 500), explained, with the four figures: the file stays under 1 MB."""
    from helpers import NATIVE
    from transformer_lens.model_bridge import TransformerBridge

    torch.manual_seed(0)
    model = TransformerBridge.boot_native(dict(NATIVE, d_mlp=1024, n_layers=4)).eval()
    task, fmt = token_task(60)
    ident, held, demo = task.split(24, 30, n_demo=1, seed=0)
    result = identify(
        model, ident, k=500, method="grad_x_act", progress=False, keep_attributions=True, token_format=fmt, demos=demo
    )
    assert len(result.good) + len(result.bad) == 1000
    ev = evaluate(model, result, held, demos=demo, n_random=2, n_boot=50, progress=False)
    ex = explain(result, model, ident, demos=demo, n_boot=5, progress=False)
    path = report_html(result, ev, tmp_path, explanation=ex)
    size = path.stat().st_size
    print(f"report of 1000 neurons: {size} bytes")
    assert size < 1_000_000
    data = _data(path.read_text())
    assert len(data) == 1000 and sum("fire" in d for d in data) == 2 * 20  # where it fires: the top 20 per role
