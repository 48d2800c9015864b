"""Notebook display and pandas: ``to_pandas()`` with numeric columns, ``_repr_html_`` of the results, short
``repr`` of tasks and items, and where a neuron fires (the per-token activations of a few prompts)."""

from __future__ import annotations

import builtins
import math
import re

import pytest
import torch
from helpers import make_model, text_task, token_task

from tl_neuronllm import ConfigError, MissingDependency, Task, evaluate, explain, identify
from tl_neuronllm.html_view import token_strip

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    model = make_model("native", False)
    task, fmt = token_task(30)
    ident, held, demo = task.split(12, 14, n_demo=1, seed=0)
    result = identify(
        model, ident, k=5, method="grad_x_act", progress=False, keep_attributions=True, token_format=fmt, demos=demo
    )
    ev = evaluate(model, result, held, demos=demo, n_random=2, n_boot=40, progress=False)
    ex = explain(result, model, ident, demos=demo, n_boot=5, progress=False)
    return model, result, ev, ex, ident, demo


def test_neuron_result_to_pandas_is_numeric_and_matches_the_sets(run):
    _, result, _, _, _, _ = run
    df = result.to_pandas()
    assert list(df.columns[:6]) == ["label", "role", "rank", "layer", "neuron", "score"]
    for c in ("rank", "layer", "neuron"):
        assert df[c].dtype == "int64", c
    assert df["score"].dtype == "float64" and df["act_mean"].dtype == "float64"
    assert len(df) == len(result.good) + len(result.bad)
    assert df["label"].tolist() == result.labels("both")
    good = df[df.role == "good"]
    assert good["rank"].tolist() == list(range(1, len(result.good) + 1))
    assert good["score"].tolist() == [n.score for n in result.good]
    assert (good["score"] > 0).all() and (df[df.role == "bad"]["score"] < 0).all()
    x = result.bad[0]
    row = df[df.label == x.label].iloc[0]
    assert (row.layer, row.neuron) == (x.layer, x.neuron)
    assert row.act_mean == pytest.approx(float(result.act_mean[x.layer, x.neuron]))


def test_eval_result_to_pandas_has_numbers_and_intervals_as_columns(run):
    _, _, ev, _, _, _ = run
    df = ev.to_pandas()
    assert df["condition"].tolist() == [r.name for r in ev.rows]
    num = [c for c in df.columns if c not in ("condition", "description", "paper_name", "available")]
    assert all(pd.api.types.is_numeric_dtype(df[c]) for c in num), df.dtypes
    assert df["accuracy"].dtype == "float64" and df["n_good"].dtype == "int64"
    for r, (_, row) in zip(ev.rows, df.iterrows()):
        if not r.available:
            continue
        assert row.accuracy == r.metrics["accuracy"]
        assert [row.accuracy_lo, row.accuracy_hi] == r.ci["accuracy"]
        if r.name != "baseline":
            assert row.delta_gold_prob == r.delta["gold_prob"]
            assert [row.delta_gold_prob_lo, row.delta_gold_prob_hi] == r.delta_ci["gold_prob"]
            assert row.random_delta_gold_prob_mean == r.random["metrics"]["delta_gold_prob"]["mean"]
    assert math.isnan(df.iloc[0]["delta_accuracy"])  # the baseline has no delta


def test_to_pandas_without_pandas_says_what_to_install(run, monkeypatch):
    _, result, ev, ex, _, _ = run
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named 'pandas'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    for obj in (result, ev, ex):
        with pytest.raises(MissingDependency, match="pip install pandas"):
            obj.to_pandas()


def test_repr_html_of_the_results(run):
    _, result, ev, ex, _, _ = run
    for obj in (result, ev, ex):
        h = obj._repr_html_()
        assert h.startswith('<div class="tlnl"><style>') and h.endswith("</div>")
        assert not re.search(r"https?://|<link|@import|<script", h)
    h = result._repr_html_()
    assert result.good[0].label in h and result.bad[0].label in h and "tokens" in h
    h = ev._repr_html_()
    assert h.count("<tr>") == 1 + len(ev.rows) and f"{ev.baseline.metrics['accuracy']:.3f}" in h
    h = ex._repr_html_()
    assert h.count('class="fire"') == 2 * len(ex.traces) and h.count('class="site"') == 2 * len(ex.traces)


