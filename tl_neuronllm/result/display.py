"""Notebook display and pandas view of a :class:`~tl_neuronllm.result.neuron_result.NeuronResult` (its
``_repr_html_`` and ``to_pandas``)."""

from __future__ import annotations

from typing import Any

from tl_neuronllm.html_view import grid, num, panel, require_pandas, task_base

__all__ = ["result_frame", "result_html"]


def result_html(result: Any) -> str:
    """The notebook display of a :class:`~tl_neuronllm.result.neuron_result.NeuronResult`: its top neurons and
    the neurons per layer, in the report's table style."""
    c = result.config
    n = 10
    rows = [
        [x.label, role, str(rank + 1), str(x.layer), str(x.neuron), num(x.score, ".4g")]
        for role in ("good", "bad")
        for rank, x in enumerate(result.neurons(role)[:n])  # type: ignore[arg-type]
    ]
    table = grid(["neuron", "role", "rank", "layer", "index", "ACE score"], rows)
    layers = grid(
        ["", *map(str, range(result.n_layers))],
        [["good", *map(str, result.layer_counts("good"))], ["bad", *map(str, result.layer_counts("bad"))]],
    )
    t = c.get("task", {})
    note = (
        f"{t.get('n_scored', '?')} items × {c.get('n_proxies', '?')} proxies, method {c.get('method', '?')}, mode "
        f"{c.get('mode', '?')}, k = {c.get('k', '?')}; accuracy on them {num(result.stats.get('accuracy'))}. "
        f"Top {n} per role shown; to_pandas() has every neuron."
    )
    title = (
        f"NeuronResult: {c.get('model', {}).get('model_name', '?')} on {task_base(t.get('name', '?'))} "
        f"({len(result.good)} good, {len(result.bad)} bad)"
    )
    return panel(title, table + "<h4>neurons per layer</h4>" + layers, note)


def result_frame(result: Any) -> Any:
    """``NeuronResult.to_pandas()`` (see there).

    Raises:
        MissingDependency: (an ``ImportError``) if pandas is not installed.
    """
    pd = require_pandas()
    recs = [
        {"label": x.label, "role": role, "rank": r + 1, "layer": x.layer, "neuron": x.neuron, "score": x.score}
        for role in ("good", "bad")
        for r, x in enumerate(result.neurons(role))  # type: ignore[arg-type]
    ]
    if result.act_mean is not None:
        for rec in recs:
            rec["act_mean"] = float(result.act_mean[rec["layer"], rec["neuron"]])
    cols = ["label", "role", "rank", "layer", "neuron", "score"] + (["act_mean"] if result.act_mean is not None else [])
    df = pd.DataFrame(recs, columns=cols)
    return df.astype({"rank": "int64", "layer": "int64", "neuron": "int64", "score": "float64"})
