"""The package's layers, as a test with no whitelist.

The layers, from the bottom: the foundation (``errors``, ``provenance``, ``validate``, ``html_view``), ``data``, ``prompts``,
``model``, ``attribution``, ``scoring``, ``config``, ``result``, ``pipeline``, ``evaluation``, ``studies``,
``explain``, ``report``, ``cli``, and the package face (``__init__``, ``__main__``). Every import, at module level or
inside a function or a ``TYPE_CHECKING`` block, goes to the same layer or one below. On top of the order:

* scoring never imports model or attribution code;
* model code never imports the data layer (tasks);
* a result never imports attribution code;
* evaluation shares preparation (``pipeline.prepare``) but never imports identify's module;
* nothing imports the package face (``tl_neuronllm`` itself);
* no import circles between modules, lazy imports included;
* no private name (``_x``) is imported from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tl_neuronllm"
PKG = "tl_neuronllm"

LAYERS: list[tuple[str, ...]] = [
    ("errors", "provenance", "validate", "html_view"),
    ("data",),
    ("prompts",),
    ("model",),
    ("attribution",),
    ("scoring",),
    ("config",),
    ("result",),
    ("pipeline",),
    ("evaluation",),
    ("studies",),
    ("explain",),
    ("report",),
    ("cli",),
    ("__init__", "__main__"),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

#: (importing layer, imported module prefix): imports the order allows but the rules forbid.
FORBIDDEN = [
    ("scoring", "tl_neuronllm.model"),
    ("scoring", "tl_neuronllm.attribution"),
    ("model", "tl_neuronllm.data"),
    ("result", "tl_neuronllm.attribution"),
    ("evaluation", "tl_neuronllm.pipeline.identify"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((PKG, *parts))] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _edges() -> list[tuple[str, str, str, int]]:
    """(importing module, imported module, imported name or '', line) for every package import."""
    edges = []
    for mod, path in MODULES.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == PKG:
                        edges.append((mod, a.name, "", node.lineno))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != PKG:
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in MODULES:  # `from pkg import submodule`
                        edges.append((mod, sub, "", node.lineno))
                    else:
                        edges.append((mod, target, a.name, node.lineno))
    return edges


EDGES = _edges()


def test_every_module_has_a_layer():
    assert sorted({_layer(m) for m in MODULES} - set(LAYER)) == []


def test_imports_go_down_the_layers():
    bad = [
        f"{m}:{ln} imports {t} ({_layer(m)} -> {_layer(t)})"
        for m, t, _, ln in EDGES
        if LAYER[_layer(t)] > LAYER[_layer(m)]
    ]
    assert bad == []


def test_the_extra_rules():
    bad = [
        f"{m}:{ln} imports {t}"
        for m, t, _, ln in EDGES
        for layer, prefix in FORBIDDEN
        if _layer(m) == layer and (t == prefix or t.startswith(prefix + "."))
    ]
    bad += [f"{m}:{ln} imports the package face" for m, t, _, ln in EDGES if t == PKG and m != PKG]
    assert bad == []


def test_no_import_circles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, t, _, _ in EDGES:
        if t in MODULES and t != m:
            graph[m].add(t)
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert circles == []


def test_no_private_name_crosses_modules():
    bad = [
        f"{m}:{ln} imports {t}.{name}"
        for m, t, name, ln in EDGES
        if name.startswith("_") and not name.startswith("__") and t != m
    ]
    assert bad == []


def test_the_rules_catch_a_violation(tmp_path):
    """The checker itself: an upward import, a circle and a private import are each found."""
    global MODULES, EDGES
    saved = MODULES, EDGES
    try:
        root = tmp_path / PKG
        (root / "data").mkdir(parents=True)
        (root / "model").mkdir()
        (root / "__init__.py").write_text("")
        (root / "data" / "__init__.py").write_text("")
        (root / "model" / "__init__.py").write_text("")
        (root / "data" / "a.py").write_text("from tl_neuronllm.model.b import _x\n")
        (root / "model" / "b.py").write_text("def f():\n    from tl_neuronllm.data.a import y\n")
        MODULES = {
            f"{PKG}.data.a": root / "data" / "a.py",
            f"{PKG}.model.b": root / "model" / "b.py",
        }
        EDGES = _edges()
        for check in (test_imports_go_down_the_layers, test_no_import_circles, test_no_private_name_crosses_modules):
            try:
                check()
            except AssertionError:
                continue
            raise AssertionError(f"{check.__name__} missed the violation")
    finally:
        MODULES, EDGES = saved


MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def test_module_and_function_sizes():
    """No module under tl_neuronllm/ is over 450 lines and no function (docstring included) over 80."""
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(ROOT.parent)
        n_lines = len(text.splitlines())
        if n_lines > MAX_MODULE_LINES:
            offenders.append(f"{rel}: {n_lines} lines (module)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    offenders.append(f"{rel}:{node.lineno} {node.name}: {size} lines (function)")
    assert not offenders, "over the size limits:\n" + "\n".join(offenders)
