"""Every decoder family a researcher brings: tiny random models, what they engage, and how fast.

The families (:data:`FAMILIES`) are tiny random Hugging Face models (2 layers, hidden 64, a 59-word
vocabulary: the word-level tokenizer of ``tests/helpers.py``, built offline) booted as ``TransformerBridge``
with ``boot_transformers(name, hf_model=..., tokenizer=...)``; each carries the features that matter for the
shortcuts (GQA, parallel attention and MLP, partial rotary, ALiBi, sliding windows, soft-capping, logit
scaling, q/k norms, post-norm, offset norms). ``tests/test_families.py`` checks each one (fast IG equals the
naive per-step IG, the shortcuts engaged are exactly :attr:`Family.off`'s complement, ``explain``'s direct
effect equals a hand computation, interventions change only what they should) and that the support table in
``docs/models.md`` is the one :func:`support_table` makes from the same specs.

    python -m benchmarks families                      # time every family, write results/families/<run>.*
    python -m benchmarks families --table-only         # rewrite the support table in docs/models.md
    python -m benchmarks families --smollm2 letter     # SmolLM2-135M on a real task (minutes on 2 cores)
    python -m benchmarks families --families BLOOM --off packed_rows,skip_layers   # the cost without a fix

Per family and prompt (1-shot colour questions; SmolLM2: MMLU), medians of repeats:

* **fast IG / forward**: ``ig_fast`` (all layers, identify's default steps and rule) over one plain
  forward of the prompt (letter: the prompt; cloze: prompt + each option, as a padded batch);
* **fast / naive**: ``ig_fast`` over ``ig_naive`` (one forward and backward per layer and step);
* **fast / floor**: ``ig_fast`` over the token-count floor: the token-layers the exact method cannot avoid
  (the prefix once, plus each scaled row group's packed tokens from its layer up, forward and backward),
  each timed at the per-token-layer cost of the plain forward.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks import harness

ROOT = harness.ROOT

ENGAGED = ("prefix_cache", "packed_rows", "skip_layers", "letter_columns", "shared_prefix", "exact_ig")
_BASE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    initializer_range=0.2,
)


@dataclass(frozen=True)
class Family:
    """One decoder family's tiny model.

    Attributes:
        label: The family's name in the support table.
        config: The transformers config class name.
        model: The transformers model class name.
        kwargs: Config arguments (the vocabulary size, ids and ``architectures`` are added).
        features: What this configuration exercises.
        off: Shortcuts expected off, each with the reason the table states.
        slow: Left out of the default test run (its features are covered by another family).
    """

    label: str
    config: str
    model: str
    kwargs: dict[str, Any]
    features: str
    off: dict[str, str] = field(default_factory=dict)
    slow: bool = True


FAMILIES: dict[str, Family] = {
    f.label: f
    for f in [
        Family(
            "GPT-2",
            "GPT2Config",
            "GPT2LMHeadModel",
            dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2),
            "LayerNorm, learned positions",
            slow=False,
        ),
        Family(
            "GPT-NeoX",
            "GPTNeoXConfig",
            "GPTNeoXForCausalLM",
            dict(_BASE, intermediate_size=256, num_key_value_heads=4, rotary_pct=0.25, use_parallel_residual=True),
            "parallel attention and MLP, partial rotary (25%)",
            slow=False,
        ),
        Family("Llama", "LlamaConfig", "LlamaForCausalLM", _BASE, "GQA, gated MLP, RMSNorm", slow=False),
        Family(
            "Mistral",
            "MistralConfig",
            "MistralForCausalLM",
            dict(_BASE, sliding_window=4096),
            "GQA, sliding window 4096",
        ),
        Family(
            "Mistral (window 8)",
            "MistralConfig",
            "MistralForCausalLM",
            dict(_BASE, sliding_window=8),
            "sliding window narrower than the prompt (the window goes into the packed mask)",
            slow=False,
        ),
        Family("Qwen2", "Qwen2Config", "Qwen2ForCausalLM", _BASE, "GQA, q/k/v biases"),
        Family("Qwen3", "Qwen3Config", "Qwen3ForCausalLM", dict(_BASE, head_dim=16), "q/k norms", slow=False),
        Family(
            "Gemma",
            "GemmaConfig",
            "GemmaForCausalLM",
            dict(_BASE, head_dim=16),
            "offset RMSNorm (1 + w), scaled embeddings",
        ),
        Family(
            "Gemma 2",
            "Gemma2Config",
            "Gemma2ForCausalLM",
            dict(_BASE, head_dim=16, final_logit_softcapping=3.0, attn_logit_softcapping=5.0),
            "final and attention soft-capping, alternating sliding window 4096, post-norms, offset norm",
            slow=False,
        ),
        Family(
            "Gemma 2 (window 8)",
            "Gemma2Config",
            "Gemma2ForCausalLM",
            dict(_BASE, head_dim=16, final_logit_softcapping=3.0, sliding_window=8),
            "alternating sliding window narrower than the prompt (a full and a windowed packed mask)",
            slow=False,
        ),
        Family(
            "Gemma 3",
            "Gemma3TextConfig",
            "Gemma3ForCausalLM",
            dict(_BASE, head_dim=16),
            "q/k norms, local/global layers, offset norm",
        ),
        Family(
            "Phi",
            "PhiConfig",
            "PhiForCausalLM",
            dict(_BASE, num_key_value_heads=4, partial_rotary_factor=0.5),
            "parallel attention and MLP, partial rotary (50%)",
        ),
        Family("Phi-3", "Phi3Config", "Phi3ForCausalLM", dict(_BASE, num_key_value_heads=4), "fused qkv and gate/up"),
        Family("OLMo", "OlmoConfig", "OlmoForCausalLM", _BASE, "LayerNorm without weights"),
        Family("OLMo 2", "Olmo2Config", "Olmo2ForCausalLM", _BASE, "post-norm, q/k norms", slow=False),
        Family(
            "OPT",
            "OPTConfig",
            "OPTForCausalLM",
            dict(
                hidden_size=64,
                ffn_dim=256,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=256,
                word_embed_proj_dim=64,
                init_std=0.2,
            ),
            "learned positions with offset, ReLU",
        ),
        Family(
            "GPT-J",
            "GPTJConfig",
            "GPTJForCausalLM",
            dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, rotary_dim=8, initializer_range=0.2),
            "parallel attention and MLP, partial rotary",
        ),
        Family(
            "BLOOM",
            "BloomConfig",
            "BloomForCausalLM",
            dict(hidden_size=64, n_layer=2, n_head=4, initializer_range=0.2),
            "ALiBi, embedding LayerNorm",
            slow=False,
        ),
        Family(
            "Falcon (ALiBi)",
            "FalconConfig",
            "FalconForCausalLM",
            dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, alibi=True, initializer_range=0.2),
            "ALiBi, multi-query, parallel attention and MLP",
            slow=False,
        ),
        Family(
            "Falcon",
            "FalconConfig",
            "FalconForCausalLM",
            dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, alibi=False, initializer_range=0.2),
            "rotary, multi-query, parallel attention and MLP",
        ),
        Family(
            "Falcon (new decoder architecture)",
            "FalconConfig",
            "FalconForCausalLM",
            dict(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                alibi=False,
                new_decoder_architecture=True,
                multi_query=True,
                num_kv_heads=1,
                initializer_range=0.2,
            ),
            "Falcon-40B layout with one key/value head (more do not boot in TransformerLens 4.3)",
        ),
        Family(
            "StableLM",
            "StableLmConfig",
            "StableLmForCausalLM",
            dict(_BASE, partial_rotary_factor=0.25, use_qkv_bias=True),
            "partial rotary (25%), LayerNorm",
        ),
        Family(
            "Starcoder2",
            "Starcoder2Config",
            "Starcoder2ForCausalLM",
            dict(_BASE, sliding_window=4096),
            "GQA, sliding window, plain MLP",
        ),
        Family(
            "Granite",
            "GraniteConfig",
            "GraniteForCausalLM",
            dict(
                _BASE, logits_scaling=4.0, embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3
            ),
            "logit scaling (÷ 4), embedding / residual / attention multipliers",
            slow=False,
        ),
        Family(
            "Cohere",
            "CohereConfig",
            "CohereForCausalLM",
            dict(_BASE, logit_scale=0.25),
            "logit scale (× 0.25), parallel attention and MLP, LayerNorm without bias",
            slow=False,
        ),
    ]
}

#: Mixture-of-experts families: refused before any model time (see tl_neuronllm.model.structure).
MOE: dict[str, tuple[str, str, dict[str, Any]]] = {
    "Mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(_BASE, num_local_experts=4, num_experts_per_tok=2)),
    "Mixtral (expert width = model width)": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(_BASE, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2),
    ),
    "Qwen2-MoE": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(_BASE, moe_intermediate_size=32, shared_expert_intermediate_size=64, num_experts=4, num_experts_per_tok=2),
    ),
    "OLMoE": ("OlmoeConfig", "OlmoeForCausalLM", dict(_BASE, num_experts=4, num_experts_per_tok=2)),
    "gpt-oss (expert width = model width)": (
        "GptOssConfig",
        "GptOssForCausalLM",
        dict(_BASE, intermediate_size=64, head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=8),
    ),
}


def hf_model(config: str, model: str, kwargs: dict[str, Any], vocab: int, seed: int = 0) -> Any:
    """A random transformers model (eval mode, eager attention) of ``config`` with ``kwargs``."""
    import transformers

    torch.manual_seed(seed)
    cfg = getattr(transformers, config)(vocab_size=vocab, pad_token_id=0, bos_token_id=2, eos_token_id=2, **kwargs)
    cfg.architectures = [model]
    cfg._attn_implementation = "eager"
    return getattr(transformers, model)(cfg).eval()


def boot(hf: Any, tokenizer: Any, name: str) -> Any:
    """``TransformerBridge.boot_transformers`` over ``hf`` (no hub access)."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(f"tiny/{name}", hf_model=hf, tokenizer=tokenizer).eval()


