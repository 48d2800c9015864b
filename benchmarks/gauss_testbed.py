"""IG step rules on a testbed: Riemann-16 vs Gauss-Legendre-8 (and others) against a fine Riemann reference.

    python -m benchmarks gauss_testbed --testbed facts --items 8

Per rule: max and L2 error against Riemann with ``--ref-steps`` steps (relative to the reference's max),
and the overlap of the top 1% / top 5% neurons by |score|, averaged over the items' proxies; seconds per
proxy. Writes ``results/gauss_testbed/<run>.{json,md}`` (run: the testbed's name).

Internals used (public names of internal modules; there is no public API for one proxy's attribution):
``attribution.kernels.ig_fast``, ``pipeline.prepare.prepare``, ``model.adapter.preserved_model_state``,
``studies.testbed.load_testbed``.
"""

from __future__ import annotations

import time

import torch

from benchmarks import harness
from tl_neuronllm import IdentifyConfig
from tl_neuronllm.attribution.kernels import ig_fast
from tl_neuronllm.model.adapter import preserved_model_state
from tl_neuronllm.pipeline.prepare import prepare
from tl_neuronllm.studies.testbed import load_testbed

RULES = [("riemann", 8), ("riemann", 16), ("gauss", 4), ("gauss", 8), ("gauss", 16)]


def overlap(a: torch.Tensor, b: torch.Tensor, frac: float) -> float:
    k = max(1, int(round(frac * a.numel())))
    ta = set(a.flatten().abs().topk(k).indices.tolist())
    tb = set(b.flatten().abs().topk(k).indices.tolist())
    return len(ta & tb) / k


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None)
    ap.set_defaults(threads=1)
    ap.add_argument("--testbed", default="facts")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--ref-steps", type=int, default=256)
    args = ap.parse_args(argv)
    args.run = args.run or args.testbed
    harness.setup(args)
    tb = load_testbed(args.testbed)
    task = tb.task.subset(range(1, args.items + 1))
    prep = prepare(tb.model, task, IdentifyConfig(token_format=tb.token_format), demos=[tb.task.items[0]])
    ad = prep.adapter
    with preserved_model_state(tb.model):
        qs = [q for qq in prep.queries for q in qq]
        refs = [ig_fast(ad, q, steps=args.ref_steps)[0] for q in qs]
        rows = []
        for rule, m in RULES:
            t0 = time.perf_counter()
            outs = [ig_fast(ad, q, steps=m, rule=rule)[0] for q in qs]
            secs = (time.perf_counter() - t0) / len(qs)
            errs = [float((o - r).abs().max() / r.abs().max()) for o, r in zip(outs, refs)]
            l2 = [float((o - r).norm() / r.norm()) for o, r in zip(outs, refs)]
            rows.append(
                {
                    "rule": rule,
                    "m": m,
                    "s_per_proxy": secs,
                    "max_rel_err": sum(errs) / len(errs),
                    "l2_rel_err": sum(l2) / len(l2),
                    "top1pct_overlap": sum(overlap(o, r, 0.01) for o, r in zip(outs, refs)) / len(qs),
                    "top5pct_overlap": sum(overlap(o, r, 0.05) for o, r in zip(outs, refs)) / len(qs),
                }
            )
    out = {
        "testbed": args.testbed,
        "n_neurons": ad.n_layers * ad.d_mlp,
        "proxies": len(qs),
        "ref": f"riemann-{args.ref_steps}",
        "rows": rows,
    }
    md = [
        f"{args.testbed}: {out['n_neurons']} neurons, {len(qs)} proxies, reference {out['ref']}",
        "",
        "| rule | m | s / proxy | max rel err | L2 rel err | top-1% overlap | top-5% overlap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['rule']} | {r['m']} | {r['s_per_proxy']:.4f} | {r['max_rel_err']:.1e} | {r['l2_rel_err']:.1e} | "
            f"{r['top1pct_overlap']:.3f} | {r['top5pct_overlap']:.3f} |"
        )
    harness.write_result("gauss_testbed", args.run, out, args=args, markdown="\n".join(md), out=args.out)
    print("\n".join(md))


if __name__ == "__main__":
    main()
