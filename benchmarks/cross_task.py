"""Issue 12 on SmolLM2-135M-Instruct: one task per family, common vs task-specific neurons, stability.

    python -m benchmarks cross_task probe      # IMDB / BoolQ prompt formats: accuracy of the plain model
    python -m benchmarks cross_task identify   # identify (keep_attributions) on every task, results saved
    python -m benchmarks cross_task compare    # overlap table, heatmap, intervention check, stability

Everything runs on one torch thread. Results go to ``results/cross_task/``: ``probe.json`` (probe stage),
``<task>/result/`` (the saved identify results), ``comparison.*`` and ``overlap.png`` (compare stage) and the
compare stage's report ``<run>.{json,md}`` (run ``cross_task``: stability curves and the tables).

Internals used: ``pipeline.prepare.prepare`` and ``model.answers.predict`` (probe: the plain model's answers
under several prompt formats), ``studies.stability.stability_curve`` / ``curve_markdown``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from benchmarks import harness

#: task -> (family, identify options). Cloze everywhere (SmolLM2 is at chance in letter mode); the long
#: passages of IMDB and BoolQ are asked without a demonstration.
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "openbookqa": ("knowledge", {"mode": "cloze", "show_options": False, "n_proxies": 1}),
    "commonsenseqa": ("commonsense", {"mode": "cloze", "show_options": False, "n_proxies": 1}),
    "imdb": (
        "sentiment",
        {
            "mode": "cloze",
            "show_options": False,
            "n_proxies": 1,
            "n_shots": 0,
            "instruction": "Read the movie review and say whether its sentiment is positive or negative.",
        },
    ),
    "boolq": (
        "reading_comprehension",
        {
            "mode": "cloze",
            "show_options": False,
            "n_proxies": 1,
            "n_shots": 0,
            "instruction": "Read the passage and answer the question with yes or no.",
        },
    ),
}
COMMON = {"steps": 2, "ig_rule": "gauss", "kv_cache": "auto"}


def load(n_ident: int, n_held: int) -> tuple[Any, dict[str, tuple[Any, Any, Any]]]:
    model = harness.load_model()
    splits = {name: harness.split(harness.load_task(name), n_ident, n_held) for name in TASKS}
    return model, splits


def probe(args: argparse.Namespace) -> None:
    """Accuracy of the plain model on IMDB / BoolQ under a few prompt formats (forward passes only)."""
    from tl_neuronllm import IdentifyConfig
    from tl_neuronllm.model.answers import predict
    from tl_neuronllm.pipeline.prepare import prepare

    model = harness.load_model()
    out = []
    for name in ("imdb", "boolq"):
        task = harness.load_task(name).split(args.n_probe, 0, n_demo=0, seed=1)[0]
        instr = TASKS[name][1]["instruction"]
        formats = {
            "cloze, default instruction": dict(mode="cloze", show_options=False, n_proxies=1, n_shots=0),
            "cloze, task instruction": dict(
                mode="cloze", show_options=False, n_proxies=1, n_shots=0, instruction=instr
            ),
            "letter, task instruction": dict(mode="letter", n_proxies=2, n_shots=0, instruction=instr),
        }
        if args.probe_formats:
            formats = {k: v for k, v in formats.items() if k.split(",")[0] in args.probe_formats.split(",")}
        for label, opts in formats.items():
            cfg = IdentifyConfig(**opts)
            t0 = time.perf_counter()
            prep = prepare(model, task, cfg)
            adapter, qs = prep.adapter, prep.queries
            flat = [q for item in qs for q in item]
            with torch.no_grad():
                probs = predict(adapter, flat, batch_size=4)
            pred = [int(p.argmax()) for p in probs]
            gold_opt = [task[q.item_index].answer for q in flat]  # option index of the gold
            acc = sum(int(p == q.gold) for p, q in zip(pred, flat)) / len(flat)
            share_first = sum(1 for p in probs if int(p.argmax()) == 0) / len(flat)
            gold_p = sum(float(p[q.gold]) for p, q in zip(probs, flat)) / len(flat)
            # calibrated (label-free, on the same questions): subtract the mean log-probability of each letter / option position
            lp = torch.stack([p.log() for p in probs])
            cal = (lp - lp.mean(0)).argmax(1).tolist()
            acc_cal = sum(int(c == q.gold) for c, q in zip(cal, flat)) / len(flat)
            row = {
                "task": name,
                "format": label,
                "n_items": len(task),
                "n_questions": len(flat),
                "accuracy": acc,
                "accuracy_calibrated": acc_cal,
                "gold_prob": gold_p,
                "share_first_option": share_first,
                "seconds": time.perf_counter() - t0,
                "base_rate_gold_first": sum(g == 0 for g in gold_opt) / len(flat),
            }
            print(json.dumps(row), flush=True)
            out.append(row)
    harness.write_result("cross_task", "probe", out, args=args, out=args.out)


def identify_all(args: argparse.Namespace) -> None:
    from tl_neuronllm import identify

    model, splits = load(args.n_ident, args.n_held)
    for name, (family, opts) in TASKS.items():
        if args.tasks and name not in args.tasks.split(","):
            continue
        ident, held, demo = splits[name]
        t0 = time.perf_counter()
        res = identify(model, ident, k=args.k, demos=demo, keep_attributions=True, progress=False, **COMMON, **opts)
        res.save(harness.result_dir("cross_task", args.out) / name / "result")
        print(
            json.dumps(
                {
                    "task": name,
                    "family": family,
                    "seconds": time.perf_counter() - t0,
                    "accuracy": res.stats.get("accuracy"),
                    "gold_prob": res.stats.get("gold_prob"),
                    "n_good": len(res.good),
                    "n_bad": len(res.bad),
                    "fast_paths": res.stats.get("fast_paths"),
                }
            ),
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None, run="cross_task")
    ap.set_defaults(threads=1)
    ap.add_argument("stage", choices=("probe", "identify", "compare"))
    ap.add_argument("--n-ident", type=int, default=12)
    ap.add_argument("--n-held", type=int, default=16)
    ap.add_argument("--n-probe", type=int, default=30)
    ap.add_argument("--probe-formats", default="", help="probe stage: 'cloze', 'letter' or both (default)")
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--tasks", default="")
    ap.add_argument("--n-random", type=int, default=2)
    ap.add_argument("--n-check-items", type=int, default=12, help="held-out items per task in the intervention check")
    ap.add_argument("--no-check", action="store_true", help="compare stage: skip the intervention check")
    args = ap.parse_args(argv)
    harness.setup(args)
    {"probe": probe, "identify": identify_all, "compare": lambda a: compare_all(a)}[args.stage](args)


def compare_all(args: argparse.Namespace) -> None:
    """Overlap table + heatmap, the shared-vs-specific intervention check, stability curves."""
    from tl_neuronllm import NeuronResult, compare, shared_vs_specific
    from tl_neuronllm.studies.stability import curve_markdown, stability_curve

    out = harness.result_dir("cross_task", args.out)
    names = [n for n in TASKS if (out / n / "result").is_dir()]
    results = {n: NeuronResult.load(out / n / "result") for n in names}
    cmp = compare(results)
    cmp.heatmap(out / "overlap.png")
    curves = {}
    for n, r in results.items():
        m = len(r.config["task"]["item_ids"])
        # subsets of at most half the items (larger ones share most items), then the bootstrap of all items
        curves[n] = stability_curve(r, sorted({max(2, m // 4), max(2, m // 2)}) + [None], n_resamples=30)
    t0 = time.perf_counter()
    if not args.no_check:
        model, splits = load(args.n_ident, args.n_held)
        held = {n: splits[n][1].subset(range(min(args.n_check_items, len(splits[n][1])))) for n in names}
        shared_vs_specific(
            model, cmp, results, held, demos={n: splits[n][2] for n in names}, n_random=args.n_random, n_boot=1000
        )
    cmp.config["check_seconds"] = time.perf_counter() - t0
    cmp.save(out / "comparison")
    md = [
        f"# Common vs task-specific neurons, SmolLM2-135M-Instruct ({time.strftime('%Y-%m-%d')})",
        "",
        "| task | family | identification items | identification accuracy | identify s | good | bad |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for n, r in results.items():
        md.append(
            f"| {n} | {TASKS[n][0]} | {r.config['task']['n_scored']} | {r.stats.get('accuracy', float('nan')):.3f} "
            f"| {r.stats.get('seconds', 0):.0f} | {len(r.good)} | {len(r.bad)} |"
        )
    md += [
        "",
        cmp.to_markdown(),
        "",
        "## Stability (no model time)",
        "",
        curve_markdown(curves),
    ]
    stability = {n: [s.summary() for s in c] for n, c in curves.items()}
    harness.write_result(
        "cross_task", args.run, {"stability": stability}, args=args, markdown="\n".join(md), out=args.out
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
