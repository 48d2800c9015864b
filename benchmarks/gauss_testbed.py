"""IG step rules on a testbed: Riemann-16 vs Gauss-Legendre-8 (and others) against a fine Riemann reference.

    python benchmarks/gauss_testbed.py --testbed facts --items 8

Per rule: max and L2 error against Riemann with ``--ref-steps`` steps (relative to the reference's max),
and the overlap of the top 1% / top 5% neurons by |score|, averaged over the items' proxies; seconds per
proxy. Writes ``gauss_testbed_<name>.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tl_neuronllm.attribution.kernels import ig_fast
from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.model.adapter import preserved_model_state
from tl_neuronllm.pipeline.prepare import prepare
from tl_neuronllm.studies.testbed import load_testbed

RULES = [("riemann", 8), ("riemann", 16), ("gauss", 4), ("gauss", 8), ("gauss", 16)]


def overlap(a: torch.Tensor, b: torch.Tensor, frac: float) -> float:
    k = max(1, int(round(frac * a.numel())))
    ta = set(a.flatten().abs().topk(k).indices.tolist())
    tb = set(b.flatten().abs().topk(k).indices.tolist())
    return len(ta & tb) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--testbed", default="facts")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--ref-steps", type=int, default=256)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
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
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"gauss_testbed_{args.testbed}.json").write_text(json.dumps(out, indent=1))
    print(f"{args.testbed}: {out['n_neurons']} neurons, {len(qs)} proxies, reference {out['ref']}")
    print("| rule | m | s / proxy | max rel err | L2 rel err | top-1% overlap | top-5% overlap |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['rule']} | {r['m']} | {r['s_per_proxy']:.4f} | {r['max_rel_err']:.1e} | {r['l2_rel_err']:.1e} | "
            f"{r['top1pct_overlap']:.3f} | {r['top5pct_overlap']:.3f} |"
        )


if __name__ == "__main__":
    main()
