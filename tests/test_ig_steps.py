"""The IG-steps benchmark (``benchmarks/ig_steps.py``): its sets are identify's, and the CLI's default step
count is one its saved measurement supports."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers import make_model, token_task

from benchmarks import harness, ig_steps
from tl_neuronllm import identify, rescore
from tl_neuronllm.cli.args import DEFAULTS
from tl_neuronllm.config.result import ResultConfig

RESULT = Path(harness.RESULTS) / "ig_steps" / "commonsenseqa.json"


def test_benchmark_sets_equal_identify_and_rescore():
    model = make_model("native", False)
    task, fmt = token_task(8)
    result = identify(model, task, k=10, token_format=fmt, steps=2, n_proxies=1, progress=False, keep_attributions=True)
    assert result.attributions is not None
    cfg = ResultConfig.from_dict(result.config).identify
    good, bad = ig_steps._sets(result.attributions[:, 0], cfg, 10)
    assert good == {(n.layer, n.neuron) for n in result.good}
    assert bad == {(n.layer, n.neuron) for n in result.bad}
    assert len(good) == 10 and len(bad) == 10
    # on an item subset the benchmark's sets are rescore's (what identify on those items returns)
    sub = rescore(result, items=[0, 2, 3])
    good3, bad3 = ig_steps._sets(result.attributions[[0, 2, 3], 0], cfg, 10)
    assert good3 == {(n.layer, n.neuron) for n in sub.good} and bad3 == {(n.layer, n.neuron) for n in sub.bad}
    assert good3 != good or bad3 != bad  # the subset matters, so the comparison above can fail
    assert torch.equal(sub.attributions, result.attributions[[0, 2, 3]])


def test_cli_default_steps_reach_the_measured_overlap():
    saved = json.loads(RESULT.read_text())["results"]
    row = next(r for r in saved["rows"] if r["steps"] == DEFAULTS["steps"])
    assert DEFAULTS["ig_rule"] == saved["setup"]["ig_rule"] == "gauss"
    assert min(row["overlap_good"], row["overlap_bad"]) >= 0.95, row
    assert saved["reference_steps"] == 64 and saved["setup"]["k"] == DEFAULTS["k"]
