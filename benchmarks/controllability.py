"""Every method and ablation, same harness, same splits: held-out effects of the interventions.

    python benchmarks/controllability.py                       # testbeds only (minutes on 2 cores)
    python benchmarks/controllability.py --real --n-heldout 40 # + SmolLM2 on real tasks (letter, cloze; slow)

Writes ``benchmarks/results/controllability.{md,json}``: per task x method x intervention, the change in
accuracy and gold probability against the baseline with paired bootstrap 95% intervals, the same for
matched random sets (mean over seeds), and the wall time of identification.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from tl_neuronllm import Task, evaluate, identify

# (label, identify options); NeuronLLM variants first, then the ablations, then the peers
METHODS: list[tuple[str, dict[str, Any]]] = [
    ("neuronllm (defaults)", {}),
    ("neuronllm z=0.05 amb=0.25", {"z": 0.05, "ambiguity": 0.25}),
    ("ablation: no ambiguity filter", {"z": 0.05, "ambiguity": None}),
    ("ablation: P=1 (no augmentation)", {"z": 0.05, "ambiguity": 0.25, "n_proxies": 1}),
    ("ablation: probability target", {"z": 0.05, "ambiguity": 0.25, "target": "prob"}),
    ("grad x act", {"method": "grad_x_act", "z": 0.05, "ambiguity": 0.25}),
    ("activation contrast", {"method": "activation_contrast"}),
    ("knowledge neurons", {"method": "knowledge_neurons"}),
    ("qr-neuron", {"method": "qr_neuron"}),
]


def run_one(model: Any, ident: Task, held: Task, demos: Task, k: int | float, opts: dict[str, Any],
            base: dict[str, Any], n_random: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = identify(model, ident, k=k, demos=demos, progress=False, **base, **opts)
    seconds = time.perf_counter() - t0
    ev = evaluate(model, result, held, demos=demos, progress=False, n_random=n_random, n_boot=1000)
    rows = []
    for r in ev.rows:
        rows.append({
            "condition": r.name, "available": r.available, "n_good": r.n_good, "n_bad": r.n_bad,
            "accuracy": r.metrics.get("accuracy"), "gold_prob": r.metrics.get("gold_prob"),
            "d_acc": r.delta.get("accuracy"), "d_acc_ci": r.delta_ci.get("accuracy"),
            "d_gold": r.delta.get("gold_prob"), "d_gold_ci": r.delta_ci.get("gold_prob"),
            "random_d_acc": (r.random.get("metrics", {}).get("delta_accuracy") or {}).get("mean"),
            "random_d_gold": (r.random.get("metrics", {}).get("delta_gold_prob") or {}).get("mean"),
            "changed": r.metrics.get("changed"),
        })
    return {"identify_seconds": seconds, "n_good": len(result.good), "n_bad": len(result.bad), "rows": rows}


def fmt(x: float | None, ci: list[float] | None = None) -> str:
    if x is None:
        return "n/a"
    s = f"{x:+.3f}"
    return s + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def to_markdown(runs: list[dict[str, Any]]) -> str:
    out = ["# Controllability: held-out effects of interventions, every method (same harness, same splits)", "",
           "Δ against the no-intervention baseline, paired bootstrap 95% intervals; random = matched random sets, "
           "mean over seeds.", ""]
    for run in runs:
        out += [f"## {run['task']} ({run['mode']}, k={run['k']}, {run['n_identify']} identify / "
                f"{run['n_heldout']} held-out items, base accuracy {run['base_accuracy']:.3f})", "",
                "| method | condition | Δacc | random Δacc | Δgold p | random Δgold p | changed | identify s |",
                "|---|---|---|---|---|---|---|---|"]
        for m in run["methods"]:
            for r in m["rows"][1:]:
                if not r["available"]:
                    out.append(f"| {m['method']} | {r['condition']} | n/a | | n/a | | | {m['identify_seconds']:.1f} |")
                    continue
                out.append(f"| {m['method']} | {r['condition']} | {fmt(r['d_acc'], r['d_acc_ci'])} | "
                           f"{fmt(r['random_d_acc'])} | {fmt(r['d_gold'], r['d_gold_ci'])} | {fmt(r['random_d_gold'])} | "
                           f"{r['changed']:.2f} | {m['identify_seconds']:.1f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testbeds", default="facts-small,facts-lured-small,relations-small")
    ap.add_argument("--k", type=float, default=25)
    ap.add_argument("--n-random", type=int, default=5)
    ap.add_argument("--real", action="store_true", help="also SmolLM2 on real tasks (letter and cloze)")
    ap.add_argument("--real-tasks", default="commonsenseqa,siqa,openbookqa")
    ap.add_argument("--n-identify", type=int, default=24)
    ap.add_argument("--n-heldout", type=int, default=40)
    ap.add_argument("--methods", default="", help="comma-separated labels (default: all)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "controllability"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = [m for m in METHODS if not args.methods or m[0] in args.methods.split(",")]
    k = int(args.k) if args.k >= 1 else args.k
    runs = []
    from tl_neuronllm.testbed import load_testbed

    for name in [t for t in args.testbeds.split(",") if t]:
        tb = load_testbed(name)
        ident, held, demos = tb.splits(0)
        base = {"token_format": tb.token_format, "n_shots": 1}
        run = {"task": f"testbed:{name}", "mode": "letter", "k": k, "n_identify": len(ident), "n_heldout": len(held),
               "methods": []}
        for label, opts in methods:
            print(f"{name}: {label}", flush=True)
            run["methods"].append({"method": label, **run_one(tb.model, ident, held, demos, k, opts, base, args.n_random)})
        run["base_accuracy"] = run["methods"][0]["rows"][0]["accuracy"]
        runs.append(run)
    if args.real:
        from tl_neuronllm.datasets import load_real_task_records
        from tl_neuronllm.hub import load_smollm2

        model = load_smollm2()
        for tname in args.real_tasks.split(","):
            task = Task.from_records(load_real_task_records(tname), name=tname)
            ident, held, demos = task.split(args.n_identify, args.n_heldout, n_demo=1, seed=0)
            for mode, base in (("letter", {"steps": 4, "ig_rule": "gauss"}),
                               ("cloze", {"steps": 2, "ig_rule": "gauss", "mode": "cloze", "show_options": False,
                                          "n_proxies": 1})):
                run = {"task": f"smollm2:{tname}", "mode": mode, "k": 500 if mode == "cloze" else 50,
                       "n_identify": len(ident), "n_heldout": len(held), "methods": []}
                for label, opts in methods:
                    print(f"{tname} {mode}: {label}", flush=True)
                    o = {kk: v for kk, v in opts.items() if not (mode == "cloze" and kk == "n_proxies")}
                    run["methods"].append({"method": label, **run_one(model, ident, held, demos, run["k"], o, base,
                                                                      args.n_random)})
                run["base_accuracy"] = run["methods"][0]["rows"][0]["accuracy"]
                runs.append(run)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "runs": runs}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    out.with_suffix(".md").write_text(to_markdown(runs))
    print(to_markdown(runs))


if __name__ == "__main__":
    main()
