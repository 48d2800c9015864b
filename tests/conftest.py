"""Tiny random models of both MLP kinds on whichever TransformerLens model classes are installed.

TL 4.x: ``TransformerBridge`` (``boot_native``, no KV cache, token-level; and ``boot_transformers``
over tiny Hugging Face GPT-2 / Llama models with a word-level tokenizer, HF KV cache).
TL 2.x/3.x: ``HookedTransformer`` (TL KV cache), with and without a tokenizer.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import _scaffold  # tests/ is on sys.path (pytest inserts the rootdir of conftest.py)

_scaffold.register_cli()  # the CLI's hidden tiny model and synthetic task, for every in-process CLI test

from helpers import ALL_KINDS, TEXT_KINDS, TOKEN_KINDS, make_model  # noqa: E402 (after the offline env)


@pytest.fixture(
    params=[(k, g) for k in ALL_KINDS for g in (False, True)], ids=lambda p: f"{p[0]}-{'gated' if p[1] else 'gelu'}"
)
def any_model(request):
    kind, gated = request.param
    return kind, make_model(kind, gated)


@pytest.fixture(
    params=[(k, g) for k in TOKEN_KINDS for g in (False, True)], ids=lambda p: f"{p[0]}-{'gated' if p[1] else 'gelu'}"
)
def token_model(request):
    return make_model(*request.param)


@pytest.fixture(
    params=[(k, g) for k in TEXT_KINDS for g in (False, True)], ids=lambda p: f"{p[0]}-{'gated' if p[1] else 'gelu'}"
)
def text_model(request):
    return make_model(*request.param)
