"""Tiny random models of both MLP kinds on whichever TransformerLens model classes are installed.

TL 4.x: ``TransformerBridge`` (``boot_native``, no KV cache, token-level; and ``boot_transformers``
over tiny Hugging Face GPT-2 / Llama models with a word-level tokenizer, HF KV cache).
TL 2.x/3.x: ``HookedTransformer`` (TL KV cache), with and without a tokenizer.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import _scaffold  # tests/ is on sys.path (pytest inserts the rootdir of conftest.py)

_scaffold.register_cli()  # the CLI's hidden tiny model and synthetic task, for every in-process CLI test

WORDS = (
    ["[PAD]", "[UNK]", "[BOS]"]
    + list("ABCDEFGH")
    + [
        "Question:",
        "Answer:",
        "The",
        "following",
        "are",
        "multiple",
        "choice",
        "questions.",
        "Answer",
        "with",
        "the",
        "letter",
        "of",
        "correct",
        "option.",
        "cat",
        "dog",
        "bird",
        "fish",
        "red",
        "blue",
        "green",
        "yellow",
        "is",
        "what",
        "colour",
        "animal",
        "sky",
        "grass",
        "sun",
        "sea",
        "A.",
        "B.",
        "C.",
        "D.",
        "E.",
        "F.",
        "?",
    ]
)


def load_benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ (not a package) imported as a module, e.g. ``load_benchmark("family_verdict")``."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def has_bridge() -> bool:
    try:
        from transformer_lens.model_bridge import TransformerBridge  # noqa: F401

        return True
    except ImportError:
        return False


def has_hooked() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401

        return True
    except ImportError:
        return False


@functools.cache
def word_tokenizer():
    return _scaffold.word_tokenizer(WORDS)


NATIVE = dict(d_model=32, d_head=8, n_heads=4, n_layers=3, n_ctx=256, d_vocab=100, d_mlp=64, act_fn="gelu")
GATED = dict(act_fn="silu", gated_mlp=True, normalization_type="RMS")


def make_model(kind: str, gated: bool, seed: int = 0):
    """``kind``: "native" (Bridge.boot_native, token-level), "hf" (Bridge over tiny HF model, text),
    "hooked" (HookedTransformer, token-level), "hooked-text" (HookedTransformer with tokenizer)."""
    torch.manual_seed(seed)
    if kind == "native":
        from transformer_lens.model_bridge import TransformerBridge

        cfg = dict(NATIVE, **(GATED if gated else {}))
        return TransformerBridge.boot_native(cfg).eval()
    if kind == "hf":
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

        if gated:
            hf = LlamaForCausalLM(
                LlamaConfig(
                    vocab_size=len(WORDS),
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=3,
                    num_attention_heads=4,
                    num_key_value_heads=2,
                    max_position_embeddings=256,
                    initializer_range=0.2,
                )
            )
            name = "meta-llama/Llama-2-7b-hf"
        else:
            hf = GPT2LMHeadModel(
                GPT2Config(
                    vocab_size=len(WORDS),
                    n_embd=32,
                    n_layer=3,
                    n_head=4,
                    n_positions=256,
                    activation_function="gelu_new",
                    initializer_range=0.2,
                )
            )
            name = "gpt2"
        hf.eval()
        return TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=word_tokenizer()).eval()
    if kind in ("hooked", "hooked-text"):
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        cfg = dict(NATIVE)
        if kind == "hooked-text":
            cfg["d_vocab"] = len(WORDS)
        if gated:
            cfg.update(GATED, n_key_value_heads=2, positional_embedding_type="rotary")
        tok = word_tokenizer() if kind == "hooked-text" else None
        return HookedTransformer(HookedTransformerConfig(**cfg), tokenizer=tok).eval()
    raise ValueError(kind)


TOKEN_KINDS = [k for k, ok in (("native", has_bridge()), ("hooked", has_hooked())) if ok]
TEXT_KINDS = [k for k, ok in (("hf", has_bridge()), ("hooked-text", has_hooked())) if ok]
ALL_KINDS = TOKEN_KINDS + TEXT_KINDS


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


def token_task(n: int = 12, n_options: int = 4, seed: int = 0):
    """A token-level task and format for the 100-token native vocabulary."""
    import random

    from tl_neuronllm import Task, TokenFormat

    rng = random.Random(seed)
    recs = []
    for _i in range(n):
        opts = rng.sample(range(40, 90), n_options)
        recs.append(
            {
                "question": [rng.randrange(10, 40), rng.randrange(10, 40)],
                "options": [[o] for o in opts],
                "answer": rng.randrange(n_options),
            }
        )
    fmt = TokenFormat(
        letters=[1, 2, 3, 4, 5, 6][: max(n_options, 4)],
        bos=0,
        question_prefix=[7],
        option_sep=[8],
        answer_prefix=[9],
        demo_sep=[8],
    )
    return Task.from_records(recs, name="tokens"), fmt


def text_task(n: int = 10, seed: int = 0):
    """A text task in the word tokenizer's vocabulary."""
    import random

    from tl_neuronllm import Task

    rng = random.Random(seed)
    things = ["cat", "dog", "bird", "fish", "sky", "grass", "sun", "sea"]
    colours = ["red", "blue", "green", "yellow"]
    recs = []
    for i in range(n):
        opts = rng.sample(colours, 4)
        recs.append(
            {
                "id": f"q{i}",
                "question": f"what is the colour of the {things[i % len(things)]} ?",
                "options": opts,
                "answer": rng.randrange(4),
            }
        )
    return Task.from_records(recs, name="colours")
