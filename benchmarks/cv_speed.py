"""``select_cv``'s fold loop: every setting of a fold in one ``evaluate_many`` pass vs one ``evaluate`` per setting.

    python benchmarks/cv_speed.py --task commonsenseqa

SmolLM2, cloze, 24 identification items, IG with 2 Gauss steps, k = 500 (as ``cv_real.py``); one identify with
kept attributions, then for each of the 4 folds the 12 settings of ``DEFAULT_GRID`` are evaluated on the
left-out items both ways, alternating which goes first, and the validated effects are compared. Writes
``cv_speed_<task>.json`` (times, the ratio, the largest difference of an effect, versions).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from tl_neuronllm import evaluate, evaluate_many, identify, rescore
from tl_neuronllm.studies.selection import DEFAULT_GRID, make_folds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="commonsenseqa")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tl_neuronllm.data.real_tasks import load_real_task
    from tl_neuronllm.data.smollm2 import load_smollm2
    from tl_neuronllm.pipeline.identify import _versions

    model = load_smollm2()
    ident, _, demos = load_real_task(args.task).split(24, 200, n_demo=1, seed=0)
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
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"cv_speed_{args.task}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
