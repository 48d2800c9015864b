"""Typed configuration records: IdentifyConfig and the result's ResultConfig (to_dict / from_dict, save /
load, results saved by the previous version with a plain dict config)."""

from __future__ import annotations

import json

import pytest
from helpers import token_task

from tl_neuronllm import IdentifyConfig, NeuronResult, identify
from tl_neuronllm.config.identify import IdentifyConfig as PipelineIdentifyConfig
from tl_neuronllm.config.result import ResultConfig
from tl_neuronllm.prompts.proxies import TokenFormat


def test_identify_config_round_trip():
    assert PipelineIdentifyConfig is IdentifyConfig
    cfg = IdentifyConfig(token_format=TokenFormat(letters=(3, 4, 5)), layers=[1, 0], z=7, method="grad_x_act")
    d = cfg.to_dict()
    assert d["layers"] == [1, 0] and d["token_format"]["letters"] == [3, 4, 5]
    assert IdentifyConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert IdentifyConfig.from_dict({"steps": 3, "unknown": 1}) == IdentifyConfig(steps=3)
    with pytest.raises(ValueError, match="method must be one of"):
        IdentifyConfig.from_dict({"method": "custom"})
    assert IdentifyConfig.from_dict({"method": "custom"}, strict=False).method == "custom"


def test_result_config_reads_as_the_flat_dict():
    c = ResultConfig.from_dict({"method": "qr_neuron", "z": 5, "k": 10, "task": {"name": "t"}, "rescored": True})
    assert c.identify.method == "qr_neuron" and c.reducer == "qr_neuron" and c.site == "last"
    assert c["z"] == 5 and c["k"] == 10 and c["task"]["name"] == "t" and c["rescored"] is True
    assert c.get("missing") is None and c.get("hook") == "hook_post"
    with pytest.raises(TypeError):
        c["z"] = 3  # a frozen record (0.6.0): change it with replace()
    c2 = c.replace(selection={"method": "cv"}, z=3)
    assert c.identify.z == 5 and "selection" not in c.extra
    c = c2
    assert c.identify.z == 3 and c.extra["selection"] == {"method": "cv"}
    assert ResultConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert dict(c) == c.to_dict()
    with pytest.raises(ValueError, match="site must be one of"):
        ResultConfig(site="first")


@pytest.fixture
def result(token_model):
    task, fmt = token_task(5)
    return identify(token_model, task, k=6, token_format=fmt, steps=2, n_proxies=2, progress=False)


def test_result_config_round_trips_through_save_and_load(result, tmp_path):
    assert isinstance(result.config, ResultConfig) and result.config.site == result.site == "last"
    assert result.identify_config() == result.config.identify and result.identify_config().steps == 2
    back = NeuronResult.load(result.save(tmp_path / "r"))
    assert isinstance(back.config, ResultConfig) and back.config == result.config
    assert back.identify_config() == result.identify_config()


def test_a_result_saved_by_the_previous_version_loads_with_the_same_config(result, tmp_path):
    path = result.save(tmp_path / "old")
    meta = json.loads((path / "config.json").read_text())
    old = {k: v for k, v in meta["config"].items() if k not in ("site", "reducer")}  # the previous version's dict
    meta["config"] = old
    (path / "config.json").write_text(json.dumps(meta))
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path / "tensors.safetensors")), str(path / "tensors.safetensors"))  # 0.5.0: no digest
    back = NeuronResult.load(path)
    assert back.config == result.config and back.config.site == "last" and back.config.reducer == "ace"
    assert {k: back.config[k] for k in old} == old
    assert back.identify_config() == result.identify_config()


def test_a_result_built_with_a_dict_config_gets_the_typed_record(result):
    r = NeuronResult(result.scores, result.good, result.bad, result.state, config={"method": "grad_x_act", "k": 6})
    assert isinstance(r.config, ResultConfig) and r.identify_config().method == "grad_x_act" and r.config["k"] == 6


def test_a_saved_config_with_refused_options_is_a_result_file_error(result, tmp_path):
    from tl_neuronllm.errors import ResultFileError

    path = result.save(tmp_path / "bad")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["steps"] = 0
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ResultFileError, match=r"records options this version refuses \(steps must be >= 1"):
        NeuronResult.load(path)
