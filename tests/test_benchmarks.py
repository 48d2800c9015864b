"""benchmarks/: every benchmark is a module on the harness (imports, ``main``, ``--help``), without
``sys.path`` inserts or private imports; the harness writes and reads its schema."""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
from pathlib import Path

import pytest

from benchmarks import harness

BENCH = Path(harness.__file__).resolve().parent
#: modules of benchmarks/ that are not benchmarks themselves (no ``main``)
LIBRARIES = {"__init__", "__main__", "harness", "controllability_instances"}
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in LIBRARIES)


def test_every_script_is_a_listed_benchmark():
    assert len(MODULES) >= 15 and "controllability" in MODULES and "speed" in MODULES
    assert harness.benchmarks() == MODULES  # what `python -m benchmarks` lists


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_imports_and_help_exits_0(name):
    mod = importlib.import_module(f"benchmarks.{name}")
    assert callable(mod.main)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    text = buf.getvalue()
    assert "--run" in text and "--out" in text and "--threads" in text  # the harness's common options


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every import in ``path``, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out += [(node.module or "", a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names]
    return out


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.stem)
def test_no_sys_path_inserts_and_no_private_imports(path):
    text = path.read_text()
    assert "sys.path.insert" not in text and "sys.path[:0]" not in text
    if path.stem != "harness":  # the harness's test_scaffolding() is the one place that touches sys.path
        assert "sys.path" not in text.replace("``sys.path``", "")
    for module, name in _imports(path):
        parts = module.split(".") + ([name] if name else [])
        private = [p for p in parts if p.startswith("_") and not p.startswith("__")]
        assert not private, f"{path.name} imports a private name: {module} {name}"
        assert "tests" not in parts and module not in ("helpers", "_scaffold"), f"{path.name} imports {module}"


def test_write_result_writes_the_schema_and_read_json_reads_both_layouts(tmp_path):
    args = harness.parser("x", run="r1").parse_args(["--n-identify", "3", "--out", str(tmp_path)])
    path = harness.write_result("demo", args.run, {"a": [1, 2]}, args=args, markdown="# hi\n", out=args.out)
    assert path == tmp_path / "demo" / "r1.json"
    doc = json.loads(path.read_text())
    assert list(doc) == ["schema", "benchmark", "run", "args", "environment", "results"]
    assert (doc["schema"], doc["benchmark"], doc["run"], doc["results"]) == (1, "demo", "r1", {"a": [1, 2]})
    assert doc["args"]["n_identify"] == 3 and doc["args"]["task"] == "commonsenseqa"
    env = doc["environment"]
    for key in ("versions", "torch_threads", "load_average", "cpu_count", "machine", "cpu", "git", "date"):
        assert key in env
    assert env["versions"]["tl_neuronllm"] == importlib.import_module("tl_neuronllm").__version__
    md = path.with_suffix(".md").read_text()
    assert md.startswith("<!-- demo/r1: ") and md.endswith("# hi\n")
    assert harness.read_result("demo", "r1", out=tmp_path) == doc
    assert harness.read_json(path) == {"a": [1, 2]}
    old = tmp_path / "old.json"  # a result written before the harness: read as it is
    old.write_text(json.dumps({"runs": [1], "date": "2026-11-30"}))
    assert harness.read_json(old) == {"runs": [1], "date": "2026-11-30"}


def test_results_folder_layout():
    """Every result file lies in results/<benchmark>/ (no loose files but the index)."""
    results = BENCH / "results"
    loose = [p.name for p in results.iterdir() if p.is_file() and p.name != "README.md"]
    assert loose == []
    folders = {p.name for p in results.iterdir() if p.is_dir()}
    assert folders - set(MODULES) == {"cli"}  # hand-recorded CLI runs; every other folder is a benchmark's
    index = (results / "README.md").read_text()
    assert all(f"`{f}/`" in index for f in folders)


def test_command_runs_a_benchmark_by_module():
    argv, env = harness.command("memory", "--child", "{}")
    assert argv[1:5] == ["-m", "benchmarks", "memory", "--child"]
    assert env["PYTHONPATH"].split(":")[0] == str(harness.ROOT)


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.stem)
def test_every_package_import_resolves(path):
    """The lazy imports inside ``main`` too (``--help`` does not reach them): each named module has the name."""
    for module, name in _imports(path):
        if module.split(".")[0] in ("tl_neuronllm", "benchmarks") and name:
            mod = importlib.import_module(module)
            if not hasattr(mod, name):  # a submodule: `from tl_neuronllm.data import smollm2`
                importlib.import_module(f"{module}.{name}")
