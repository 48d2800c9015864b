"""Side by side with what users would pick instead: captum's IntegratedGradients vs tl_neuronllm's fast IG.

Captum 0.9 (an optional benchmark dependency: ``pip install captum==0.9.0``) attributes each layer's MLP
neurons at the answer position: ``IntegratedGradients`` over a function of the site activation vector
(a hook writes it into ``blocks.{l}.mlp.hook_post`` at the last prompt token, every other layer runs
normally), zero baseline, the same rule and m steps (``--rule gauss``: captum's ``"gausslegendre"``, identify's
default; ``riemann``: ``"riemann_right"``, the method's), all steps in one batch of
full sequences. That is the per-layer IG the method defines, computed the way a captum user would, one
layer at a time; it is timed on ``--layers`` layers and extrapolated to all (stated). Same prompts, same
target F (log-softmax over the option letters at gold) as ``ig_fast``.

    python -m benchmarks captum_compare --prompts 3 --steps 8 --rule gauss --threads 1

Reports seconds per prompt, the ratio to a plain forward, and the agreement on the timed layers (max
relative difference, top-1% overlap). Writes ``results/captum_compare/<run>.{json,md}`` (run ``smollm2``).

Internals used (public names of internal modules; there is no public API for one proxy's attribution):
``attribution.kernels.ig_fast``, ``pipeline.prepare.prepare``, ``model.adapter.preserved_model_state``,
``model.answers.letter_scores`` / ``target_fn``.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from benchmarks import harness

CAPTUM_RULE = {"riemann": "riemann_right", "gauss": "gausslegendre"}  # the same nodes and weights


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None, run="smollm2")
    ap.set_defaults(threads=1)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rule", choices=("gauss", "riemann"), default="gauss", help="identify's default: gauss")
    ap.add_argument("--layers", default="0,14,29")
    ap.add_argument("--min-tokens", type=int, default=150)
    ap.add_argument("--max-tokens", type=int, default=260)
    args = ap.parse_args(argv)
    harness.setup(args)
    import captum
    from captum.attr import IntegratedGradients

    from tl_neuronllm import IdentifyConfig
    from tl_neuronllm.attribution.kernels import ig_fast
    from tl_neuronllm.model.adapter import preserved_model_state
    from tl_neuronllm.model.answers import letter_scores, target_fn
    from tl_neuronllm.pipeline.prepare import prepare

    model = harness.load_model()
    task = harness.load_task("mmlu").subset(range(60))
    layers = [int(x) for x in args.layers.split(",")]
    prep = prepare(model, task, IdentifyConfig(n_proxies=1))
    ad = prep.adapter
    queries = [qs[0] for qs in prep.queries]
    # prompts of the length speed.py uses (150-260 tokens), in task order
    queries = [q for q in queries if args.min_tokens <= len(q.prompt) <= args.max_tokens][: args.prompts]
    rows: list[dict[str, Any]] = []
    with preserved_model_state(model):
        ig_fast(ad, queries[0], steps=2)  # warm-up and the one-time checks
        for q in queries:
            toks = torch.tensor([list(q.prompt)], device=ad.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                ad.forward(toks)
            t_fwd = time.perf_counter() - t0
            t0 = time.perf_counter()
            ours, _, acts = ig_fast(ad, q, steps=args.steps, rule=args.rule)
            t_ours = time.perf_counter() - t0
            site = q.site
            t_cap, diffs, overlaps = 0.0, [], []
            for layer in layers:

                def forward(x: torch.Tensor, layer: int = layer) -> torch.Tensor:
                    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
                        act = act.clone()
                        act[:, site] = x
                        return act

                    logits = ad.forward(toks.expand(x.shape[0], -1), fwd_hooks=[(ad.hook_names[layer], hook)])
                    return target_fn(letter_scores(logits[:, site], q.letter_ids), q.gold, "ce")

                a = acts[layer][None].to(ad.device)
                t0 = time.perf_counter()
                cap = (
                    IntegratedGradients(forward)
                    .attribute(
                        a,
                        baselines=torch.zeros_like(a),
                        n_steps=args.steps,
                        method=CAPTUM_RULE[args.rule],
                        internal_batch_size=args.steps,
                    )[0]
                    .float()
                    .cpu()
                )
                t_cap += time.perf_counter() - t0
                ref = ours[layer]
                diffs.append(float((cap - ref).abs().max() / ref.abs().max()))
                k = max(1, round(0.01 * ref.numel()))
                overlaps.append(
                    len(set(cap.abs().topk(k).indices.tolist()) & set(ref.abs().topk(k).indices.tolist())) / k
                )
            rows.append(
                {
                    "tokens": len(q.prompt),
                    "forward_s": t_fwd,
                    "ours_s": t_ours,
                    "captum_s_all_layers": t_cap * ad.n_layers / len(layers),
                    "max_rel_diff": max(diffs),
                    "top1pct_overlap": min(overlaps),
                }
            )
            print(rows[-1], flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("forward_s", "ours_s", "captum_s_all_layers")}
    out = {
        "prompts": rows,
        "median": med,
        "steps": args.steps,
        "rule": args.rule,
        "timed_layers": layers,
        "n_layers": ad.n_layers,
        "captum": captum.__version__,
    }
    md = [
        f"# captum IntegratedGradients vs tl_neuronllm fast IG (SmolLM2-135M, MMLU, m = {args.steps} {CAPTUM_RULE[args.rule]})",
        "",
        f"{len(rows)} prompts of {min(r['tokens'] for r in rows)}-{max(r['tokens'] for r in rows)} tokens, "
        f"{args.threads} thread(s), captum {captum.__version__}, load average {os.getloadavg()[0]:.1f}; captum "
        f"timed on layers {layers} and extrapolated to {ad.n_layers}. Medians.",
        "",
        "| method | s / prompt | x forward |",
        "|---|---:|---:|",
        f"| plain forward | {med['forward_s']:.3f} | 1.0 |",
        f"| tl_neuronllm fast IG (all layers) | {med['ours_s']:.2f} | {med['ours_s'] / med['forward_s']:.1f} |",
        f"| captum IntegratedGradients, layer by layer | {med['captum_s_all_layers']:.1f} | "
        f"{med['captum_s_all_layers'] / med['forward_s']:.0f} |",
        "",
        f"Agreement on the timed layers: max relative difference {max(r['max_rel_diff'] for r in rows):.1e}, "
        f"top-1% overlap {min(r['top1pct_overlap'] for r in rows):.3f} (worst prompt).",
    ]
    harness.write_result("captum_compare", args.run, out, args=args, markdown="\n".join(md), out=args.out)
    print("\n".join(md))


if __name__ == "__main__":
    main()
