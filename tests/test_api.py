"""The public API: what ``tl_neuronllm`` exports, and the internals that moved out of it."""

from __future__ import annotations

import importlib

import pytest

import tl_neuronllm


def test_every_exported_name_exists():
    missing = [name for name in tl_neuronllm.__all__ if not hasattr(tl_neuronllm, name)]
    assert missing == []


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("ACEState", "tl_neuronllm.scoring"),
        ("ModelAdapter", "tl_neuronllm.adapter"),
        ("preserved_model_state", "tl_neuronllm.adapter"),
    ],
)
def test_internals_still_import_with_a_deprecation_warning(name, module):
    assert name not in tl_neuronllm.__all__
    with pytest.warns(DeprecationWarning, match=f"tl_neuronllm.{name} is an internal; import it from {module}"):
        obj = getattr(tl_neuronllm, name)
    assert obj is getattr(importlib.import_module(module), name)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        _ = tl_neuronllm.no_such_thing


def test_version_is_the_packages():
    from importlib.metadata import version

    assert tl_neuronllm.__version__ == version("tl_neuronllm")
