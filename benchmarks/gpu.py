"""GPU throughput of exact IG and grad x act on random models of real shapes (bf16 weights).

Speed does not depend on weight values, so the models are random: a Hugging Face Llama with
Llama-2-7B's shape (d_model 4096, d_mlp 11008, 32 layers, 32 heads, vocab 32000; built on the
'meta' device, materialised on the GPU with ``to_empty`` and randomly initialised, so no 7B model is
ever built on the CPU) and a GPT-2-small shape (768, 3072, 12 layers, vocab 50257), both as
``TransformerBridge.boot_transformers`` over the HF model (prefix KV cache). Prompts are token-level
1-shot 4-option questions of about ``--prompt-tokens`` tokens. The pipeline's own scoring loop
(``pipeline.run_scoring``: attribution, per-item candidate sets, streaming ACE reducer) is timed, so
the numbers are items/second of identification (``n_proxies`` proxies per item). Attributions
are accumulated in float32 (IG step sums) and the ACE state in float64, whatever the model dtype.

    python -m benchmarks gpu                     # both shapes on cuda:0
    python -m benchmarks gpu --shapes gpt2 --items 32
    python -m benchmarks gpu --smoke             # tiny shapes on CPU: checks the script, no GPU needed

Without a CUDA device (and without ``--smoke``) it exits with status 2 and says so. Writes
``results/gpu/<run>.{json,md}`` (run ``cuda``, or ``smoke`` in smoke mode).

Internals used: ``pipeline.identify.run_scoring`` (the scoring loop alone, without preparation),
``pipeline.prepare.prepare``, ``model.adapter.preserved_model_state``; the word-level tokenizer comes from the
test scaffolding (:func:`benchmarks.harness.test_scaffolding`).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from typing import Any

import torch

from benchmarks import harness

SHAPES: dict[str, dict[str, Any]] = {
    "llama7b": dict(arch="llama", vocab=32000, d_model=4096, d_mlp=11008, n_layers=32, n_heads=32, n_kv=32),
    "gpt2": dict(arch="gpt2", vocab=50257, d_model=768, d_mlp=3072, n_layers=12, n_heads=12, n_kv=12),
}
SMOKE_SHAPES: dict[str, dict[str, Any]] = {
    "llama7b": dict(arch="llama", vocab=512, d_model=64, d_mlp=172, n_layers=4, n_heads=4, n_kv=4),
    "gpt2": dict(arch="gpt2", vocab=512, d_model=48, d_mlp=192, n_layers=3, n_heads=4, n_kv=4),
}


def word_tokenizer() -> Any:
    """A tiny offline word-level tokenizer (the Bridge wants one; prompts are token ids anyway)."""
    return harness.test_scaffolding().word_tokenizer(
        ["[PAD]", "[UNK]", "[BOS]"] + list("ABCDEFGH") + ["Question:", "Answer:"]
    )


def build_model(shape: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """Random HF model of ``shape`` built on 'meta', materialised on ``device`` and initialised there."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if shape["arch"] == "llama":
        cfg = LlamaConfig(
            vocab_size=shape["vocab"],
            hidden_size=shape["d_model"],
            intermediate_size=shape["d_mlp"],
            num_hidden_layers=shape["n_layers"],
            num_attention_heads=shape["n_heads"],
            num_key_value_heads=shape["n_kv"],
            max_position_embeddings=4096,
            dtype=dtype,
        )
        cls, name = LlamaForCausalLM, "meta-llama/Llama-2-7b-hf"
    else:
        cfg = GPT2Config(
            vocab_size=shape["vocab"],
            n_embd=shape["d_model"],
            n_inner=shape["d_mlp"],
            n_layer=shape["n_layers"],
            n_head=shape["n_heads"],
            n_positions=1024,
            dtype=dtype,
        )
        cls, name = GPT2LMHeadModel, "gpt2"
    cfg.bos_token_id = cfg.eos_token_id = 2
    with torch.device("meta"):
        hf = cls(cfg).to(dtype)  # free on 'meta': the device then gets bf16 storage only
    hf = hf.to_empty(device=device)
    torch.manual_seed(seed)
    with torch.no_grad():
        hf.init_weights()  # parameters and non-persistent buffers (rotary inv_freq), on the device
    bad = [
        n for n, t in [*hf.named_parameters(), *hf.named_buffers()] if t.is_meta or not torch.isfinite(t.float()).all()
    ]
    if bad:
        raise RuntimeError(f"uninitialised tensors after to_empty + init_weights: {bad[:5]}")
    hf.eval()
    return TransformerBridge.boot_transformers(
        name, hf_model=hf, tokenizer=word_tokenizer(), device=device, dtype=dtype
    ).eval()


