"""Speed of the attribution methods, side by side on the same model and prompts.

Measures, per proxy prompt (1-shot, 4 options, rendered by ``tl_neuronllm.pipeline.prepare.prepare``):

* a plain forward pass of the prompt (no grad): the unit everything is compared with;
* ``grad_x_act`` (one forward + one backward, all layers at once);
* exact IG, fast (``attribution.ig_fast``: prefix cache, packed rows, skipped layers, letter-only
  unembedding) and, with ``--old``, the same function with those optimisations turned off (the
  previous implementation: batched rows over a repeated cache, every row through every layer);
* exact IG, naive (``attribution.ig_naive``: one full forward+backward per layer and step), on one
  prompt and a subset of layers (``--naive-layers``), extrapolated to all layers (stated);
* with ``--gauss``, the accuracy of Gauss-Legendre vs Riemann steps against a fine reference.

and reports items/second (an item is ``n_proxies`` prompts), the ratios against the targets (fast
>= 50x naive with scores equal to 1e-4 relative; fast <= 10x a forward; grad x act <= 3x a
forward) and the max relative score difference fast vs naive. Writes ``results/speed/<run>.{json,md}`` (run:
the model, ``_<mode>_<task>`` added in cloze mode; ``gauss_<model>`` for ``--gauss-only``).

    python -m benchmarks speed                       # SmolLM2-135M (offline, see tl_neuronllm.data.smollm2)
    python -m benchmarks speed --model random        # random Llama of SmolLM2's shape
    python -m benchmarks speed --old --gauss --threads 1

Timings on a shared CPU are noisy: each number is a median of repeats, the load average is
recorded, and ratios are taken within one run.

Internals used (public names of internal modules: the kernels themselves, and the shortcut switches there is
no public option for): ``attribution.kernels.grad_x_act`` / ``ig_fast`` / ``ig_naive``,
``model.adapter.ModelAdapter`` (its ``fast`` switches: packed rows, skipped layers, letter columns) and
``preserved_model_state``, ``model.answers.full_rows``, ``pipeline.prepare.prepare``; the word-level
tokenizer of ``--model random`` comes from the test scaffolding (:func:`benchmarks.harness.test_scaffolding`).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from benchmarks import harness
from tl_neuronllm import IdentifyConfig, Task
from tl_neuronllm.attribution.kernels import grad_x_act, ig_fast, ig_naive
from tl_neuronllm.model.adapter import ModelAdapter, preserved_model_state
from tl_neuronllm.model.answers import full_rows
from tl_neuronllm.pipeline.prepare import prepare

TARGETS = {"fast_vs_naive_min": 50.0, "max_rel_diff": 1e-4, "fast_vs_forward_max": 10.0, "gxa_vs_forward_max": 3.0}


def load_model(kind: str, task: Task) -> Any:
    """SmolLM2-135M-Instruct (``smollm2``) or a random Llama of its shape (``random``)."""
    if kind == "smollm2":
        return harness.load_model()
    return random_smollm2_shape(task)


def random_smollm2_shape(task: Task, seed: int = 0) -> Any:
    """A random-weight Llama with SmolLM2-135M's shape and a word-level tokenizer over the task's words."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import LlamaConfig, LlamaForCausalLM

    words = ["[PAD]", "[UNK]", "[BOS]"] + list("ABCDEFGH")
    seen = set(words)
    for item in task.items:
        for text in [item.question, *item.options, item.context or ""]:
            for w in str(text).split() + ["Question:", "Answer:", "A.", "B.", "C.", "D."]:
                if w not in seen:
                    seen.add(w)
                    words.append(w)
    tok = harness.test_scaffolding().word_tokenizer(words)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )
    hf = LlamaForCausalLM(cfg).eval()
    return TransformerBridge.boot_transformers("meta-llama/Llama-2-7b-hf", hf_model=hf, tokenizer=tok).eval()