def build(label: str, tokenizer: Any, seed: int = 0) -> Any:
    """The tiny ``TransformerBridge`` of family ``label`` (:data:`FAMILIES` or :data:`MOE`)."""
    if label in MOE:
        config, model, kwargs = MOE[label]
    else:
        f = FAMILIES[label]
        config, model, kwargs = f.config, f.model, f.kwargs
    return boot(hf_model(config, model, kwargs, len(tokenizer), seed), tokenizer, re.sub(r"\W+", "-", label.lower()))


def expected_paths(f: Family) -> dict[str, bool | None]:
    """The ``adapter.fast_paths`` the family test expects after IG with a shared prefix."""
    out: dict[str, bool | None] = {k: k not in f.off for k in ENGAGED}
    out["packed_queries"] = None  # checked by the evaluation
    return out


def support_table() -> str:
    """The support table of docs/models.md, from :data:`FAMILIES` and :data:`MOE` (what the family tests assert)."""
    lines = [
        "| family | features exercised | exact IG | shortcuts engaged | off, and why |",
        "|---|---|---|---|---|",
    ]
    for f in FAMILIES.values():
        on = ", ".join(k for k in ENGAGED if k not in f.off)
        why = "; ".join(f"{k}: {v}" for k, v in f.off.items()) or "none"
        lines.append(f"| {f.label} | {f.features} | yes | {on} | {why} |")
    for label in MOE:
        lines.append(
            f"| {label} | mixture of experts | refused | none | MoE blocks found by their router and experts "
            "modules, refused before any model time: the Bridge exposes no expert activations |"
        )
    return "\n".join(lines)


