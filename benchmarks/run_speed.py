"""Seconds per item of ``identify`` and ``evaluate`` on SmolLM2-135M-Instruct, for comparing two versions
of the code side by side in one session (run it once per checkout, interleaved, on the same machine).

    PYTHONPATH=/path/to/checkout python benchmarks/run_speed.py --label new --out /tmp/new.json

Defaults follow the no-argument CLI run (CommonsenseQA, cloze, 1-shot, IG with 2 Gauss steps, k = 500,
5 random sets) on fewer items. Records the versions, the torch threads and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--label", required=True)
    ap.add_argument("--task", default="commonsenseqa")
    ap.add_argument("--mode", default="cloze")
    ap.add_argument("--n-identify", type=int, default=6)
    ap.add_argument("--n-heldout", type=int, default=12)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rule", default="gauss")
    ap.add_argument("--n-random", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import tl_neuronllm
    from tl_neuronllm import Task, evaluate, identify
    from tl_neuronllm.data.real_tasks import load_real_task_records
    from tl_neuronllm.data.smollm2 import load_smollm2

    model = load_smollm2()
    task = Task.from_records(load_real_task_records(args.task), name=args.task)
    ident, held, demo = task.split(args.n_identify, args.n_heldout, n_demo=1, seed=0)
    show = None if args.mode == "letter" else False
    opts = dict(mode=args.mode, steps=args.steps, ig_rule=args.rule)
    if show is False:
        opts["show_options"] = False
    t0 = time.perf_counter()
    res = identify(model, ident, k=500, demos=demo, progress=False, **opts)
    t_id = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate(model, res, held, demos=demo, n_random=args.n_random, n_boot=200, progress=False)
    t_ev = time.perf_counter() - t0
    out = {
        "label": args.label,
        "code": os.path.dirname(tl_neuronllm.__file__),
        "args": vars(args),
        "identify_s": t_id,
        "identify_s_per_item": t_id / args.n_identify,
        "evaluate_s": t_ev,
        "evaluate_s_per_item": t_ev / args.n_heldout,
        "baseline_gold_prob": ev.baseline.metrics["gold_prob"],
        "scores_sum": float(res.scores.abs().sum()),
        "fast_paths": res.stats.get("fast_paths"),
        "load_avg": os.getloadavg(),
        "versions": res.config.get("versions"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    print(
        json.dumps(
            {
                k: out[k]
                for k in ("label", "identify_s_per_item", "evaluate_s_per_item", "baseline_gold_prob", "scores_sum")
            }
        )
    )


if __name__ == "__main__":
    main()