def timed(fn: Any, repeat: int = 1) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def set_fast_paths(adapter: ModelAdapter, state: tuple | None) -> tuple:
    """Turn the packed-row / skipped-layer / letter-column paths off (``state=None``: the previous
    implementation) or back to a saved ``state``; returns the state before the call."""
    fp = adapter.fast
    before = (fp.packed_rows, fp.skip_layers, fp.letter_columns)
    fp.packed_rows, fp.skip_layers, fp.letter_columns = state if state is not None else (False, False, False)
    return before


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def gauss_study(adapter: ModelAdapter, queries: list[Any], ref_steps: int) -> dict[str, Any]:
    """Errors and top-1% overlap of Riemann / Gauss-Legendre IG against fine references, averaged over prompts."""
    per_prompt, gaps = [], []
    for q in queries:
        ref_r, _, _ = ig_fast(adapter, q, steps=ref_steps)
        ref_g, _, _ = ig_fast(adapter, q, steps=64, rule="gauss")
        gaps.append(rel_diff(ref_r, ref_g))
        k = max(1, ref_g.numel() // 100)
        top_ref = set(ref_g.flatten().abs().topk(k).indices.tolist())
        rows = []
        for rule in ("riemann", "gauss"):
            for m in (2, 4, 8, 16, 32):
                t, s = timed(lambda: ig_fast(adapter, q, steps=m, rule=rule)[0])
                rows.append(
                    {
                        "rule": rule,
                        "steps": m,
                        "seconds": t,
                        f"rel_err_vs_riemann{ref_steps}": rel_diff(s, ref_r),
                        "rel_err_vs_gauss64": rel_diff(s, ref_g),
                        "rel_l2_err_vs_gauss64": float((s - ref_g).norm() / ref_g.norm()),
                        "top1pct_overlap_vs_gauss64": len(set(s.flatten().abs().topk(k).indices.tolist()) & top_ref)
                        / k,
                    }
                )
        per_prompt.append(rows)
    mean = [
        {key: (statistics.mean(p[i][key] for p in per_prompt) if isinstance(v, float) else v) for key, v in row.items()}
        for i, row in enumerate(per_prompt[0])
    ]
    return {
        "n_prompts": len(queries),
        "reference_gap": {f"riemann{ref_steps}_vs_gauss64": statistics.mean(gaps)},
        "rows": mean,
        "per_prompt": per_prompt,
    }


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None)
    ap.add_argument("--model", choices=("smollm2", "random"), default="smollm2")
    ap.add_argument("--task", default="mmlu", help="a registered task (its first 400 items)")
    ap.add_argument("--items", type=int, default=4, help="items whose proxies are timed (fast IG, grad x act, forward)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument(
        "--rule", choices=("gauss", "riemann"), default="gauss", help="IG quadrature (identify's default: gauss)"
    )
    ap.add_argument("--mode", choices=("letter", "cloze"), default="letter")
    ap.add_argument("--naive-layers", default="3", help="'all' or a count of evenly spaced layers for the naive IG")
    ap.add_argument("--old", action="store_true", help="also time ig_fast with packing/skipping/column paths off")
    ap.add_argument("--gauss", action="store_true", help="also measure Gauss-Legendre vs Riemann accuracy")
    ap.add_argument("--gauss-ref-steps", type=int, default=256)
    ap.add_argument("--gauss-prompts", type=int, default=2, help="prompts the Gauss study averages over")
    ap.add_argument("--gauss-only", action="store_true", help="run only the Gauss study (writes speed_gauss_*.json/md)")
    ap.add_argument("--min-tokens", type=int, default=150, help="use items whose 1-shot prompts have at least ...")
    ap.add_argument("--max-tokens", type=int, default=260, help="... and at most this many tokens")
    args = ap.parse_args(argv)
    if args.run is None:
        cloze = "" if args.mode == "letter" else f"_{args.mode}_{args.task}"
        args.run = f"gauss_{args.model}" if args.gauss_only else f"{args.model}{cloze}"
    harness.setup(args)

    task = harness.load_task(args.task, limit=400)
    model = load_model(args.model, task)
    # cloze as the default run: options not listed, so one proxy per item
    cloze = dict(show_options=False, n_proxies=1) if args.mode == "cloze" else {}
    cfg = IdentifyConfig(n_shots=1, mode=args.mode, **cloze)
    prep = prepare(model, task, cfg)
    adapter, all_q = prep.adapter, prep.queries
    picked = [
        qs
        for qs in all_q
        if args.min_tokens <= min(len(q.prompt) for q in qs) and max(len(q.prompt) for q in qs) <= args.max_tokens
    ]
    picked = picked[: args.items]
    if len(picked) < args.items:
        picked = all_q[: args.items]
    queries = [q for qs in picked for q in qs]
    L = adapter.n_layers
    info: dict[str, Any] = {
        "model": args.model,
        "model_desc": adapter.describe(),
        "task": args.task,
        "n_items": len(picked),
        "n_proxies": cfg.n_proxies,
        "n_queries": len(queries),
        "steps": args.steps,
        "rule": args.rule,
        "mode": args.mode,
        "prompt_tokens": [len(q.prompt) for q in queries],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loadavg_start": os.getloadavg(),
    }
    print(
        f"{len(queries)} prompts, {min(info['prompt_tokens'])}-{max(info['prompt_tokens'])} tokens, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    res: dict[str, Any] = {"info": info}
    if args.gauss_only:
        with preserved_model_state(model):
            res["gauss"] = gauss_study(adapter, queries[:: cfg.n_proxies][: args.gauss_prompts], args.gauss_ref_steps)
        harness.write_result("speed", args.run, res, args=args, markdown=gauss_markdown(res["gauss"]), out=args.out)
        print(gauss_markdown(res["gauss"]))
        return
    with preserved_model_state(model):
        # warm-up (also runs the adapter's one-time path checks)
        ig_fast(adapter, queries[0], steps=2)
        grad_x_act(adapter, queries[:1])
        info["fast_paths"] = adapter.fast_paths
        per: list[dict[str, float]] = []
        for i, q in enumerate(queries):
            # one plain prediction: the prompt (letter), or the prompt + each option as a padded batch (cloze)
            toks = adapter.pad_batch(full_rows(q)[0])[0].to(adapter.device)
            with torch.no_grad():
                t_fwd, _ = timed(lambda: adapter.forward(toks), repeat=3)
            t_gxa, _ = timed(lambda: grad_x_act(adapter, [q]), repeat=2)
            t_fast, (s_fast, _, _) = timed(lambda: ig_fast(adapter, q, steps=args.steps, rule=args.rule))
            row = {"tokens": len(q.prompt), "forward_s": t_fwd, "grad_x_act_s": t_gxa, "ig_fast_s": t_fast}
            if args.old:
                saved = set_fast_paths(adapter, None)
                t_old, (s_old, _, _) = timed(lambda: ig_fast(adapter, q, steps=args.steps, rule=args.rule))
                set_fast_paths(adapter, saved)
                row.update(ig_old_s=t_old, old_vs_fast_rel_diff=rel_diff(s_fast, s_old))
            per.append(row)
            if i == 0:
                first_fast = s_fast
            print(" ".join(f"{k}={v:.3g}" for k, v in row.items()), flush=True)
        # batched throughput of grad x act as the pipeline runs it (8 prompts per forward)
        t_gxa_b, _ = timed(lambda: grad_x_act(adapter, queries, batch_size=8))
        # naive reference on the first prompt, a subset of layers
        n_sub = L if args.naive_layers == "all" else max(1, min(L, int(args.naive_layers)))
        lays = sorted({round(i * (L - 1) / max(n_sub - 1, 1)) for i in range(n_sub)})
        t_naive_sub, s_naive = timed(
            lambda: ig_naive(adapter, queries[0], steps=args.steps, rule=args.rule, layers=lays)
        )
        t_fast_sub, s_fast_sub = timed(
            lambda: ig_fast(adapter, queries[0], steps=args.steps, rule=args.rule, layers=lays)[0]
        )
        if args.gauss:
            res["gauss"] = gauss_study(adapter, queries[:: cfg.n_proxies][: args.gauss_prompts], args.gauss_ref_steps)
    med = lambda key: statistics.median(r[key] for r in per)
    t_naive_all = t_naive_sub * L / len(lays)
    P = cfg.n_proxies
    summary = {
        "forward_s": med("forward_s"),
        "grad_x_act_s": med("grad_x_act_s"),
        "ig_fast_s": med("ig_fast_s"),
        "fast_vs_forward": statistics.median(r["ig_fast_s"] / r["forward_s"] for r in per),
        "grad_x_act_vs_forward": statistics.median(r["grad_x_act_s"] / r["forward_s"] for r in per),
        "naive_layers": lays,
        "naive_s_measured": t_naive_sub,
        "naive_s_extrapolated_all_layers": t_naive_all,
        "fast_vs_naive": t_naive_all / per[0]["ig_fast_s"],
        "fast_vs_naive_same_layers": t_naive_sub / t_fast_sub,
        "max_rel_diff_fast_vs_naive": rel_diff(first_fast[lays], s_naive[lays]),
        "max_rel_diff_fast_vs_naive_same_layers_run": rel_diff(s_fast_sub[lays], s_naive[lays]),
        "items_per_s": {
            "forward": 1 / (P * med("forward_s")),
            "grad_x_act": 1 / (P * med("grad_x_act_s")),
            "grad_x_act_batched8": len(picked) / t_gxa_b,
            "ig_fast": 1 / (P * med("ig_fast_s")),
            "ig_naive_extrapolated": 1 / (P * t_naive_all),
        },
    }
    if args.old:
        summary["ig_old_s"] = med("ig_old_s")
        summary["old_vs_fast_speedup"] = statistics.median(r["ig_old_s"] / r["ig_fast_s"] for r in per)
        summary["items_per_s"]["ig_old"] = 1 / (P * med("ig_old_s"))
        summary["max_rel_diff_old_vs_fast"] = max(r["old_vs_fast_rel_diff"] for r in per)
    summary["targets"] = {
        "fast >= 50x naive": summary["fast_vs_naive"] >= TARGETS["fast_vs_naive_min"],
        "scores equal to 1e-4 relative": summary["max_rel_diff_fast_vs_naive"] <= TARGETS["max_rel_diff"],
        "fast <= 10x forward": summary["fast_vs_forward"] <= TARGETS["fast_vs_forward_max"],
        "grad x act <= 3x forward": summary["grad_x_act_vs_forward"] <= TARGETS["gxa_vs_forward_max"],
    }
    info["loadavg_end"] = os.getloadavg()
    res.update(per_prompt=per, summary=summary)
    harness.write_result("speed", args.run, res, args=args, markdown=markdown(res), out=args.out)
    print(markdown(res))


def markdown(res: dict[str, Any]) -> str:
    info, s = res["info"], res["summary"]
    toks = info["prompt_tokens"]
    lines = [
        f"# Attribution speed: {info['model']} ({info['model_desc']['n_layers']} layers, d_mlp {info['model_desc']['d_mlp']})",
        "",
        f"{info['task']}, {info['n_items']} items x {info['n_proxies']} proxies = {info['n_queries']} prompts of "
        f"{min(toks)}-{max(toks)} tokens (1-shot, {info.get('mode', 'letter')} mode); m = {info['steps']} {info['rule'].capitalize()} steps; "
        f"{info['threads']} torch thread(s), torch {info['torch']}; load average {info['loadavg_start'][0]:.1f} -> "
        f"{info['loadavg_end'][0]:.1f} (shared machine). Medians over prompts. IG shortcuts in use: "
        + ", ".join(k for k, v in info["fast_paths"].items() if v)
        + ".",
        "",
        "| method | s / prompt | x forward | items / s |",
        "|---|---:|---:|---:|",
        f"| plain forward (no grad; cloze: prompt + each option) | {s['forward_s']:.3f} | 1.0 | "
        f"{s['items_per_s']['forward']:.3f} |",
        f"| grad x act | {s['grad_x_act_s']:.3f} | {s['grad_x_act_vs_forward']:.2f} | {s['items_per_s']['grad_x_act']:.3f} "
        f"({s['items_per_s']['grad_x_act_batched8']:.3f} batched by 8) |",
        f"| IG fast (exact) | {s['ig_fast_s']:.3f} | {s['fast_vs_forward']:.2f} | {s['items_per_s']['ig_fast']:.4f} |",
    ]
    if "ig_old_s" in s:
        lines.append(
            f"| IG fast, previous implementation | {s['ig_old_s']:.3f} | {s['ig_old_s'] / s['forward_s']:.2f} | "
            f"{s['items_per_s']['ig_old']:.4f} |"
        )
    lines += [
        f"| IG naive (extrapolated from {len(s['naive_layers'])} layers) | {s['naive_s_extrapolated_all_layers']:.1f} | "
        f"{s['naive_s_extrapolated_all_layers'] / s['forward_s']:.0f} | {s['items_per_s']['ig_naive_extrapolated']:.6f} |",
        "",
        f"- fast / naive speed-up: **{s['fast_vs_naive']:.0f}x** (naive measured on layers {s['naive_layers']}: "
        f"{s['naive_s_measured']:.1f} s, x {info['model_desc']['n_layers']}/{len(s['naive_layers'])}; on the same layers "
        f"fast is {s['fast_vs_naive_same_layers']:.0f}x faster)",
        f"- max relative score difference fast vs naive: **{s['max_rel_diff_fast_vs_naive']:.1e}** (max |diff| / max |naive|)",
    ]
    if "old_vs_fast_speedup" in s:
        lines.append(
            f"- new fast IG vs previous: **{s['old_vs_fast_speedup']:.2f}x** faster, max relative difference "
            f"{s['max_rel_diff_old_vs_fast']:.1e}"
        )
    lines += ["", "Targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in s["targets"].items())]
    if "gauss" in res:
        lines += ["", gauss_markdown(res["gauss"])]
    return "\n".join(lines) + "\n"


def gauss_markdown(g: dict[str, Any]) -> str:
    ref_key = next(k for k in g["rows"][0] if k.startswith("rel_err_vs_riemann"))
    lines = [
        f"## Gauss-Legendre vs Riemann steps (mean over {g.get('n_prompts', 1)} prompt(s))",
        "",
        f"References: Riemann with {ref_key.removeprefix('rel_err_vs_riemann')} steps and Gauss-Legendre with 64 "
        f"(they differ by {next(iter(g['reference_gap'].values())):.1e}).",
        "Errors: max |diff| / max |ref| (dominated by the few steepest neurons) and the relative L2 error; "
        "overlap: shared fraction of the 1% largest |IG|.",
        "",
        "| rule | m | s | max err vs Riemann ref | max err vs Gauss-64 | L2 err vs Gauss-64 | top-1% overlap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in g["rows"]:
        lines.append(
            f"| {r['rule']} | {r['steps']} | {r['seconds']:.2f} | {r[ref_key]:.1e} | {r['rel_err_vs_gauss64']:.1e} | "
            f"{r.get('rel_l2_err_vs_gauss64', float('nan')):.1e} | {r['top1pct_overlap_vs_gauss64']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
