"""A method's own options: declared by its Options dataclass, passed by identify(method_options=...) and the
CLI's --method-option, refused before model time when the method does not take them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest
import torch
from helpers import make_model, token_task

from tl_neuronllm import ConfigError, IdentifyConfig, identify
from tl_neuronllm.attribution.methods import ATTRIBUTION_METHODS, Attribution, GradXAct, register_method
from tl_neuronllm.cli.args import method_option


@dataclass(frozen=True)
class _ScaleOptions:
    factor: float = 1.0


def _scaled_method():
    class Scaled(GradXAct):
        name = "scaled_gxa_test"
        Options = _ScaleOptions

        def attribute(self, adapter, prompts, options):
            out = super().attribute(adapter, prompts, options)
            return Attribution(out.scores * self.method_options.factor, out.probs, out.acts)

    return register_method(Scaled, replace=True)


def test_a_methods_own_option_reaches_it():
    _scaled_method()
    try:
        model = make_model("native", False)
        task, fmt = token_task(6)
        kw = dict(k=5, token_format=fmt, progress=False, method="scaled_gxa_test", keep_attributions=True)
        one = identify(model, task, method_options={"factor": 1.0}, **kw)
        three = identify(model, task, method_options={"factor": 3.0}, **kw)
        assert torch.allclose(three.attributions, 3.0 * one.attributions, atol=1e-6)
        assert three.config.identify.method_kwargs == {"factor": 3.0}
        assert three.identify_config().to_dict()["method_options"] == {"factor": 3.0}
    finally:
        ATTRIBUTION_METHODS.pop("scaled_gxa_test", None)


def test_options_a_method_does_not_take_are_refused_before_model_time():
    with pytest.raises(ConfigError, match="method 'ig' takes no method options; got \\['factor'\\]"):
        IdentifyConfig(method_options={"factor": 2})
    _scaled_method()
    try:
        with pytest.raises(ConfigError, match="has no option 'facter'; its options: \\['factor'\\]"):
            IdentifyConfig(method="scaled_gxa_test", method_options={"facter": 2})
        with pytest.raises(ConfigError, match="method_options must be a dict"):
            IdentifyConfig(method="scaled_gxa_test", method_options=[1, 2])
    finally:
        ATTRIBUTION_METHODS.pop("scaled_gxa_test", None)


def test_the_cli_reads_name_equals_value():
    assert method_option("factor=3") == ("factor", 3)
    assert method_option("rule= gauss") == ("rule", " gauss")
    assert method_option("xs=[1, 2]") == ("xs", [1, 2])
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
        method_option("factor")
