"""The command for real work: ``--model`` as a local folder (a tiny random Llama saved with ``save_pretrained``),
``--device`` / ``--dtype``, the settings printed at the start, options without a subcommand refused, "did you
mean ..." for options, subcommands, models, tasks and ``identify()`` keywords, and quiet loading bars."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import WORDS, make_model, word_tokenizer

from tl_neuronllm import identify
from tl_neuronllm.cli import app as cli
from tl_neuronllm.cli.models import load_model
from tl_neuronllm.data.smollm2 import hf_progress
from tl_neuronllm.result.neuron_result import NeuronResult


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny random LlamaForCausalLM and the word tokenizer, saved to a folder as save_pretrained writes them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(WORDS),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            initializer_range=0.2,
        )
    )
    d = tmp_path_factory.mktemp("tiny-llama")
    hf.save_pretrained(d)
    word_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    import random

    rng = random.Random(0)
    things = ["cat", "dog", "bird", "fish", "sky", "grass", "sun", "sea"]
    recs = [
        {
            "question": f"what is the colour of the {a} {b} ?",
            "options": rng.sample(["red", "blue", "green", "yellow"], 4),
            "answer": rng.randrange(4),
        }
        for a in things[:4]
        for b in things[4:]
    ]  # 16 distinct questions in the word tokenizer's vocabulary
    f = tmp_path_factory.mktemp("task") / "colours.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs))
    return f


def test_a_saved_folder_loads_as_a_bridge_with_its_weights(llama_dir, capfd):
    from transformers import AutoModelForCausalLM

    capfd.readouterr()
    m = load_model(str(llama_dir), device="cpu", dtype="float32", progress=False)
    assert "Loading weights" not in capfd.readouterr().err  # progress=False: transformers' bar is quiet
    assert type(m).__name__ == "TransformerBridge" and (m.cfg.n_layers, m.cfg.d_mlp) == (2, 64)
    load_model(str(llama_dir), device="cpu", progress=True)
    assert "Loading weights" in capfd.readouterr().err  # the bar the check above would have caught
    hf = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    toks = m.to_tokens("cat red dog")
    with torch.no_grad():
        assert torch.allclose(m(toks), hf(toks).logits, atol=1e-4)
    m16 = load_model(str(llama_dir), device="cpu", dtype="bfloat16", progress=False)
    assert next(m16.parameters()).dtype == torch.bfloat16


def test_hf_progress_restores_the_bars():
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    with hf_progress(False):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()


@pytest.mark.slow
def test_run_on_a_saved_folder(llama_dir, task_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--model", str(llama_dir), "--task", str(task_file), "--mode", "letter", "--device", "cpu"]
    args += ["--n-identify", "6", "--n-heldout", "8", "--k", "4", "--steps", "2", "--threads", "1", "--no-progress"]
    args += ["--n-random", "1", "--n-boot", "20", "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    settings = printed.split("\n\n")[0]
    assert settings.startswith("tl-neuronllm run: settings")
    assert "  model" in settings and f"{llama_dir}  (given)" in settings and "steps" in settings
    assert printed.strip().splitlines()[-1].startswith("open the report: file://")
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == str(llama_dir) and run["device"] == "cpu"
    r = NeuronResult.load(out / "result")
    assert (r.n_layers, r.d_mlp) == (2, 64) and len(r.good) == 4
    # evaluate alone reloads the folder from run.json
    assert (
        cli.main(["evaluate", "--out", str(out), "--no-progress", "--quiet", "--n-random", "1", "--n-boot", "20"]) == 0
    )


def test_settings_name_the_defaults_that_differ_from_the_library(capsys):
    args = cli.build_parser().parse_args(["run"])
    from tl_neuronllm.cli.hints import settings_lines

    lines = settings_lines(args, cli.build_parser())
    mode = next(x for x in lines if x.strip().startswith("mode "))
    assert "cloze" in mode and "identify() uses letter" in mode and "chance" in mode
    steps = next(x for x in lines if x.strip().startswith("steps "))
    assert steps.endswith("8  (default)")  # the same as identify()'s since 0.6.0 (docs/ig_steps.md)
    assert not any("<object" in x for x in lines)  # options filled in after the checks print their defaults
    assert next(x for x in lines if x.strip().startswith("z ")).endswith("0.1  (default)")
    assert any(x.strip().startswith("k ") and "identify() uses 100" in x for x in lines)
    given = settings_lines(cli.build_parser().parse_args(["run", "--steps", "3"]), cli.build_parser())
    assert any(x.strip().startswith("steps ") and x.endswith("3  (given)") for x in given)


def test_options_without_a_subcommand_are_refused_with_the_usage(capsys):
    assert cli.main(["--k", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tl-neuronllm") and "options need a subcommand: `tl-neuronllm run --k 5`" in err


@pytest.mark.parametrize(
    "argv, said",
    [
        (["run", "--n-identfy", "4"], "unknown option --n-identfy; did you mean --n-identify?"),
        (["identify", "--stpes=2"], "unknown option --stpes; did you mean --steps?"),
        (["evaluate", "--n-randm", "2"], "unknown option --n-randm; did you mean --n-random?"),
        (["idenitfy"], "unknown subcommand 'idenitfy'; did you mean 'identify'?"),
        (["run", "--frobnicate"], "unknown option --frobnicate (tl-neuronllm run --help)"),
    ],
)
def test_typos_get_a_suggestion(argv, said, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "usage: tl-neuronllm" in err


def test_prefixes_argparse_accepts_are_not_typos(tmp_path, capsys):
    # "--n-id" is a unique prefix of --n-identify: no refusal from the hint; the run fails later on the model
    assert cli.main(["identify", "--n-id", "4", "--model", "smolm2", "--out", str(tmp_path), "--quiet"]) == 2
    assert "did you mean 'smollm2'" in capsys.readouterr().err


def test_unknown_task_and_model_names_get_a_suggestion(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"unknown task 'comonsenseqa' \(did you mean 'commonsenseqa'\?\)"):
        cli.load_task("comonsenseqa")
    with pytest.raises(SystemExit, match="did you mean 'smollm2'"):
        cli.load_model("smollm")
    with pytest.raises(SystemExit, match="no such model folder"):
        cli.load_model(str(tmp_path / "missing"))


def test_identify_keyword_typo_gets_a_suggestion():
    model = make_model("native", False)
    from helpers import token_task

    task, fmt = token_task(4)
    with pytest.raises(TypeError, match=r"'stpes' \(did you mean 'steps'\?\)"):
        identify(model, task, stpes=2, token_format=fmt, progress=False)
