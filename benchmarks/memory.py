"""Peak memory of identification: it must not grow with the number of items.

Every measurement runs in a fresh subprocess and reads its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``):

* ``items``: ``identify`` on a tiny random ``boot_native`` model (3 layers, d_mlp 64, gated) for
  100 and 1,000 items (3 proxies each), per method, next to a baseline process that builds the model
  and the task but identifies nothing. The method keeps ``O(n_layers * d_mlp)`` streaming state,
  rebuilds the tokenized queries batch by batch and tallies the model's answers as running sums;
  what grows with items is the task itself and the result's record of the item ids.
* ``budget`` (``--budget``): peak memory of one exact-IG call (``ig_fast``) on SmolLM2-135M for a
  ~200-token prompt under several ``memory_budget_mb`` values, above a baseline process that loads
  the model and runs the prompt once: how well the automatic chunk size keeps to the budget.

    python -m benchmarks memory                 # items: 100 vs 1000
    python -m benchmarks memory --budget        # also the chunk-size budget on SmolLM2

Writes ``results/memory/<run>.{json,md}`` (run ``items``, or ``items_budget`` with ``--budget``). The tiny
model comes from the test scaffolding (:func:`benchmarks.harness.test_scaffolding`). Internals used:
``attribution.kernels.ig_fast``, ``pipeline.prepare.prepare``, ``model.adapter.preserved_model_state``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import time
from typing import Any

from benchmarks import harness


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this (fresh) process; returns peak RSS in MiB and timings."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    if spec["kind"] == "items":
        from tl_neuronllm import identify

        helpers = harness.test_scaffolding()
        model = helpers.make_model("native", gated=True, seed=0)
        task, fmt = helpers.token_task(spec["n_items"] + 1)
        if spec["method"] is not None:
            res = identify(
                model, task, token_format=fmt, method=spec["method"], steps=spec["steps"], k=10, progress=False
            )
            out["n_queries"] = res.stats["n_queries"]
    else:
        from tl_neuronllm import IdentifyConfig
        from tl_neuronllm.attribution.kernels import ig_fast
        from tl_neuronllm.model.adapter import preserved_model_state
        from tl_neuronllm.pipeline.prepare import prepare

        model = harness.load_model()
        cfg = IdentifyConfig()
        prep = prepare(model, harness.load_task("mmlu", limit=40), cfg)
        adapter = prep.adapter
        qs = [q for item in prep.queries for q in item]
        q = min(qs, key=lambda q: abs(len(q.prompt) - 200))
        out["prompt_tokens"] = len(q.prompt)
        with preserved_model_state(model):
            with torch.no_grad():
                adapter.forward(torch.tensor([list(q.prompt)]))
            if spec["budget_mb"] is not None:
                ig_fast(adapter, q, steps=16, memory_budget_mb=spec["budget_mb"])
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return out


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    cmd, env = harness.command("memory", "--child", json.dumps(spec))
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=harness.ROOT, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(spec, "->", res, flush=True)
    return {**spec, **res}


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--items", default="100,1000")
    ap.add_argument("--methods", default="ig,grad_x_act")
    ap.add_argument("--steps", type=int, default=4, help="IG steps for the items runs")
    ap.add_argument("--budget", action="store_true", help="also measure ig_fast's memory budget on SmolLM2")
    ap.add_argument("--budgets", default="128,512,1024")
    args = ap.parse_args(argv)
    args.run = args.run or ("items_budget" if args.budget else "items")
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    counts = [int(x) for x in args.items.split(",")]
    rows = [measure({"kind": "items", "method": None, "n_items": counts[-1], "steps": args.steps})]
    for method in args.methods.split(","):
        for n in counts:
            rows.append(measure({"kind": "items", "method": method, "n_items": n, "steps": args.steps}))
    budget_rows = []
    if args.budget:
        budget_rows.append(measure({"kind": "budget", "budget_mb": None}))
        for b in args.budgets.split(","):
            budget_rows.append(measure({"kind": "budget", "budget_mb": float(b)}))
    res = {"items": rows, "budget": budget_rows}
    harness.write_result("memory", args.run, res, args=args, markdown=markdown(res), out=args.out)
    print(markdown(res))


def markdown(res: dict[str, Any]) -> str:
    base = next(r for r in res["items"] if r["method"] is None)
    lines = [
        "# Peak memory (RSS, one fresh process per run)",
        "",
        f"Tiny random boot_native model (3 layers, d_mlp 64, gated), 3 proxies per item, IG with "
        f"{base['steps']} steps. Baseline process (model + {base['n_items']}-item task, no identify): "
        f"{base['peak_rss_mib']:.1f} MiB.",
        "",
        "| method | items | proxies | peak RSS MiB | above baseline MiB | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["items"]:
        if r["method"] is None:
            continue
        lines.append(
            f"| {r['method']} | {r['n_items']} | {r.get('n_queries', '')} | {r['peak_rss_mib']:.1f} | "
            f"{r['peak_rss_mib'] - base['peak_rss_mib']:+.1f} | {r['seconds']:.1f} |"
        )
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in res["items"]:
        if r["method"] is not None:
            by_method.setdefault(r["method"], []).append(r)
    for m, rs in by_method.items():
        rs.sort(key=lambda r: r["n_items"])
        grow = rs[-1]["peak_rss_mib"] - rs[0]["peak_rss_mib"]
        lines.append(
            f"\n{m}: {rs[0]['n_items']} -> {rs[-1]['n_items']} items changes the peak by {grow:+.1f} MiB "
            f"({grow * 1024 / max(rs[-1]['n_items'] - rs[0]['n_items'], 1):.1f} KiB per extra item)."
        )
    if res["budget"]:
        b0 = next(r for r in res["budget"] if r["budget_mb"] is None)
        lines += [
            "",
            f"## ig_fast memory budget (SmolLM2-135M, one prompt of {b0['prompt_tokens']} tokens, m = 16)",
            "",
            f"Baseline process (model loaded, one forward): {b0['peak_rss_mib']:.0f} MiB.",
            "",
            "| memory_budget_mb | peak RSS MiB | above baseline MiB | seconds |",
            "|---:|---:|---:|---:|",
        ]
        for r in res["budget"]:
            if r["budget_mb"] is not None:
                lines.append(
                    f"| {r['budget_mb']:.0f} | {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - b0['peak_rss_mib']:+.0f} | "
                    f"{r['seconds']:.1f} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
