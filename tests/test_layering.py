"""The stages of the package import downward only: tasks -> proxies -> model backends -> attribution
methods -> reducers -> result -> interventions -> evaluation -> explanation/report -> CLI.

Each module has a stage; an import of a module of a later stage is an error, except the few convenience
methods listed in ``UPWARD`` (a result's ``explain``/``stability``, the evaluation's tables), which import
lazily inside the function that needs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tl_neuronllm"

STAGES: list[list[str]] = [
    # 0: foundations that know nothing of the method
    ["model", "validate", "memory", "stats", "wheels", "smollm2", "tasks", "real_tasks"],
    ["proxies"],  # 1: prompts and augmentation
    ["backends", "fastpaths", "model_state", "adapter", "answers"],  # 2: model backends
    ["attribution", "methods"],  # 3: attribution methods
    ["scoring", "reducers", "baselines", "config", "prepare"],  # 4: reducers and configs
    ["result_files", "checkpoint", "interventions", "result", "rescoring", "pipeline", "distributed"],  # 5
    ["eval_conditions", "eval_engines", "eval_result", "evaluate", "stability", "selection", "compare"],  # 6
    ["direct_effect", "neuron_activity", "explanation", "explain", "figures", "report", "html_assets", "html_report"],
    ["testbed", "cli_args", "cli", "__main__", "hub", "datasets", "__init__"],  # 8: tools, CLI, shims
]
STAGE = {m: i for i, mods in enumerate(STAGES) for m in mods}

#: Lazy imports of a later stage, inside one function each, with the reason.
UPWARD = {
    ("result", "explain"): "NeuronResult.explain(...) convenience method",
    ("result", "stability"): "NeuronResult.stability(...) convenience method",
    ("selection", "explain"): "select_cv finds the identification items as explain does (_select_items)",
    ("eval_result", "report"): "EvalResult.table() / to_markdown() delegate to the report's tables",
}


def _top(name: str) -> str:
    return name.split(".")[0]


def _imports() -> list[tuple[str, str, bool]]:
    """(importing module's top-level name, imported top-level name, inside a function?) for the package."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        here = rel[0] if rel[0] != "__init__" else "__init__"
        depth = len(rel) - 1  # how deep inside a subpackage
        tree = ast.parse(path.read_text())
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            if node.level <= depth:  # inside its own subpackage
                continue
            if node.module:
                target = _top(node.module)
            else:
                target = node.names[0].name
            if target == "__version__" or target == "":
                continue
            out.append((here, target, id(node) in nested))
    return out


def test_every_module_has_a_stage():
    names = {
        p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()
    }
    names.discard("__pycache__")
    assert sorted(names - set(STAGE)) == []


def test_imports_go_down_the_stages():
    edges: dict[tuple[str, str], list[bool]] = {}
    for here, target, inside in _imports():
        edges.setdefault((here, target), []).append(inside)
    problems = []
    for (here, target), inside in sorted(edges.items()):
        if target not in STAGE:
            problems.append(f"{here} imports {target}, which has no stage")
        elif STAGE[target] > STAGE[here] and not ((here, target) in UPWARD and all(inside)):
            where = "lazily" if all(inside) else "at module level"
            problems.append(f"{here} (stage {STAGE[here]}) imports {target} (stage {STAGE[target]}) {where}")
    assert problems == []


def test_the_check_sees_an_upward_import(monkeypatch):
    """The check itself: an import of a later stage at module level is reported."""
    monkeypatch.setitem(STAGE, "proxies", STAGE["cli"] + 1)  # as if proxies sat above everything
    with pytest.raises(AssertionError, match=r"tasks|stage"):
        test_imports_go_down_the_stages()
