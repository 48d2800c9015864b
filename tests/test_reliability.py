"""Silent answers of issue 22, each now an error of the package's own type naming the problem, or fixed:
k=0, method outputs, method code in checkpoints, results of another model, evaluations of another
result, edited result configs, evaluate_many's list, re-entered interventions, duplicated demos."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_model, token_task

from tl_neuronllm import (
    ConfigError,
    InterventionError,
    MismatchError,
    ModelError,
    NeuronResult,
    RegistryError,
    ResultFileError,
    TaskError,
    compare,
    evaluate,
    evaluate_many,
    explain,
    identify,
    report_html,
    select_cv,
    stability,
)
from tl_neuronllm.attribution.methods import ATTRIBUTION_METHODS, Attribution, GradXAct, register_method


@pytest.fixture(scope="module")
def run():
    model = make_model("native", False)
    task, fmt = token_task(12)
    result = identify(model, task, token_format=fmt, steps=1, k=4, progress=False, keep_attributions=True)
    return model, task, fmt, result


# ---- k = 0 ------------------------------------------------------------------------------------
def test_k_zero_is_refused_before_model_time(run):
    model, task, fmt, result = run
    with pytest.raises(ConfigError, match=r"k must be a count >= 1"):
        identify(None, task, k=0)  # type: ignore[arg-type]  # no model is touched: k is checked first
    with pytest.raises(ConfigError, match=r"k must be a count >= 1"):
        result.with_k(0)
    with pytest.raises(ConfigError, match=r"grid\[1\]\['k'\] must be a count >= 1"):
        select_cv(None, result, task, grid=[{"z": 0.05}, {"k": 0}])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"k must be a count >= 1"):
        evaluate(model, result, task, k=0, progress=False)
    cfg = result.config.replace(k=0)  # as a hand-built result could hold it
    legacy = NeuronResult(result.scores, [], [], result.state, config=cfg, attributions=result.attributions)
    with pytest.raises(ConfigError, match=r"the result's k must be a count >= 1"):
        stability(legacy, n_resamples=3)


def test_cli_k_zero_is_refused(tmp_path, capsys):
    from _scaffold import tiny_cli_args

    from tl_neuronllm.cli import app as cli

    args = tiny_cli_args(steps=1)
    args[args.index("--k") + 1] = "0"
    with pytest.raises(SystemExit):
        cli.main(["identify", *args, "--out", str(tmp_path / "o")])
    assert "argument --k: k must be a count >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---- method registry and outputs ----------------------------------------------------------------
def _registered(cls):
    register_method(cls)
    return cls


def test_register_method_refuses_replacing_and_non_methods():
    with pytest.raises(RegistryError, match=r"method 'ig' is already registered .*replace=True"):
        register_method(type("MyIG", (GradXAct,), {"name": "ig"}))
    assert ATTRIBUTION_METHODS["ig"].__name__ == "IntegratedGradients"
    with pytest.raises(RegistryError, match=r"takes an AttributionMethod subclass"):
        register_method(type("NotAMethod", (), {"name": "x"}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad, msg",
    [
        ("scores", r"returned scores of shape \(\d+, 2, 64\), expected \[prompts, n_layers, d_mlp\] = \(\d+, 3, 64\)"),
        ("probs", r"returned probs\[0\] of shape \(2,\) for prompt 0 .*expected \[n_options\] = \(4,\)"),
        ("n_probs", r"returned probs for 1 prompts, expected one tensor per prompt"),
        ("type", r"returned tuple, expected an Attribution"),
    ],
)
def test_method_outputs_of_the_wrong_shape_name_the_method(bad, msg):
    class Broken(GradXAct):
        name = f"broken_{bad}"

        def attribute(self, adapter, prompts, options):
            out = super().attribute(adapter, prompts, options)
            if bad == "scores":
                return Attribution(out.scores[:, :2], out.probs, out.acts)
            if bad == "probs":
                return Attribution(out.scores, [p[:2] for p in out.probs], out.acts)
            if bad == "n_probs":
                return Attribution(out.scores, out.probs[:1], out.acts)
            return (out.scores, out.probs, out.acts)

    register_method(Broken)
    try:
        model = make_model("native", False)
        task, fmt = token_task(6)
        with pytest.raises(ModelError, match=rf"attribution method 'broken_{bad}' .*{msg}"):
            identify(model, task, token_format=fmt, method=f"broken_{bad}", progress=False)
    finally:
        ATTRIBUTION_METHODS.pop(f"broken_{bad}", None)


def test_checkpoint_refuses_a_method_re_registered_with_other_code(tmp_path):
    class Mine(GradXAct):
        name = "mine_ckpt"

    class MineScaled(GradXAct):
        name = "mine_ckpt"

        def attribute(self, adapter, prompts, options):
            out = super().attribute(adapter, prompts, options)
            return Attribution(2 * out.scores, out.probs, out.acts)

    model = make_model("native", False)
    task, fmt = token_task(6)
    opts = dict(token_format=fmt, method="mine_ckpt", progress=False, checkpoint=tmp_path / "ck", batch_size=2)
    register_method(Mine)
    try:
        first = identify(model, task, **opts)
        again = identify(model, task, **opts)  # the same code: resumes from the final snapshot
        assert torch.equal(first.scores, again.scores)
        register_method(MineScaled, replace=True)
        with pytest.raises(ValueError, match=r"differs in the attribution method's code"):
            identify(model, task, **opts)
    finally:
        ATTRIBUTION_METHODS.pop("mine_ckpt", None)


# ---- results of another model -------------------------------------------------------------------
def test_compare_and_explain_refuse_results_of_other_weights(run):
    model, task, fmt, result = run
    other = make_model("native", False, seed=1)  # same shape, other weights
    r_other = identify(other, task, token_format=fmt, steps=1, k=4, progress=False)
    assert result.config["model"]["weights"] != r_other.config["model"]["weights"]
    with pytest.raises(MismatchError, match=r"results\['b'\] was identified on a model with other weights"):
        compare({"a": result, "b": r_other})
    with pytest.raises(MismatchError, match=r"identified on a model with other weights"):
        explain(result, other, task)
    same = identify(model, task, token_format=fmt, steps=1, k=4, progress=False, seed=1)
    assert compare({"a": result, "b": same}).tasks == ["a", "b"]  # one model: accepted


# ---- evaluations and reports ---------------------------------------------------------------------
def test_report_refuses_an_evaluation_of_another_result_and_a_folder_as_evaluation(run, tmp_path):
    model, task, fmt, result = run
    ev = evaluate(model, result, task, progress=False, n_random=0, n_boot=20, allow_overlap=True)
    assert ev.result_info["result_fingerprint"] == result.fingerprint()
    with pytest.raises(ConfigError, match=r"evaluation must be an EvalResult or None, got str 'out/'"):
        report_html(result, "out/")  # type: ignore[arg-type]
    with pytest.raises(MismatchError, match=r"this evaluation .* is of another result than the one given"):
        report_html(result.with_k(2), ev, tmp_path)
    ev.save(tmp_path / "ev")  # the fingerprint survives saving
    from tl_neuronllm import EvalResult

    with pytest.raises(MismatchError):
        report_html(result.with_k(2), EvalResult.load(tmp_path / "ev"), tmp_path)
    assert report_html(result, EvalResult.load(tmp_path / "ev"), tmp_path).is_file()


def test_evaluate_many_names_the_entry_that_is_not_a_result(run):
    model, task, _fmt, result = run
    with pytest.raises(ConfigError, match=r"results\[1\] is a str \('x'\), not a NeuronResult"):
        evaluate_many(model, [result, "x"], task, progress=False)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"result must be a NeuronResult, got str"):
        evaluate(model, "out/result", task, progress=False)  # type: ignore[arg-type]


# ---- saved results ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [("hook", "hook_pre"), ("mode", "cloze"), ("z", 0.5), ("layers", [0]), ("n_proxies", 1), ("ambiguity", 0.25)],
)
def test_load_refuses_a_hand_edited_config(run, tmp_path, field, value):
    result = run[3]
    path = result.save(tmp_path / "r")
    assert NeuronResult.load(path).good == result.good  # unedited: loads
    f = path / "config.json"
    meta = json.loads(f.read_text())
    assert meta["config"][field] != value
    meta["config"][field] = value
    f.write_text(json.dumps(meta, indent=2))
    with pytest.raises(ResultFileError, match=r"config.json's 'config' differs from the one saved with tensors"):
        NeuronResult.load(path)


# ---- interventions ------------------------------------------------------------------------------
def test_the_same_suppress_context_entered_twice(run):
    model, _task, _fmt, result = run
    toks = torch.tensor([[0, 10, 41, 5]])
    with torch.no_grad():
        clean = model(toks)
        ctx = result.suppress(model)
        with ctx:
            suppressed = model(toks)
            with pytest.raises(InterventionError, match=r"already active: the same context object was entered again"):
                with ctx:
                    pass
            assert torch.equal(model(toks), suppressed)  # still applied once
        assert torch.equal(model(toks), clean)  # hooks removed
        with ctx:  # one after another: fine
            assert torch.equal(model(toks), suppressed)
        assert torch.equal(model(toks), clean)
    assert not torch.equal(clean, suppressed)


# ---- demonstrations ------------------------------------------------------------------------------
def test_a_duplicated_item_used_as_a_demo_names_both_ids():
    from tl_neuronllm import Task

    model = make_model("native", False)
    task, fmt = token_task(6)
    recs = task.to_records()
    demo = Task.from_records([dict(recs[2], id="demo-copy")])
    with pytest.raises(
        TaskError, match=r"scored item '2' has the same context, question and options as demonstration 'demo-copy'"
    ):
        identify(model, task, demos=demo, token_format=fmt, n_shots=1, progress=False)


# ---- CLI -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--select-cv", "--ambiguity", "0"], "--select-cv chooses --z and --ambiguity itself; drop --ambiguity"),
        (["--out", ""], "argument --out: expected a folder, got an empty string"),
    ],
)
def test_cli_refuses_option_combinations_before_anything_runs(tmp_path, capsys, monkeypatch, extra, msg):
    from _scaffold import tiny_cli_args

    from tl_neuronllm.cli import app as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("the model was built"))
    try:
        code = cli.main(["run", *tiny_cli_args(steps=1), *extra])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert msg in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_run_no_explain_lists_only_what_it_wrote(tmp_path, capsys):
    from _scaffold import tiny_cli_args

    from tl_neuronllm.cli import app as cli

    out = tmp_path / "o"
    args = ["run", *tiny_cli_args(steps=1), "--n-random", "1", "--n-boot", "20", "--no-explain", "--out", str(out)]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "outputs in" in lines[-2] and "explanation.csv" not in lines[-2] and "report.html" in lines[-2]
    assert not (out / "explanation.csv").exists()


def test_the_weight_fingerprint_samples_large_tensors_inside_their_bounds():
    """A tensor of 28,311,552 values (SmolLM2's embedding): a float32 linspace of indices rounded past the end."""
    from tl_neuronllm.pipeline.checkpoint import model_fingerprint

    big = torch.nn.Embedding(49152, 576)
    with torch.no_grad():
        big.weight.zero_()
    a = model_fingerprint(big)
    with torch.no_grad():
        big.weight[-1, -1] = 1.0  # the last value is sampled
    assert model_fingerprint(big) != a
