"""The CLI turns user errors into one line on stderr and exit status 2, before building the model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _scaffold import RUN_CLI, tiny_cli_args

from tl_neuronllm.cli import app as cli

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_cli_args(steps=1)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # `python -m tl_neuronllm args` in a subprocess, with the tests' tiny model registered (tests/_scaffold.py)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("TL_NEURONLLM_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--steps", "0"], "argument --steps: must be >= 1, got 0"),
        (["--z", "-1"], "argument --z: z must be a count >= 1"),
        (["--z", "nan"], "argument --z: z = nan is a float"),
        (["--k", "1.5"], "argument --k: k = 1.5 is a float"),
        (["--method", "nosuch"], "method must be one of"),
        (["--n-identify", "0"], "argument --n-identify: must be >= 1, got 0"),
        (["--n-identify", "100"], "--n-identify 100 plus 1 demonstration item(s) exceed the 60 items"),
        (["--threads", "-2"], "argument --threads: must be >= 1, got -2"),
        (["--task", "nothere.jsonl"], "task file nothere.jsonl does not exist"),
    ],
)
def test_identify_user_errors_are_one_line(tmp_path, capsys, monkeypatch, extra, msg):
    args = list(TINY)
    for i in range(0, len(extra), 2):  # replace an option already in TINY
        if extra[i] in args:
            j = args.index(extra[i])
            del args[j : j + 2]
    # in-process (cli.main, as the console script calls it) to keep the suite fast; the subprocess test
    # below checks the same contract through `python -m tl_neuronllm`
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(["identify", *args, *extra, "--out", str(tmp_path / "o")])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert msg in err and "Traceback" not in err
    assert not (tmp_path / "o" / "result").exists()


@pytest.mark.slow
def test_unwritable_out_report_without_result_and_bad_task_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = _cli("identify", *TINY, "--steps", "0", cwd=tmp_path)  # argparse-level error
    assert r.returncode == 2 and "argument --steps: must be >= 1" in r.stderr and "Traceback" not in r.stderr
    r = _cli("identify", *TINY, "--out", str(tmp_path / "afile"), cwd=tmp_path)
    assert r.returncode == 2 and "cannot write to --out" in r.stderr and "Traceback" not in r.stderr
    r = _cli("report", "--out", str(tmp_path / "empty"), cwd=tmp_path)
    assert r.returncode == 2 and "does not hold a saved NeuronResult" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "options": {"A": "x", "B": "y"}, "answer": "A"}\n')
    args = [a for a in TINY if a not in ("--model", "tiny")]
    r = _cli(
        "identify",
        "--model",
        "tiny",
        *args[args.index("--mode") :],
        "--task",
        str(bad),
        "--out",
        str(tmp_path / "o"),
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "field 'options' is a dict" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
