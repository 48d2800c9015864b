"""The public API: what ``tl_neuronllm`` exports, and the internals that moved out of it."""

from __future__ import annotations

import pytest

import tl_neuronllm


def test_every_exported_name_exists():
    missing = [name for name in tl_neuronllm.__all__ if not hasattr(tl_neuronllm, name)]
    assert missing == []


@pytest.mark.parametrize("name", ["ACEState", "ModelAdapter", "preserved_model_state"])
def test_removed_internals_are_gone_from_the_face(name):
    """0.6.0 removed the deprecated aliases of internals (they live in their layers' modules)."""
    assert name not in tl_neuronllm.__all__
    with pytest.raises(AttributeError):
        getattr(tl_neuronllm, name)


def test_every_package_error_derives_from_the_base():
    import tl_neuronllm.errors as errors

    classes = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    excs = [c for c in classes if issubclass(c, BaseException) and not issubclass(c, Warning)]
    assert len(excs) >= 7
    assert all(issubclass(c, tl_neuronllm.NeuronLLMError) for c in excs)
    assert all(getattr(tl_neuronllm, c.__name__) is c for c in classes)


def test_no_module_raises_its_own_exception_class():
    """Every exception class of the package is defined in errors.py (one place, one base)."""
    import ast
    from pathlib import Path

    root = Path(tl_neuronllm.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith("Error") or b.id == "Exception") for b in node.bases
            ):
                bad.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert bad == []


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        _ = tl_neuronllm.no_such_thing


def test_version_is_the_packages():
    from importlib.metadata import version

    assert tl_neuronllm.__version__ == version("tl_neuronllm")