def test_where_a_neuron_fires_equals_a_plain_forward(run):
    model, result, _, ex, ident, demo = run
    assert len(ex.traces) == 3 and len({t.item_id for t in ex.traces}) == 3
    x = result.good[0]
    fires = ex.fires(x.label)
    layer_hook = f"blocks.{x.layer}.mlp.hook_post"
    for tokens, acts, site in fires:
        assert site == len(tokens) - 1 and len(acts) == len(tokens)
        ids = torch.tensor([[int(t.lstrip("#")) for t in tokens]])  # token-level model: "#id" tokens
        _, cache = model.run_with_cache(ids, names_filter=layer_hook)
        want = cache[layer_hook][0, :, x.neuron]
        assert torch.allclose(torch.tensor(acts), want.float(), atol=1e-5)
    # the answer-position activation is the one the explanation's activation table holds for that question
    j = ex.column(x.label)
    q0 = ex.item_ids.index(ex.traces[0].item_id)
    assert fires[0][1][-1] == pytest.approx(float(ex.activations[q0, j]), abs=1e-5)
    with pytest.raises(KeyError, match="L99N0"):
        ex.fires("L99N0")
    with pytest.raises(ConfigError, match="n_traces must be >= 0"):
        explain(result, model, ident, demos=demo, n_traces=-1, progress=False)
    assert explain(result, model, ident, demos=demo, n_traces=0, n_boot=2, progress=False).traces == []


def test_token_strip_colours_and_marks_the_site():
    h = token_strip([" a", "<b>", "\n"], [1.0, -0.5, 0.0], 2)
    spans = re.findall(r"<span[^>]*>", h)
    assert len(spans) == 3 and 'class="site"' in spans[2] and "class" not in spans[0]
    assert "rgba(42,122,185,0.85)" in spans[0] and "rgba(209,73,91,0.42)" in spans[1]
    assert "&lt;b&gt;" in h and "<b>" not in h
    with pytest.raises(ValueError, match="2 tokens but 1"):
        token_strip(["a", "b"], [1.0], 0)


def test_short_repr_of_task_and_item():
    task = text_task(10)
    r = repr(task)
    assert r.startswith("Task(") and "10 text items" in r and len(r) < 120
    long = Task.from_records([{"question": "word " * 500, "options": ["x" * 100, "y", "z", "w", "v"], "answer": 1}])
    r = repr(long[0])
    assert len(r) < 200 and r.startswith("Item(id='0'") and "answer=1" in r and "…" in r


class _Bar:
    """A stand-in for tqdm that records its updates."""

    made: list[_Bar] = []

    def __init__(self, iterable=None, total=None, initial=0, desc="", unit="", **kw):
        self.iterable, self.total, self.n, self.desc, self.unit, self.steps = iterable, total, initial, desc, unit, []
        _Bar.made.append(self)

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)

    def update(self, n=1):
        self.n += n
        self.steps.append(n)

    def close(self):
        pass


def test_progress_moves_per_item_and_changes_no_number(run, monkeypatch):
    import tqdm.auto

    model, result, _, _, ident, demo = run
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    _Bar.made = []
    fmt = result.identify_config().token_format
    kw = dict(k=5, method="ig", steps=2, token_format=fmt, demos=demo, batch_size=8)
    quiet = identify(model, ident, progress=False, **kw)
    assert _Bar.made == []
    loud = identify(model, ident, progress=True, **kw)
    bar = _Bar.made[-1]
    assert bar.unit == "item" and bar.total == len(ident) and bar.n == len(ident)
    assert bar.steps == [1] * len(ident)  # per item, although the batch holds 8
    assert torch.equal(quiet.scores, loud.scores) and quiet.good == loud.good
    assert torch.allclose(quiet.act_mean, loud.act_mean, rtol=1e-12, atol=0)
    _Bar.made = []
    explain(result, model, ident, demos=demo, n_boot=2, batch_size=4)
    bar = _Bar.made[-1]
    assert bar.desc.startswith("explain") and bar.n == bar.total == len(ident) * result.config["n_proxies"]


def test_where_it_fires_survives_save_json(run, tmp_path):
    from tl_neuronllm.explain.explanation import Explanation

    _, result, _, ex, _, _ = run
    back = Explanation.load_json(ex.save_json(tmp_path / "explanation.json"))
    label = result.bad[0].label
    assert back.fires(label) == ex.fires(label) and [t.correct for t in back.traces] == [t.correct for t in ex.traces]