def token_task(n_items: int, vocab: int, prompt_tokens: int, seed: int = 0) -> tuple[Any, Any]:
    """Random token-level 4-option items whose 1-shot prompts have about ``prompt_tokens`` tokens."""
    from tl_neuronllm import Task, TokenFormat

    rng = random.Random(seed)
    q_len = max(4, (prompt_tokens - 2 * (4 * 6 + 4)) // 2)  # two blocks (demo + item), 4 options of 5 tokens
    lo = 16
    recs = [
        {
            "question": [rng.randrange(lo, vocab) for _ in range(q_len)],
            "options": [[rng.randrange(lo, vocab) for _ in range(5)] for _ in range(4)],
            "answer": rng.randrange(4),
        }
        for _ in range(n_items + 1)
    ]
    fmt = TokenFormat(
        letters=[3, 4, 5, 6], bos=2, question_prefix=[11], option_sep=[7], answer_prefix=[12], demo_sep=[8]
    )
    return Task.from_records(recs, name="random-tokens"), fmt


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_shape(name: str, shape: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from tl_neuronllm import IdentifyConfig
    from tl_neuronllm.model.adapter import preserved_model_state
    from tl_neuronllm.pipeline.identify import run_scoring
    from tl_neuronllm.pipeline.prepare import prepare

    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    model = build_model(shape, device, dtype)
    sync(device)
    build_s = time.perf_counter() - t0
    task, fmt = token_task(args.items, shape["vocab"], args.prompt_tokens)
    out: dict[str, Any] = {
        "shape": shape,
        "dtype": args.dtype,
        "build_s": build_s,
        "items": args.items,
        "steps": args.steps,
        "memory_budget_mb": args.memory_budget_mb,
    }
    for method in args.methods.split(","):
        cfg = IdentifyConfig(
            method=method,
            steps=args.steps,
            ig_rule=args.rule,
            token_format=fmt,
            batch_size=args.batch_size,
            memory_budget_mb=args.memory_budget_mb,
        )
        prep = prepare(model, task, cfg)
        adapter, queries = prep.adapter, prep.queries
        with preserved_model_state(model):
            run_scoring(adapter, queries[: max(1, cfg.batch_size // 4)], cfg, progress=False)  # warm-up, path checks
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t = time.perf_counter()
            reducer, _, _ = run_scoring(adapter, queries, cfg, progress=False)
            sync(device)
            secs = time.perf_counter() - t
            # issue 14 part 6: allocated memory must not grow across repeated calls in one process
            allocated = []
            for _ in range(3 if device.type == "cuda" else 0):
                run_scoring(adapter, queries[: max(1, cfg.batch_size // 4)], cfg, progress=False)
                gc.collect()
                sync(device)
                allocated.append(torch.cuda.memory_allocated(device) / 2**20)
        row = {
            "allocated_mib_after_repeats": allocated,
            "seconds": secs,
            "items_per_s": len(queries) / secs,
            "proxies_per_s": sum(map(len, queries)) / secs,
            "prompt_tokens": sorted({len(q.prompt) for qs in queries for q in qs}),
            "state_dtype": str(reducer.tensors()["sum_member"].dtype),
            "kv_backend": adapter.kv_backend,
            **adapter.fast_paths,
        }
        if device.type == "cuda":
            row["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out[method] = row
        print(name, method, {k: v for k, v in row.items() if k != "prompt_tokens"}, flush=True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# GPU attribution throughput ({res['device']})",
        "",
        f"torch {res['torch']}; random weights in {res['dtype']}; 1-shot 4-option token prompts of about "
        f"{res['prompt_tokens']} tokens, {res['n_proxies']} proxies per item; IG with m = {res['steps']} {res.get('rule', 'riemann')} "
        "steps; float32 IG accumulation, float64 ACE state. Timed: the pipeline's scoring loop.",
        "",
        "| model shape | method | items/s | proxies/s | peak GPU GiB | IG paths (packed / skip / letter cols) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, r in res["shapes"].items():
        for method in res["methods"]:
            m = r[method]
            paths = f"{m['packed_rows']} / {m['skip_layers']} / {m['letter_columns']}" if method == "ig" else ""
            lines.append(
                f"| {name} ({r['shape']['n_layers']}x{r['shape']['d_mlp']}) | {method} | {m['items_per_s']:.3f} | "
                f"{m['proxies_per_s']:.2f} | {m.get('peak_gpu_mem_gib', float('nan')):.1f} | {paths} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (no GPU needed)")
    ap.add_argument("--shapes", default="llama7b,gpt2")
    ap.add_argument("--methods", default="ig,grad_x_act")
    ap.add_argument("--items", type=int, default=None, help="items per method (default 16 on GPU, 3 in smoke mode)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rule", choices=("gauss", "riemann"), default="gauss", help="IG quadrature (identify's default)")
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument(
        "--batch-size", type=int, default=8, help="items per scoring batch (grad x act: prompts per forward)"
    )
    ap.add_argument(
        "--memory-budget-mb",
        type=float,
        default=None,
        help="IG chunk budget (default on GPU: half the free memory, see attribution.auto_memory_budget_mb)",
    )
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    args.run = args.run or ("smoke" if args.smoke else "cuda")
    harness.setup(args)
    if args.smoke:
        device, shapes = torch.device("cpu"), SMOKE_SHAPES
        args.items = args.items or 3
        args.steps = min(args.steps, 4)
        args.prompt_tokens = min(args.prompt_tokens, 60)
        args.memory_budget_mb = args.memory_budget_mb or 256.0
    else:
        if not torch.cuda.is_available():
            print(
                "benchmarks gpu: no CUDA device is available (torch.cuda.is_available() is False). Run it on a "
                "machine with a GPU, or use --smoke for the CPU smoke mode.",
                file=sys.stderr,
            )
            sys.exit(2)
        device, shapes = torch.device(args.device), SHAPES
        args.items = args.items or 16
        # default None: attribution.auto_memory_budget_mb (half the free GPU memory per IG chunk)
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke mode)",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "steps": args.steps,
        "rule": args.rule,
        "prompt_tokens": args.prompt_tokens,
        "n_proxies": 3,
        "methods": args.methods.split(","),
        "shapes": {},
    }
    for name in args.shapes.split(","):
        res["shapes"][name] = bench_shape(name, shapes[name], args, device)
    harness.write_result("gpu", args.run, res, args=args, markdown=markdown(res), out=args.out)
    print(markdown(res))


if __name__ == "__main__":
    main()
