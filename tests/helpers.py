"""Helpers shared by the tests (imported as ``from helpers import ...``; tests/ is on the path):

* tiny random models of both MLP kinds on whichever TransformerLens model classes are installed — TL 4.x:
  ``TransformerBridge`` (``boot_native``, no KV cache, token-level; and ``boot_transformers`` over tiny Hugging
  Face GPT-2 / Llama models with a word-level tokenizer, HF KV cache); TL 2.x/3.x: ``HookedTransformer``
  (TL KV cache), with and without a tokenizer; and small token / text tasks for them;
* reference oracles (naive whole-tensor versions of what the package streams) and small runners.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import _scaffold
import torch
from jaxtyping import Float
from torch import Tensor

from tl_neuronllm.attribution.methods import AttributionOptions, attribute_items, correct_mask
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt
from tl_neuronllm.pipeline.resolve import resolve
from tl_neuronllm.scoring.baseline_reducers import (
    COARSE_THRESHOLD,
    COMMON_SHARE,
    REFINE_SHARE,
    cluster_and_norm,
    coarse_sets,
    qr_scores,
    refined_sets,
)


def qr_neuron_scores(
    igs: Sequence[Float[Tensor, "proxies n_layers d_mlp"]],
    *,
    threshold: float = COARSE_THRESHOLD,
    common_share: float = COMMON_SHARE,
) -> tuple[Float[Tensor, "n_layers d_mlp"], dict[str, Any]]:
    """QR-Neuron task scores from per-item proxy attributions (see the module docstring).

    Raises:
        ValueError: for no items.
    """
    if not igs:
        raise ValueError("no items to score")
    pairs = [cluster_and_norm(ig, threshold) for ig in igs]
    member = torch.stack([m for m, _ in pairs])  # [N, L, d]
    n_w = member.sum(dim=0)
    return qr_scores((member.double() * torch.stack([n for _, n in pairs])).sum(dim=0), n_w, len(igs), common_share)


def knowledge_neuron_scores(
    igs: Sequence[Float[Tensor, "proxies n_layers d_mlp"]],
    *,
    threshold: float = COARSE_THRESHOLD,
    refine_share: float = REFINE_SHARE,
) -> tuple[Float[Tensor, "n_layers d_mlp"], dict[str, Any]]:
    """Knowledge-neuron task scores from per-item proxy attributions (see the module docstring).

    Raises:
        ValueError: for no items.
    """
    if not igs:
        raise ValueError("no items to score")
    total = None
    sizes = []
    for ig in igs:
        refined = refined_sets(ig, threshold, refine_share)
        sizes.append(int(refined.sum()))
        contrib = refined.double() * ig.double().mean(dim=0).clamp(min=0)
        total = contrib if total is None else total + contrib
    assert total is not None
    score = (total / len(igs)).float()
    info = {"mean_refined_size": sum(sizes) / len(sizes), "n_refined_any": int((score > 0).sum())}
    return score, info


@dataclass
class BaselineOutput:
    """What :func:`run_baseline` returns.

    Attributes:
        scores: Signed (or non-negative, for positive-only methods) scores ``[n_layers, d_mlp]``.
        act_sum: Sum of site activations over the proxies (float64), for mean interventions.
        probs: Per item, the clean option probabilities of each proxy.
        positive_only: True when the method has no notion of bad neurons.
        info: Extra numbers to record in the result's stats.
    """

    scores: Float[Tensor, "n_layers d_mlp"]
    act_sum: Float[Tensor, "n_layers d_mlp"]
    probs: list[list[Tensor]]
    positive_only: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def run_baseline(
    name: str, adapter: ModelAdapter, queries: Sequence[Sequence[ProxyPrompt]], cfg: Any, *, progress: bool = True
) -> BaselineOutput:
    """Run the baseline ``name`` on tokenized proxies with the options in ``cfg`` (an IdentifyConfig),
    in batches of ``cfg.batch_size`` items (:func:`tl_neuronllm.identify` runs the same path).

    Raises:
        ValueError: for an unknown baseline.
    """
    from tl_neuronllm.attribution.baselines import BASELINES

    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    t0 = time.perf_counter()
    method, reducer_cls = resolve(name)
    reducer = reducer_cls.create(adapter.n_layers, adapter.d_mlp, cfg.scoring)
    options = AttributionOptions.from_config(cfg)
    act_sum = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float64)
    probs: list[list[Tensor]] = []
    for b in range(0, len(queries), cfg.batch_size):
        batch = queries[b : b + cfg.batch_size]
        attr, mask, pr, a = attribute_items(method, adapter, batch, options)
        reducer.update(attr, mask, correct_mask(batch, pr, attr.shape[1]))
        act_sum += a
        probs += pr
    out = reducer.result()
    return BaselineOutput(
        out.scores, act_sum, probs, out.positive_only, {**out.info, "baseline_seconds": time.perf_counter() - t0}
    )


__all__ = ["BaselineOutput", "coarse_sets", "knowledge_neuron_scores", "qr_neuron_scores", "run_baseline"]


# ------------------------------------------------------------------------------------------------
# tiny models and tasks
# ------------------------------------------------------------------------------------------------
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
    """A benchmark module (``benchmarks/<name>.py``), e.g. ``load_benchmark("family_verdict")``; the repository
    root is on ``sys.path`` (pyproject's pytest ``pythonpath``)."""
    return importlib.import_module(f"benchmarks.{name}")


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


def word_tokenizer(words: Sequence[str] | None = None):
    """A word-level tokenizer over ``words`` (default :data:`WORDS`, built once)."""
    return _default_tokenizer() if words is None else _scaffold.word_tokenizer(words)


@functools.cache
def _default_tokenizer():
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


def identify_config_of(result):
    """The IdentifyConfig a result was identified with (``result.identify_config()``)."""
    return result.identify_config()
