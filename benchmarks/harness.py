"""The benchmarks' common harness: environment record, model / task / split loading, result files.

Every benchmark is a module of this folder with ``main(argv: list[str] | None = None)`` and is run as
``python -m benchmarks NAME [options]`` (``python -m benchmarks`` lists them). Benchmarks use the package's
public API only and this harness:

* :func:`environment`: versions (``tl_neuronllm.provenance.versions``), torch threads, load average, CPU count,
  git revision, date and machine, recorded in every result;
* :func:`parser`: an argparse parser with the common options (``--task``, ``--n-identify``, ``--n-heldout``,
  ``--seed``, ``--run``, ``--out``, ``--threads``);
* :func:`load_model` / :func:`load_task` / :func:`split`: the default model, a registered task, and the
  identify / held-out / demonstration split the CLI uses (``Task.split``);
* :func:`write_result`: ``benchmarks/results/<benchmark>/<run>.json`` (and ``.md`` when given), with the schema
  ``{"schema": 1, "benchmark", "run", "args", "environment", "results"}``; :func:`result_dir` for a
  benchmark's other files (figures, saved results); :func:`read_json` reads a result of either layout (the
  harness's, or a file written before the harness, kept as it was);
* :func:`test_scaffolding`: the tests' tiny models and tokenizers (``tests/helpers.py``), for the benchmarks
  that need them: the one place that puts ``tests/`` on ``sys.path``;
* :func:`command`: the argv and environment that run a benchmark in a fresh process (``python -m benchmarks``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tl_neuronllm import Task
from tl_neuronllm.data.sources import load_task as _load_registered_task
from tl_neuronllm.provenance import versions

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SCHEMA = 1


def git_revision() -> str | None:
    """The checkout's commit (with ``+dirty`` when it has uncommitted changes), or None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
        if rev.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tl_neuronllm"], cwd=HERE, capture_output=True)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def environment() -> dict[str, Any]:
    """What a measurement ran on: versions, threads, load, CPU count, machine, git revision and date."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
        "cpu_count": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git": git_revision(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def parser(
    description: str | None, *, task: str | None = "commonsenseqa", run: str | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with the common options of every benchmark (add your own to it)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if task is not None:
        ap.add_argument("--task", default=task, help="a registered task name (default %(default)s)")
        ap.add_argument("--n-identify", type=int, default=24, help="identification items (default %(default)s)")
        ap.add_argument("--n-heldout", type=int, default=200, help="held-out items (default %(default)s)")
        ap.add_argument("--n-shots", type=int, default=1, help="demonstrations per prompt (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="split and sampling seed (default %(default)s)")
    ap.add_argument("--run", default=run, help="the run's name: results/<benchmark>/<run>.json")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return ap


def setup(args: argparse.Namespace) -> None:
    """Apply the common options (threads)."""
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))


def load_model(name: str = "smollm2", **kwargs: Any) -> Any:
    """The default model (``"smollm2"``: SmolLM2-135M-Instruct as a TransformerBridge) or the letter-capable
    organism (``"smollm2-letter"``, when shipped)."""
    from tl_neuronllm.data import smollm2

    if name == "smollm2":
        return smollm2.load_smollm2(**kwargs)
    if name == "smollm2-letter":
        return smollm2.load_smollm2(variant="letter", **kwargs)
    raise ValueError(f"unknown benchmark model {name!r}; known: smollm2, smollm2-letter")


def load_task(name: str, *, limit: int | None = None) -> Task:
    """A registered task (:mod:`tl_neuronllm.data.sources`)."""
    return _load_registered_task(name, limit=limit)


def split(
    task: Task, n_identify: int, n_heldout: int | None, *, n_shots: int = 1, seed: int = 0
) -> tuple[Task, Task, Task]:
    """The (identify, held-out, demonstrations) split the CLI uses (``Task.split``); ``n_heldout`` is capped
    at what the task has left."""
    n_demo = max(1, n_shots)
    left = len(task) - n_identify - n_demo
    if left < 1:
        raise ValueError(f"task {task.name!r} has {len(task)} items: too few for {n_identify} + {n_demo}")
    n_held = left if n_heldout is None else min(n_heldout, left)
    ident, held, demos = task.split(n_identify, n_held, n_demo=n_demo, seed=seed)
    assert held is not None and demos is not None
    return ident, held, demos


def write_result(
    benchmark: str,
    run: str,
    results: Any,
    *,
    args: argparse.Namespace | dict[str, Any] | None = None,
    markdown: str | None = None,
    out: str | Path | None = None,
) -> Path:
    """Write ``<out>/<benchmark>/<run>.json`` (and ``.md``) with the harness's schema; returns the JSON path."""
    folder = Path(out or RESULTS) / benchmark
    folder.mkdir(parents=True, exist_ok=True)
    arg_dict = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    doc = {"schema": SCHEMA, "benchmark": benchmark, "run": run, "args": arg_dict, "environment": environment()}
    doc["results"] = results
    path = folder / f"{run}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if markdown is not None:
        head = f"<!-- {markdown_head(benchmark, run, doc['environment'])} -->\n"
        path.with_suffix(".md").write_text(head + markdown.rstrip("\n") + "\n")
    return path


def markdown_head(benchmark: str, run: str, env: dict[str, Any]) -> str:
    """The run line a result's markdown starts with: date, git revision, threads and versions."""
    vs = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return f"{benchmark}/{run}: {env['date']}, git {env['git']}, {env['torch_threads']} threads; {vs}"


def result_dir(benchmark: str, out: str | Path | None = None) -> Path:
    """``<out>/<benchmark>/`` (created): where a benchmark's other files go (figures, saved results)."""
    folder = Path(out or RESULTS) / benchmark
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_json(path: str | Path) -> Any:
    """A result file's ``results`` when it has the harness's schema, else the whole file (results written
    before the harness are kept as they were)."""
    doc = json.loads(Path(path).read_text())
    if isinstance(doc, dict) and "schema" in doc and "results" in doc:
        return doc["results"]
    return doc


def test_scaffolding() -> ModuleType:
    """The tests' helpers (``tests/helpers.py``: tiny models, token tasks, ``word_tokenizer``); puts ``tests/``
    on ``sys.path`` (the one place in the benchmarks that does)."""
    import importlib

    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    return importlib.import_module("helpers")


def command(name: str, *argv: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run benchmark ``name`` in a fresh process (from the repository root:
    ``subprocess.run(argv, env=env, cwd=ROOT)``), with this checkout first on ``PYTHONPATH``."""
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return [sys.executable, "-m", "benchmarks", name, *argv], {**os.environ, "PYTHONPATH": path}


def read_result(benchmark: str, run: str, *, out: str | Path | None = None) -> dict[str, Any]:
    """A result written by :func:`write_result`."""
    return json.loads((Path(out or RESULTS) / benchmark / f"{run}.json").read_text())


def benchmarks() -> list[str]:
    """The benchmark modules of this folder (every ``*.py`` with a ``main`` but the harness)."""
    names = []
    for p in sorted(HERE.glob("*.py")):
        if p.stem.startswith("_") or p.stem == "harness":
            continue
        if "\ndef main(" in p.read_text():
            names.append(p.stem)
    return names


def run(name: str, argv: Sequence[str]) -> Any:
    """Run the benchmark ``name`` with ``argv``."""
    import importlib

    if name not in benchmarks():
        raise SystemExit(f"unknown benchmark {name!r}; known: {', '.join(benchmarks())}")
    return importlib.import_module(f"benchmarks.{name}").main(list(argv))
