"""``select_cv``'s fold loop: every setting of a fold in one ``evaluate_many`` pass vs one ``evaluate`` per setting.

    python -m benchmarks cv_speed --task commonsenseqa

SmolLM2, cloze, 24 identification items, IG with 2 Gauss steps, k = 500 (as ``cv_real.py``); one identify with
kept attributions, then for each of the 4 folds the 12 settings of ``DEFAULT_GRID`` are evaluated on the
left-out items both ways, alternating which goes first, and the validated effects are compared. Writes
``results/cv_speed/<run>.json`` (run: the task; times, the ratio, the largest difference of an effect).

Internals used: ``studies.selection.DEFAULT_GRID`` and ``make_folds`` (``select_cv``'s grid and folds).
"""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks import harness
from tl_neuronllm import evaluate, evaluate_many, identify, rescore
from tl_neuronllm.studies.selection import DEFAULT_GRID, make_folds


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__)
    ap.set_defaults(threads=1)
    args = ap.parse_args(argv)
    args.run = args.run or args.task
    harness.setup(args)
    model = harness.load_model()
    task = harness.load_task(args.task)
    ident, _, demos = harness.split(task, args.n_identify, args.n_heldout, n_shots=args.n_shots, seed=args.seed)
    opts: dict[str, Any] = {"steps": 2, "ig_rule": "gauss", "mode": "cloze", "show_options": False, "n_proxies": 1}
    base = identify(model, ident, k=500, demos=demos, keep_attributions=True, progress=False, **opts)
    ev_opts = {"n_random": 0, "n_boot": 200, "interventions": ("suppress_good", "suppress_bad"), "progress": False}
    folds = make_folds(len(ident), 4, 0)
    t_each = t_many = 0.0
    max_diff = 0.0
    for f, held_idx in enumerate(folds):
        train = [i for i in range(len(ident)) if i not in set(held_idx)]
        fold = ident.subset(list(held_idx), name=f"fold{f}")
        results = [rescore(base, items=train, **s) for s in DEFAULT_GRID]
        each: list[Any] = []
        many: list[Any] = []
        for which in ("each", "many") if f % 2 == 0 else ("many", "each"):  # alternate which runs first
            t0 = time.perf_counter()
            if which == "each":
                each = [evaluate(model, r, fold, demos=demos, **ev_opts) for r in results]
                t_each += time.perf_counter() - t0
            else:
                many = evaluate_many(model, results, fold, demos=demos, **ev_opts)
                t_many += time.perf_counter() - t0
        for a, b in zip(each, many):
            for cond in ("suppress_good", "suppress_bad"):
                ra, rb = a.row(cond), b.row(cond)
                if ra.available:
                    max_diff = max(max_diff, abs(ra.delta["gold_prob"] - rb.delta["gold_prob"]))
        print(
            f"fold {f}: one evaluate per setting {t_each:.1f} s, evaluate_many {t_many:.1f} s (cumulative)", flush=True
        )
    out = {
        "task": args.task,
        "settings": len(DEFAULT_GRID),
        "folds": len(folds),
        "seconds_evaluate_each": t_each,
        "seconds_evaluate_many": t_many,
        "speedup": t_each / t_many,
        "max_abs_diff_delta_gold": max_diff,
    }
    harness.write_result("cv_speed", args.run, out, args=args, out=args.out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
