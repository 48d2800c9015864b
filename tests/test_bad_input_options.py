"""Bad options are refused with a message naming the option, before any model time."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import make_model, token_task

from tl_neuronllm import EvalConfig, IdentifyConfig, Intervention, ScoringConfig, evaluate, identify, rescore
from tl_neuronllm.scoring.ace import select
from tl_neuronllm.validate import check_count_or_fraction


@pytest.fixture(scope="module")
def model():
    return make_model("native", False)


@pytest.fixture(scope="module")
def setup(model):
    task, fmt = token_task(8)
    result = identify(model, task, k=5, token_format=fmt, steps=1, progress=False, keep_attributions=True)
    return task, fmt, result


@pytest.mark.parametrize(
    "k, msg",
    [
        (1.0, r"k = 1.0 is a float, so it must be a fraction in \(0, 1\)"),
        (1.5, r"k = 1.5 is a float"),
        (True, r"k must be an int count or a float fraction .* got True"),
        (-3, r"k must be a count >= [01]"),
        ("abc", r"k must be an int count .* got 'abc'"),
        (math.nan, r"k = nan is a float"),
        (0.0, r"k = 0.0 is a float"),
    ],
)
def test_k_types_are_exact(k, msg):
    with pytest.raises(ValueError, match=msg):
        check_count_or_fraction("k", k)
    with pytest.raises(ValueError, match=msg):
        select(torch.ones(2, 3), k, 1)


def test_k_count_and_fraction_still_work():
    s = torch.arange(1.0, 11.0).reshape(2, 5)
    assert len(select(s, 3, 1)) == 3 and len(select(s, 0.5, 1)) == 5 and len(select(s, 1, 1)) == 1


@pytest.mark.parametrize(
    "opts, msg",
    [
        (dict(kv_cache="maybe"), r"kv_cache must be one of \('auto', 'off'\), got 'maybe'"),
        (dict(steps=0), r"steps must be >= 1, got 0"),
        (dict(steps=2.5), r"steps must be an int, got 2.5"),
        (dict(steps=True), r"steps must be an int, got True"),
        (dict(z=math.nan), r"z = nan is a float"),
        (dict(z=-1), r"z must be a count >= 1"),
        (dict(z=1.0), r"z = 1.0 is a float"),
        (dict(tau=math.inf), r"tau must be a finite number"),
        (dict(ambiguity=0.7), r"ambiguity must be in \[0, 0.5\]"),
        (dict(n_proxies=0), r"n_proxies must be >= 1"),
        (dict(n_shots=-1), r"n_shots must be >= 0"),
        (dict(mode="banana"), r"mode must be one of"),
        (dict(hook="hook_mid"), r"hook must be one of"),
        (dict(method="nosuch"), r"method must be one of"),
        (dict(include_original=1), r"include_original must be True or False"),
        (dict(layers=[0, 0]), r"layers must be distinct"),
        (dict(layers=[-1]), r"layers\[0\] must be >= 0"),
        (dict(memory_budget_mb=math.nan), r"memory_budget_mb must be a finite number"),
        (dict(chunk_rows=0), r"chunk_rows must be >= 1"),
        (dict(batch_size="8"), r"batch_size must be an int"),
    ],
)
def test_identify_config_refuses(opts, msg):
    with pytest.raises(ValueError, match=msg):
        IdentifyConfig(**opts)


@pytest.mark.parametrize(
    "opts, msg",
    [
        (dict(factor=math.nan), r"factor must be a finite number, got nan"),
        (dict(factor=math.inf), r"factor must be a finite number"),
        (dict(n_random=-1), r"n_random must be >= 0"),
        (dict(n_boot=0), r"n_boot must be >= 1"),
        (dict(k=1.0), r"k = 1.0 is a float"),
        (dict(ci=1.0), r"ci must be in \(0, 1\)"),
        (dict(interventions="suppress_good"), r"interventions must be a list of names"),
        (dict(memory_budget_mb=0), r"memory_budget_mb must be in \(0, inf\)"),
    ],
)
def test_eval_config_refuses(opts, msg):
    with pytest.raises(ValueError, match=msg):
        EvalConfig(**opts)


def test_scoring_and_intervention_refuse_non_finite():
    with pytest.raises(ValueError, match="z = inf is a float"):
        ScoringConfig(z=math.inf)
    with pytest.raises(ValueError, match="factor must be a finite number, got nan"):
        Intervention(((0, 1),), "scale", factor=math.nan)
    with pytest.raises(ValueError, match="value must be a finite number"):
        Intervention(((0, 1),), "set", values=math.inf)
    with pytest.raises(ValueError, match="values tensor has non-finite"):
        Intervention(((0, 1),), "mean", values=torch.tensor([[math.nan]]))
    with pytest.raises(ValueError, match=r"neurons\[0\] must be a \(layer, neuron\) pair"):
        Intervention(((0, 1, 2),))


def test_identify_fails_before_any_model_time(model, monkeypatch):
    task, fmt = token_task(6)
    calls = []
    real = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for kw, msg in [
        (dict(k=-3), "k must be a count >= 1"),
        (dict(k=0), "k must be a count >= 1"),
        (dict(k="abc"), "k must be an int count"),
        (dict(z=math.nan), "z = nan"),
        (dict(k=True), "got True"),
        (dict(checkpoint_every=0), "checkpoint_every must be >= 1"),
        (dict(layers=[7]), r"layers: layer 7 is out of range for a model with 3 layers"),
    ]:
        with pytest.raises(ValueError, match=msg):
            identify(model, task, token_format=fmt, progress=False, **kw)
    assert calls == []


def test_evaluate_and_enhance_refuse_nan_factor(model, setup):
    task, fmt, result = setup
    with pytest.raises(ValueError, match="factor must be a finite number, got nan"):
        evaluate(model, result, task, factor=math.nan, progress=False, allow_overlap=True)
    with pytest.raises(ValueError, match="factor must be a finite number, got nan"):
        with result.enhance(model, "good", factor=math.nan):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match=r"k = 1.5 is a float"):
        result.with_k(1.5)
    with pytest.raises(ValueError, match=r"z = nan"):
        rescore(result, z=math.nan)
    with pytest.raises(ValueError, match=r"k must be an int count .* got True"):
        rescore(result, k=True)


def test_identify_inside_inference_mode_is_refused_clearly(model):
    task, fmt = token_task(4)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"identify cannot run inside torch.inference_mode\(\)"):
            identify(model, task, token_format=fmt, progress=False)
