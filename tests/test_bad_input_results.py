"""Results, hooks and checkpoints that do not belong to the model or to themselves are refused."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_model, token_task
from safetensors.torch import load_file, save_file

from tl_neuronllm import NeuronResult, Task, TaskError, evaluate, identify
from tl_neuronllm.errors import ResultFileError


@pytest.fixture(scope="module")
def model():
    return make_model("native", False)  # 3 layers x 64


@pytest.fixture(scope="module")
def run(model):
    task, fmt = token_task(10)
    ident, held, demo = task.split(6, n_demo=1, seed=0)
    result = identify(model, ident, k=5, demos=demo, token_format=fmt, steps=1, progress=False)
    return result, ident, held, demo, fmt


def _saved(result, tmp_path):
    return result.save(tmp_path / "r")


def test_load_round_trip_still_works(run, tmp_path):
    r = NeuronResult.load(_saved(run[0], tmp_path))
    assert r.good == run[0].good and r.bad == run[0].bad and torch.equal(r.scores, run[0].scores)


def test_load_refuses_config_of_another_model(run, tmp_path):
    d = _saved(run[0], tmp_path)
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["model"].update(n_layers=4, d_mlp=128)
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ResultFileError, match=r"records a model with 4 layers x 128 neurons but the scores are 3 x 64"):
        NeuronResult.load(d)


def test_load_refuses_altered_tensors(run, tmp_path):
    d = _saved(run[0], tmp_path)
    t = load_file(str(d / "tensors.safetensors"))
    g = run[0].good[0]
    t["scores"][g.layer, g.neuron] = -5.0  # the stored good list now disagrees with the scores
    save_file(t, str(d / "tensors.safetensors"))
    with pytest.raises(
        ResultFileError,
        match=rf"good\[0\] L{g.layer}N{g.neuron} has score .* but the scores tensor "
        r"holds -5",
    ):
        NeuronResult.load(d)


def test_load_refuses_list_that_is_not_the_top_k(run, tmp_path):
    d = _saved(run[0], tmp_path)
    meta = json.loads((d / "config.json").read_text())
    meta["good"] = meta["good"][1:]
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ResultFileError, match=r"the good list \(\d+ neurons\) is not the top-k=5 of the scores"):
        NeuronResult.load(d)


def test_load_refuses_mismatched_state_and_format(run, tmp_path):
    d = _saved(run[0], tmp_path)
    t = load_file(str(d / "tensors.safetensors"))
    t["state.n_good"] = torch.zeros(3, 65, dtype=torch.int64)
    save_file(t, str(d / "tensors.safetensors"))
    with pytest.raises(ResultFileError, match=r"state tensor 'n_good' has shape \(3, 65\), expected \(3, 64\)"):
        NeuronResult.load(d)
    d2 = run[0].save(tmp_path / "r2")
    meta = json.loads((d2 / "config.json").read_text())
    meta["format"] = "tl_neuronllm.NeuronResult/9"
    (d2 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        ResultFileError, match=r"format 'tl_neuronllm.NeuronResult/9' is not the one this version reads"
    ):
        NeuronResult.load(d2)


def test_truncated_files_name_the_path(run, tmp_path):
    d = _saved(run[0], tmp_path)
    f = d / "tensors.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(
        ResultFileError, match=rf"{f}: cannot be read as safetensors .* truncated .* save the result again"
    ):
        NeuronResult.load(d)
    d2 = run[0].save(tmp_path / "r2")
    (d2 / "config.json").write_text((d2 / "config.json").read_text()[:50])
    with pytest.raises(ResultFileError, match=r"config.json: not valid JSON"):
        NeuronResult.load(d2)


def test_hooks_check_the_model_when_built_and_the_width_when_fired(run):
    result = run[0]
    from helpers import NATIVE
    from transformer_lens.model_bridge import TransformerBridge

    torch.manual_seed(0)
    deep = TransformerBridge.boot_native(dict(NATIVE, n_layers=4)).eval()
    wide = TransformerBridge.boot_native(dict(NATIVE, d_mlp=128)).eval()
    with pytest.raises(
        ValueError, match=r"this result is for a model with 3 layers x 64 neurons; the given model has 4 x 64"
    ):
        result.hooks("good", model=deep)
    with pytest.raises(ValueError, match=r"3 x 128"):
        with result.suppress(wide):
            pass  # pragma: no cover
    toks = torch.tensor([[0, 7, 12, 9]])
    before = wide(toks)
    with pytest.raises(
        ValueError,
        match=r"layer \d \(blocks.\d.mlp.hook_post\): the activation has width 128 but these "
        r"interventions are for width 64",
    ):
        wide.run_with_hooks(toks, fwd_hooks=result.hooks("good"))
    assert torch.equal(wide(toks), before)


def test_checkpoint_of_another_model_is_refused(run, tmp_path):
    result, ident, held, demo, fmt = run
    a, b = make_model("native", False, seed=0), make_model("native", False, seed=1)  # same shape, other weights
    ck = tmp_path / "ck"
    identify(a, ident, k=5, demos=demo, token_format=fmt, steps=1, progress=False, checkpoint=ck)
    with pytest.raises(ValueError, match=r"checkpoint .* was written by a run with other arguments or another model"):
        identify(b, ident, k=5, demos=demo, token_format=fmt, steps=1, progress=False, checkpoint=ck)
    f = ck / "checkpoint.safetensors"
    f.write_bytes(f.read_bytes()[:64])
    with pytest.raises(ResultFileError, match=rf"checkpoint {f} cannot be read .* delete it"):
        identify(a, ident, k=5, demos=demo, token_format=fmt, steps=1, progress=False, checkpoint=ck)


def test_heldout_overlap_is_by_content_not_id(model, run):
    result, ident, held, demo, fmt = run
    # identification items under new ids are refused
    renamed = Task(
        tuple(
            type(it)(it.question, tuple(reversed(it.options)), len(it.options) - 1 - it.answer, it.context, f"new{i}")
            for i, it in enumerate(ident.items)
        ),
        name="renamed",
    )
    with pytest.raises(TaskError, match=r"held-out item 'new0' \(6 in all\) is an identification item"):
        evaluate(model, result, renamed, demos=demo, n_random=0, progress=False)
    # an unrelated task reusing the ids "0", "1", ... is accepted
    other, _ = token_task(6, seed=99)
    assert {it.id for it in other.items} & set(result.config["task"]["item_ids"])
    ev = evaluate(model, result, other, demos=demo, n_random=0, n_boot=10, progress=False)
    assert ev.n_items == 6


def test_truncated_evaluation_json_names_the_file(tmp_path):
    from tl_neuronllm import EvalResult

    f = tmp_path / "evaluation.json"
    f.write_text('{"rows": [')
    with pytest.raises(ValueError, match=rf"{f}: not a readable evaluation .* run the evaluation again"):
        EvalResult.load(tmp_path)