TABLE_START, TABLE_END = "<!-- families table: start -->", "<!-- families table: end -->"


def write_table(path: Path = ROOT / "docs" / "models.md") -> None:
    """Rewrite the support table between the markers of ``path``."""
    text = path.read_text()
    a, b = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    path.write_text(text[:a] + "\n" + support_table() + "\n" + text[b:])


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def _median(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor_token_layers(adapter: Any, q: Any, steps: int) -> int:
    """Token-layers exact IG cannot avoid for ``q``: the prefix once, plus for every layer ``l`` and step the
    query's packed row group from layer ``l`` up, forward and backward."""
    from tl_neuronllm.model.shortcuts import PackedLayout

    suffix = q.suffixes()
    group = len(PackedLayout.of(suffix, len(suffix)).tokens)
    L = adapter.n_layers
    return (len(q.prompt) - 1) * L + 2 * steps * group * sum(L - layer for layer in range(L))


def time_queries(
    adapter: Any, queries: list[Any], steps: int, rule: str, naive: bool, repeat: int = 3
) -> dict[str, Any]:
    """Median timings and ratios over ``queries`` (see the module docstring)."""
    from tl_neuronllm.attribution.kernels import ig_fast, ig_naive
    from tl_neuronllm.model.answers import full_rows
    from tl_neuronllm.model.state import preserved_model_state

    per = []
    with preserved_model_state(adapter.model):
        ig_fast(adapter, queries[0], steps=2, rule=rule)  # warm-up and the one-time checks
        for q in queries:
            toks = adapter.pad_batch(full_rows(q)[0])[0]
            with torch.no_grad():
                t_fwd = _median(lambda: adapter.forward(toks), repeat + 2)
            t_fast = _median(lambda: ig_fast(adapter, q, steps=steps, rule=rule), repeat)
            per_tl = t_fwd / (toks.shape[0] * toks.shape[1] * adapter.n_layers)
            row = {
                "tokens": len(q.prompt),
                "forward_s": t_fwd,
                "fast_s": t_fast,
                "fast_over_forward": t_fast / t_fwd,
                "fast_over_floor": t_fast / (per_tl * floor_token_layers(adapter, q, steps)),
            }
            if naive:
                row["naive_s"] = _median(lambda: ig_naive(adapter, q, steps=steps, rule=rule), 1)
                row["fast_over_naive"] = t_fast / row["naive_s"]
            per.append(row)
    keys = [k for k in per[0] if k != "tokens"]
    return {"per_prompt": per, **{k: statistics.median(r[k] for r in per) for k in keys}}


def family_queries(model: Any, mode: str, n_items: int) -> tuple[Any, list[Any]]:
    """The adapter and 1-shot queries of the tests' colour task on ``model``."""
    from tl_neuronllm.config.identify import IdentifyConfig
    from tl_neuronllm.pipeline.prepare import prepare

    cfg = IdentifyConfig(n_shots=1, mode=mode, n_proxies=1)
    prep = prepare(model, harness.test_scaffolding().text_task(n_items + 2), cfg)
    return prep.adapter, [q for qs in prep.queries[:n_items] for q in qs]


def run_families(
    labels: list[str], mode: str, n_items: int, steps: int, rule: str, off: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Time every family of ``labels`` (``off``: shortcuts switched off first, to measure what they save)."""
    tokenizer = harness.test_scaffolding().word_tokenizer()
    rows = []
    for label in labels:
        model = build(label, tokenizer)
        adapter, queries = family_queries(model, mode, n_items)
        for name in off:  # what the run costs without these shortcuts (as before a fix)
            adapter.checks.unsupported(name, "switched off by benchmarks/families.py --off")
        adapter.share_prefix([q.prompt for q in queries])
        t = time_queries(adapter, queries, steps, rule, naive=True)
        rows.append(_row(label, adapter, t))
        print(
            f"{label}: fast/forward {t['fast_over_forward']:.1f}, fast/naive {t['fast_over_naive']:.3f}, "
            f"fast/floor {t['fast_over_floor']:.2f}",
            flush=True,
        )
    return rows


def _row(label: str, adapter: Any, t: dict[str, Any]) -> dict[str, Any]:
    paths = adapter.fast_paths
    return {
        "family": label,
        "engaged": [k for k in ENGAGED if paths.get(k)],
        "fast_paths": paths,
        "not_supported": adapter.fast.not_supported,
        "fallbacks": adapter.fast.fallbacks,
        **t,
    }


def run_smollm2(
    mode: str, n_items: int, steps: int, rule: str, task: str, off: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Time SmolLM2-135M-Instruct on ``n_items`` 1-shot prompts of the registered ``task`` (``off``: shortcuts
    switched off first)."""
    from tl_neuronllm.config.identify import IdentifyConfig
    from tl_neuronllm.pipeline.prepare import prepare

    cloze = dict(show_options=False, n_proxies=1) if mode == "cloze" else dict(n_proxies=1)
    cfg = IdentifyConfig(n_shots=1, mode=mode, **cloze)
    prep = prepare(harness.load_model("smollm2"), harness.load_task(task, limit=60), cfg)
    queries = [q for qs in prep.queries[:n_items] for q in qs]
    for name in off:
        prep.adapter.checks.unsupported(name, "switched off by benchmarks/families.py --off")
    prep.adapter.share_prefix([q.prompt for qs in prep.queries for q in qs])
    t = time_queries(prep.adapter, queries, steps, rule, naive=False, repeat=2)
    return [_row(f"SmolLM2-135M ({mode}, {task})", prep.adapter, t)]


def markdown(rows: list[dict[str, Any]], head: str) -> str:
    """The speed table of ``rows``."""
    lines = [
        head,
        "",
        "| family | shortcuts engaged | fast IG / forward | fast / naive | fast / floor |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        naive = f"{r['fast_over_naive']:.3f}" if "fast_over_naive" in r else "n/a"
        lines.append(
            f"| {r['family']} | {', '.join(r['engaged']) or 'none'} | {r['fast_over_forward']:.1f} | {naive} | "
            f"{r['fast_over_floor']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None)
    ap.add_argument("--families", default="all", help="comma-separated labels, or 'all'")
    ap.add_argument("--mode", choices=("letter", "cloze"), default="letter")
    ap.add_argument("--items", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rule", choices=("gauss", "riemann"), default="gauss")
    ap.add_argument("--smollm2", choices=("letter", "cloze"), help="time SmolLM2-135M instead of the tiny families")
    ap.add_argument("--task", default="mmlu", help="registered task for --smollm2 (default %(default)s)")
    ap.add_argument("--off", default="", help="shortcuts to switch off, comma-separated (e.g. packed_rows,skip_layers)")
    ap.add_argument("--table-only", action="store_true", help="only rewrite the support table in docs/models.md")
    args = ap.parse_args(argv)
    if args.table_only:
        write_table()
        return
    harness.setup(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    mode = args.smollm2 or args.mode
    off = tuple(x for x in args.off.split(",") if x)
    if args.smollm2:
        rows = run_smollm2(args.smollm2, args.items, args.steps, args.rule, args.task, off)
    else:
        labels = list(FAMILIES) if args.families == "all" else args.families.split(",")
        rows = run_families(labels, mode, args.items, args.steps, args.rule, off)
    run = args.run or (f"smollm2_{mode}_{args.task}" if args.smollm2 else f"tiny_{mode}")
    head = f"# Families benchmark: {run} ({mode} mode, m = {args.steps} {args.rule} steps)"
    md = markdown(rows, head)
    harness.write_result("families", run, rows, args=args, markdown=md, out=args.out)
    print(md)


if __name__ == "__main__":
    main()
