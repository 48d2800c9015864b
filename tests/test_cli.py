"""The tl-neuronllm command end to end on the hidden tiny testing model (never SmolLM2 here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _scaffold import tiny_cli_args

from tl_neuronllm.cli import app as cli
from tl_neuronllm.evaluation.eval_result import EvalResult
from tl_neuronllm.result.neuron_result import NeuronResult

PNG = b"\x89PNG\r\n\x1a\n"
TINY = tiny_cli_args(steps=2)
EVAL = ["--n-random", "2", "--n-boot", "50"]


def _check_outputs(out: Path) -> tuple[NeuronResult, EvalResult]:
    for f in (
        "run.json",
        "result/config.json",
        "result/tensors.safetensors",
        "result/neurons.csv",
        "evaluation.json",
        "evaluation.md",
        "report.md",
    ):
        assert (out / f).is_file(), f
    for name in ("layer_counts", "ace_distribution", "interventions", "letters"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 2000
    report = (out / "report.md").read_text()
    assert "figures/interventions.png" in report and "suppress good" in report and "| rank |" in report
    return NeuronResult.load(out / "result"), EvalResult.load(out)


@pytest.mark.slow
def test_run_end_to_end_then_subcommands_reproduce_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", *TINY, *EVAL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "baseline" in printed and "suppress bad" in printed and "wall time" in printed
    result, ev = _check_outputs(out)
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "tiny" and run["n_identify"] == 12 and run["n_heldout"] == 16
    assert run["n_proxies"] == 3 and run["show_options"] is True and ev.n_queries == 3 * 16
    assert ev.n_items == 16 and ev.mode == "letter" and len(result.good) <= 6
    assert set(ev.config["item_ids"]).isdisjoint(result.config["task"]["item_ids"])

    # the same run as three separate commands (the model and task are rebuilt from run.json)
    out2 = tmp_path / "steps"
    assert cli.main(["identify", *TINY, "--out", str(out2), "--quiet"]) == 0
    assert cli.main(["evaluate", "--out", str(out2), "--no-progress", "--quiet", *EVAL]) == 0
    assert cli.main(["report", "--out", str(out2), "--no-progress", "--quiet"]) == 0
    result2, ev2 = _check_outputs(out2)
    assert result2.good == result.good and result2.bad == result.bad
    assert [r.predictions for r in ev2.rows] == [r.predictions for r in ev.rows]
    assert ev2.config["item_ids"] == ev.config["item_ids"]


@pytest.mark.slow
def test_cloze_mode_and_fewer_heldout(tmp_path):
    out = tmp_path / "cloze"
    assert cli.main(["run", *TINY, *EVAL, "--mode", "cloze", "--out", str(out), "--quiet"]) == 0
    _, ev = _check_outputs(out)
    assert ev.mode == "cloze"
    # cloze without listed options: all proxies would be one prompt, so one proxy per item
    run = json.loads((out / "run.json").read_text())
    assert run["show_options"] is False and run["n_proxies"] == 1 and ev.n_queries == ev.n_items
    assert cli.main(["evaluate", "--out", str(out), "--no-progress", "--quiet", "--n-heldout", "5", *EVAL]) == 0
    assert EvalResult.load(out).n_items == 5
    assert cli.main(["evaluate", "--out", str(out), "--no-progress", "--quiet", "--k", "2", *EVAL]) == 0
    assert cli.main(["report", "--out", str(out), "--no-progress", "--quiet"]) == 0
    ev = EvalResult.load(out)
    assert ev.result_info["k"] == 2 and ev.row("suppress_good").n_good <= 2
    assert "k = 2:" in (out / "report.md").read_text()


def test_default_arguments_and_no_subcommand_means_run():
    args = cli.build_parser().parse_args(["run"])
    for key in ("task", "mode", "n_identify", "n_heldout", "steps", "ig_rule", "n_random", "method"):
        assert getattr(args, key) == cli.DEFAULTS[key], key
    assert args.out == cli.DEFAULT_OUT and args.progress
    assert cli.build_parser().parse_args(["run", "--no-progress"]).progress is False


def test_errors_are_clear(tmp_path, capsys):
    assert cli.main(["evaluate", "--out", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown task"):
        cli.load_task("no_such_task")
    with pytest.raises(SystemExit, match="unknown model './gpt-17': no such model folder"):
        cli.load_model("./gpt-17")
    with pytest.raises(SystemExit, match="did you mean 'smollm2'"):
        cli.load_model("smolm2")
    with pytest.raises(SystemExit):
        cli.main(["run", "--mode", "banana"])
    assert "invalid choice" in capsys.readouterr().err


def test_task_from_jsonl_file(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text(
        "\n".join(json.dumps({"question": f"q{i}?", "options": ["a", "b", "c"], "answer": i % 3}) for i in range(5))
    )
    task = cli.load_task(str(f))
    assert len(task) == 5 and task.items[2].answer == 2


@pytest.mark.slow
def test_python_dash_m_help_and_version():
    r = subprocess.run([sys.executable, "-m", "tl_neuronllm", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "identify" in r.stdout and "evaluate" in r.stdout and "report" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tl_neuronllm", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "tl-neuronllm" in r.stdout


@pytest.mark.slow
def test_z_ambiguity_and_rescoring_from_kept_attributions(tmp_path, capsys):
    from tl_neuronllm import rescore

    out = tmp_path / "keep"
    assert (
        cli.main(
            ["identify", *TINY, "--out", str(out), "--quiet", "--z", "5", "--ambiguity", "none", "--keep-attributions"]
        )
        == 0
    )
    kept = NeuronResult.load(out / "result")
    assert kept.config["z"] == 5 and kept.config["ambiguity"] is None and kept.attributions is not None
    assert cli.main(["evaluate", "--out", str(out), "--no-progress", *EVAL, "--z", "0.1", "--ambiguity", "0.25"]) == 0
    assert "re-formed the sets" in capsys.readouterr().out
    ev = EvalResult.load(out)
    want = rescore(kept, z=0.1, ambiguity=0.25)
    assert ev.row("suppress_good").n_good == len(want.good) and ev.row("suppress_bad").n_bad == len(want.bad)
    assert len(want.good) != len(kept.good) or want.good != kept.good
    # report shows the re-formed sets it evaluated (saved in result_rescored/), not the identified ones
    assert cli.main(["report", "--out", str(out), "--no-progress", "--quiet", "--no-explain"]) == 0
    assert NeuronResult.load(out / "result_rescored").good == want.good
    # without kept attributions the re-forming options are refused with the fix in the message
    out2 = tmp_path / "plain"
    assert cli.main(["identify", *TINY, "--out", str(out2), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--out", str(out2), "--no-progress", *EVAL, "--z", "0.1"]) == 2
    assert "--keep-attributions" in capsys.readouterr().err
    for bad in ("strict", "0.7"):
        with pytest.raises(SystemExit):
            cli.main(["identify", *TINY, "--out", str(out2), "--ambiguity", bad])
        assert f"ambiguity must be a number in [0, 0.5] or 'none', got '{bad}'" in capsys.readouterr().err


@pytest.mark.slow
def test_select_cv_flag_reforms_the_sets_with_the_chosen_setting(tmp_path, capsys):
    from tl_neuronllm import rescore
    from tl_neuronllm.studies.selection import CVSelection

    kept_dir, cv_dir = tmp_path / "kept", tmp_path / "cv"
    assert cli.main(["identify", *TINY, "--out", str(kept_dir), "--quiet", "--keep-attributions"]) == 0
    # --select-cv chooses --z and --ambiguity itself: giving either too is refused before anything runs
    assert cli.main(["identify", *TINY, "--out", str(cv_dir), "--quiet", "--select-cv", "--z", "5"]) == 2
    assert "--select-cv chooses --z and --ambiguity itself; drop --z" in capsys.readouterr().err
    assert not cv_dir.exists()
    assert cli.main(["identify", *TINY, "--out", str(cv_dir), "--quiet", "--select-cv"]) == 0
    kept = NeuronResult.load(kept_dir / "result")
    chosen = NeuronResult.load(cv_dir / "result")
    sel = CVSelection.load(cv_dir / "selection")
    assert sel.result is None and len(sel.folds) == 4 and len(sel.effects) == len(sel.grid)
    # the saved sets are the full run's attributions re-formed with the chosen setting (same IG run)
    want = rescore(kept, **sel.setting)
    assert chosen.good == want.good and chosen.bad == want.bad
    assert chosen.attributions is None  # kept only for the selection, as asked
    assert chosen.config["z"] == sel.setting["z"] and chosen.config["ambiguity"] == sel.setting["ambiguity"]
    run = json.loads((cv_dir / "run.json").read_text())
    assert run["selection"]["setting"] == sel.setting
    # the held-out evaluation of the chosen sets works as for any identify run
    assert cli.main(["evaluate", "--out", str(cv_dir), "--no-progress", *EVAL]) == 0
    # too few identification items for 4 folds: refused before the model is built
    capsys.readouterr()
    bad = [a if a != "12" else "3" for a in TINY]
    assert cli.main(["identify", *bad, "--out", str(tmp_path / "few"), "--quiet", "--select-cv"]) == 2
    assert "--select-cv needs at least 4 identification items (4 folds), got 3" in capsys.readouterr().err


def test_cloze_listing_flag_reaches_the_config_and_is_refused_in_letter_mode(tmp_path, capsys):
    out = tmp_path / "listing"
    args = ["identify", *TINY, "--mode", "cloze", "--no-show-options", "--cloze-listing", "--k", "4"]
    assert cli.main([*args, "--out", str(out), "--quiet", "--no-progress"]) == 0
    assert NeuronResult.load(out / "result").config["cloze_listing"] is True
    capsys.readouterr()
    refused = tmp_path / "letter"
    letter = ["identify", *TINY, "--mode", "letter", "--cloze-listing", "--out", str(refused), "--quiet"]
    assert cli.main(letter) == 2
    assert "cloze_listing (options listed unlettered) applies to mode='cloze'" in capsys.readouterr().err
    assert not (refused / "result").exists()
