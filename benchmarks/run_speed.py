"""Seconds per item of ``identify`` and ``evaluate`` on SmolLM2-135M-Instruct, for comparing two versions
of the code side by side in one session (run it once per checkout, interleaved, on the same machine).

    PYTHONPATH=/path/to/checkout python -m benchmarks run_speed --label new --out /tmp/runs

Defaults follow the no-argument CLI run (CommonsenseQA, cloze, 1-shot, IG with 2 Gauss steps, k = 500,
5 random sets) on fewer items. Writes ``<out>/run_speed/<run>.json`` (run: the label); the harness records
the versions, the torch threads and the load average.
"""

from __future__ import annotations

import json
import os
import time

from benchmarks import harness


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__)
    ap.set_defaults(n_identify=6, n_heldout=12, threads=1)
    ap.add_argument("--label", required=True, help="this checkout's label (the default run name)")
    ap.add_argument("--mode", default="cloze")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rule", default="gauss")
    ap.add_argument("--n-random", type=int, default=5)
    args = ap.parse_args(argv)
    args.run = args.run or args.label
    harness.setup(args)

    import tl_neuronllm
    from tl_neuronllm import evaluate, identify

    model = harness.load_model()
    task = harness.load_task(args.task)
    ident, held, demo = harness.split(task, args.n_identify, args.n_heldout, n_shots=args.n_shots, seed=args.seed)
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
        "identify_s": t_id,
        "identify_s_per_item": t_id / args.n_identify,
        "evaluate_s": t_ev,
        "evaluate_s_per_item": t_ev / len(held),
        "baseline_gold_prob": ev.baseline.metrics["gold_prob"],
        "scores_sum": float(res.scores.abs().sum()),
        "fast_paths": res.stats.get("fast_paths"),
        "load_avg_end": os.getloadavg(),
    }
    harness.write_result("run_speed", args.run, out, args=args, out=args.out)
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
