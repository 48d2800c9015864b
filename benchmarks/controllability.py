"""Every method and ablation, same harness, same splits: held-out effects of the interventions.

    python -m benchmarks controllability                  # testbeds only, 3 trained instances of each
    python -m benchmarks controllability --instances 1    # the shipped testbeds only (config seed 0)
    python -m benchmarks controllability --real           # + SmolLM2 on three real tasks, letter and cloze
    python -m benchmarks controllability --real --testbeds "" --real-tasks siqa --out /tmp/r   # one shard
    python -m benchmarks controllability --merge /tmp/r/controllability/*.json --run all   # shards -> one table

Writes ``results/controllability/<run>.{md,json,png}`` (run: ``--run``, or ``testbeds`` /
``testbeds_instances`` / ``..._real`` from the options; ``merged`` for ``--merge``): per task x method x
intervention, the change in accuracy and gold probability against the baseline with paired bootstrap 95%
intervals, the same for matched random sets (mean over seeds), and the wall time of identification.
``--merge`` reads shards of either layout (the harness's, or the files written before it).

The model is run once per *attribution* (IG with the CE target, IG with the probability target, grad x act,
activation contrast, knowledge neurons, QR-Neuron); the NeuronLLM ablations of the scoring stage (ambiguity
filter, P = 1, per-item candidate size z, set size K) are re-formed from the kept per-item attributions
with :func:`tl_neuronllm.rescore`, which is exactly what ``identify`` returns with those options (tested).
Their "identify s" column is the shared attribution time.

``--instances N`` trains each testbed N times (``TestbedConfig.seed`` 0 .. N-1, seed 0 being the shipped
one), runs every method on each instance, and adds the spread across instances and the wins that hold on
every instance (see ``controllability_instances.py``): a trained testbed is one draw, and another CPU's
kernels train it to other weights. The header records the machine, versions and torch thread count.

Internals used: ``studies.testbed.TESTBEDS`` / ``load_testbed`` (the trained testbeds).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from benchmarks import controllability_instances as ci
from benchmarks import harness
from tl_neuronllm import Task, evaluate, identify, rescore

Variant = tuple[str, dict[str, Any]]  # (label, rescore options; "k" may set K)
PAPER_IG = "neuronllm defaults, the method's IG (16 Riemann steps)"
#: The method's selection values (identify's default up to 0.4.0; ``preset="paper"`` since 0.5.0). The labels
#: "neuronllm (defaults...)" keep their meaning of the recorded results: these values, written out.
PAPER_SEL = {"z": 0.01, "ambiguity": 0.0}
#: identify's default since 0.5.0: what select_cv chose on every benchmark task.
SHIPPED = ("neuronllm (0.5 default: z=10%, no filter)", {"z": 0.1, "ambiguity": None})


def groups(kind: str, mode: str, k: int, sweeps: bool) -> list[tuple[dict[str, Any], list[Variant]]]:
    """(identify options, variants) per attribution run: NeuronLLM, its ablations, then the peers.

    Testbeds (128 neurons) use z = 0.05 and ambiguity 0.25 for the ablations (1% of 128 neurons is one
    neuron per item); the real model uses the method's values (z = 1% of 46,080 neurons, strict filter) for
    NeuronLLM's ablations and the peers that form sets by its scoring stage. Both also show identify's
    default since 0.5.0 (z = 10%, no filter).
    """
    if kind == "testbed":
        main = {"z": 0.05, "ambiguity": 0.25}
        ce = [
            ("neuronllm (defaults: z=1%, strict filter)", PAPER_SEL),
            SHIPPED,
            ("neuronllm z=0.05 amb=0.25", main),
            ("ablation: no ambiguity filter", {"z": 0.05, "ambiguity": None}),
            ("ablation: strict filter", {"z": 0.05, "ambiguity": 0.0}),
            ("ablation: P=1 (no augmentation)", {**main, "proxies": [0]}),
        ]
        if sweeps:
            ce += [(f"sweep: z={z}", {"z": z, "ambiguity": 0.25}) for z in (0.02, 0.1, 0.2)]
            ce += [(f"sweep: K={kk}", {**main, "k": kk}) for kk in (k // 2, 2 * k)]
    else:
        main = dict(PAPER_SEL)
        ce = [
            ("neuronllm (defaults)", PAPER_SEL),
            SHIPPED,
            ("ablation: no ambiguity filter", {"z": 0.01, "ambiguity": None}),
        ]
        if mode == "letter":
            ce.append(("ablation: P=1 (no augmentation)", {**main, "proxies": [0]}))
        if sweeps:
            ce += [(f"sweep: z={z}", {"z": z, "ambiguity": 0.0}) for z in (0.005, 0.02)]
            ce += [(f"sweep: K={kk}", {**main, "k": kk}) for kk in (k // 2, 2 * k)]
    paper_ig = []
    if kind == "testbed":  # the method's IG (identify's default is 8 Gauss-Legendre steps)
        paper_ig = [({"steps": 16, "ig_rule": "riemann"}, [(PAPER_IG, PAPER_SEL)])]
    return [
        ({}, ce),
        *paper_ig,
        ({"target": "prob", **main}, [("ablation: probability target", {})]),
        ({"method": "grad_x_act", **main}, [("grad x act", {})]),
        ({"method": "activation_contrast"}, [("activation contrast", {})]),
        ({"method": "knowledge_neurons"}, [("knowledge neurons", {})]),
        ({"method": "qr_neuron"}, [("qr-neuron", {})]),
    ]


def eval_rows(model: Any, result: Any, held: Task, demos: Task, n_random: int) -> list[dict[str, Any]]:
    ev = evaluate(model, result, held, demos=demos, progress=False, n_random=n_random, n_boot=1000)
    rows = []
    for r in ev.rows:
        rows.append(
            {
                "condition": r.name,
                "available": r.available,
                "n_good": r.n_good,
                "n_bad": r.n_bad,
                "accuracy": r.metrics.get("accuracy"),
                "gold_prob": r.metrics.get("gold_prob"),
                "d_acc": r.delta.get("accuracy"),
                "d_acc_ci": r.delta_ci.get("accuracy"),
                "d_gold": r.delta.get("gold_prob"),
                "d_gold_ci": r.delta_ci.get("gold_prob"),
                "random_d_acc": (r.random.get("metrics", {}).get("delta_accuracy") or {}).get("mean"),
                "random_d_gold": (r.random.get("metrics", {}).get("delta_gold_prob") or {}).get("mean"),
                "changed": r.metrics.get("changed"),
            }
        )
    return rows


def run_task(
    model: Any,
    ident: Task,
    held: Task,
    demos: Task,
    k: int,
    base: dict[str, Any],
    kind: str,
    mode: str,
    sweeps: bool,
    n_random: int,
    only: set[str],
) -> list[dict[str, Any]]:
    out = []
    for opts, variants in groups(kind, mode, k, sweeps):
        variants = [v for v in variants if not only or v[0] in only]
        if not variants:
            continue
        keep = any(v[1] for v in variants) and opts.get("method", "ig") == "ig"
        t0 = time.perf_counter()
        result = identify(model, ident, k=k, demos=demos, progress=False, keep_attributions=keep, **base, **opts)
        seconds = time.perf_counter() - t0
        for label, ropts in variants:
            print(f"  {label}", flush=True)
            r = result
            if ropts:
                ro = dict(ropts)
                kk = ro.pop("k", None)
                r = rescore(result, k=kk, **ro) if ro else result.with_k(kk)
            out.append(
                {
                    "method": label,
                    "identify_seconds": seconds,
                    "n_good": len(r.good),
                    "n_bad": len(r.bad),
                    "k": r.config.get("k", k),
                    "rows": eval_rows(model, r, held, demos, n_random),
                }
            )
    return out


def fmt(x: float | None, ci: list[float] | None = None) -> str:
    if x is None:
        return "n/a"
    s = f"{x:+.3f}"
    return s + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


HEADLINE = ("suppress_good", "suppress_bad")


def summary_table(runs: list[dict[str, Any]]) -> list[str]:
    """One line per task x method: Δ gold probability of the two suppressions vs their random sets."""
    out = [
        "## Summary: suppressing the identified set, held-out Δ gold probability [95% interval] (matched random "
        "sets' mean); Δ accuracy",
        "",
        "| task | method | good/bad set size | suppress good | suppress bad |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        for m in run["methods"]:
            cells = []
            for cond in HEADLINE:
                r = next((x for x in m["rows"] if x["condition"] == cond), None)
                if r is None or not r["available"]:
                    cells.append("n/a")
                    continue
                cells.append(f"{fmt(r['d_gold'], r['d_gold_ci'])} ({fmt(r['random_d_gold'])}); acc {r['d_acc']:+.3f}")
            out.append(
                f"| {run['task']} {run['mode']} | {m['method']} | {m['n_good']}/{m['n_bad']} | {cells[0]} | "
                f"{cells[1]} |"
            )
    return out + [""]


def to_markdown(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        "# Controllability: held-out effects of interventions, every method (same harness, same splits)",
        "",
        f"Run {meta.get('date', '?')} (torch {meta.get('torch', '?')}); Δ against the no-intervention baseline, "
        "paired bootstrap 95% intervals; random = matched random sets (same per-layer counts), mean over seeds. "
        "Rows marked ablation/sweep re-form the sets from the same attributions (`rescore`), so their "
        "identify time is the shared attribution run's.",
        "",
    ]
    if meta.get("machine"):
        vs = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        out += [f"Machine: {meta['machine']}; {vs}; {meta.get('torch_threads', '?')} torch thread(s).", ""]
    out += ci.instances_markdown(runs)
    out += summary_table(runs)
    for run in runs:
        out += [
            f"## {run['task']} ({run['mode']}, k={run['k']}, {run['n_identify']} identify / "
            f"{run['n_heldout']} held-out items, base accuracy {run['base_accuracy']:.3f})",
            "",
            "| method | condition | neurons | Δacc | random Δacc | Δgold p | random Δgold p | changed | identify s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for m in run["methods"]:
            for r in m["rows"][1:]:
                if not r["available"]:
                    out.append(
                        f"| {m['method']} | {r['condition']} | | n/a | | n/a | | | {m['identify_seconds']:.1f} |"
                    )
                    continue
                out.append(
                    f"| {m['method']} | {r['condition']} | {r['n_good']}g/{r['n_bad']}b | "
                    f"{fmt(r['d_acc'], r['d_acc_ci'])} | "
                    f"{fmt(r['random_d_acc'])} | {fmt(r['d_gold'], r['d_gold_ci'])} | {fmt(r['random_d_gold'])} | "
                    f"{r['changed']:.2f} | {m['identify_seconds']:.1f} |"
                )
        out.append("")
    return "\n".join(out)


def plot(runs: list[dict[str, Any]], path: Path) -> Path:
    """One panel per task: Δ gold probability (95% interval) of suppressing each method's good and bad set,
    with the matched random sets' mean as a grey tick."""
    from matplotlib.figure import Figure

    ncol = 3
    nrow = -(-len(runs) // ncol)
    fig = Figure(figsize=(6.2 * ncol, 0.26 * max(len(r["methods"]) for r in runs) * nrow + 1.2 * nrow))
    for i, run in enumerate(runs):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        names = [m["method"] for m in run["methods"]]
        for _j, (cond, color, dy) in enumerate(
            (("suppress_good", "tab:blue", -0.18), ("suppress_bad", "tab:red", 0.18))
        ):
            for y, m in enumerate(run["methods"]):
                r = next(x for x in m["rows"] if x["condition"] == cond)
                if not r["available"]:
                    continue
                lo, hi = r["d_gold_ci"] or (r["d_gold"], r["d_gold"])
                ax.errorbar(
                    r["d_gold"],
                    y + dy,
                    xerr=[[r["d_gold"] - lo], [hi - r["d_gold"]]],
                    fmt="o",
                    ms=3,
                    color=color,
                    label=cond.replace("_", " ") if y == 0 else None,
                )
                if r["random_d_gold"] is not None:
                    ax.plot([r["random_d_gold"]] * 2, [y + dy - 0.12, y + dy + 0.12], color="0.5", lw=1.5)
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{run['task']} ({run['mode']}, k={run['k']}, base acc {run['base_accuracy']:.2f})", fontsize=8)
        ax.set_xlabel("held-out Δ gold probability (grey: random sets)", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write(
    runs: list[dict[str, Any]],
    meta: dict[str, Any],
    *,
    run: str,
    out: str | Path | None = None,
    args: argparse.Namespace | None = None,
) -> Path:
    """``<out>/controllability/<run>.{json,md,png}`` (results: ``meta`` and the runs); returns the JSON path."""
    md = to_markdown(runs, meta)
    path = harness.write_result("controllability", run, {**meta, "runs": runs}, args=args, markdown=md, out=out)
    plot(runs, path.with_suffix(".png"))
    print(md)
    return path


def testbed_runs(names: list[str], instances: int, k: int, n_random: int, only: set[str]) -> list[dict[str, Any]]:
    """Every method on ``instances`` independently trained copies of each testbed (config seeds 0 .. N-1)."""
    from dataclasses import replace

    from tl_neuronllm.studies.testbed import TESTBEDS, load_testbed

    runs = []
    for name in names:
        for inst in range(instances):
            tb = load_testbed(replace(TESTBEDS[name], seed=inst))
            ident, held, demos = tb.splits(0)
            print(f"testbed {name} instance {inst}", flush=True)
            base = {"token_format": tb.token_format, "n_shots": 1}
            methods = run_task(tb.model, ident, held, demos, k, base, "testbed", "letter", True, n_random, only)
            runs.append(
                {
                    "task": f"testbed:{name}" + (f"#{inst}" if instances > 1 else ""),
                    "testbed": name,
                    "instance": inst,
                    "seed": inst,
                    "train": {x: tb.stats.get(x) for x in ("converged", "steps", "train_seconds", "heldout_accuracy")},
                    "mode": "letter",
                    "k": k,
                    "n_identify": len(ident),
                    "n_heldout": len(held),
                    "methods": methods,
                    "base_accuracy": methods[0]["rows"][0]["accuracy"],
                }
            )
    return runs


def real_runs(args: argparse.Namespace, only: set[str]) -> list[dict[str, Any]]:
    """SmolLM2 on the real tasks, letter and cloze."""
    model = harness.load_model()
    settings = {
        "letter": (50, {"steps": 4, "ig_rule": "gauss"}),
        "cloze": (500, {"steps": 2, "ig_rule": "gauss", "mode": "cloze", "show_options": False, "n_proxies": 1}),
    }
    runs = []
    for tname in [t for t in args.real_tasks.split(",") if t]:
        task = harness.load_task(tname)  # multiple-choice and classification tasks (imdb, boolq) alike
        ident, held, demos = harness.split(task, args.n_identify, args.n_heldout, seed=args.seed)
        for mode in [m for m in args.real_modes.split(",") if m]:
            k, base = settings[mode]
            print(f"smollm2 {tname} {mode}", flush=True)
            sweeps = tname in args.real_sweeps.split(",")
            methods = run_task(model, ident, held, demos, k, base, "real", mode, sweeps, args.real_n_random, only)
            runs.append(
                {
                    "task": f"smollm2:{tname}",
                    "mode": mode,
                    "k": k,
                    "n_identify": len(ident),
                    "n_heldout": len(held),
                    "methods": methods,
                    "base_accuracy": methods[0]["rows"][0]["accuracy"],
                }
            )
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = harness.parser(__doc__, task=None)
    ap.set_defaults(threads=1)
    ap.add_argument("--testbeds", default="facts-small,facts-lured-small,relations-small")
    ap.add_argument("--instances", type=int, default=3, help="independently trained copies of each testbed")
    ap.add_argument("--k", type=int, default=25, help="set size K on the testbeds")
    ap.add_argument("--n-random", type=int, default=5, help="random sets per condition (testbeds)")
    ap.add_argument("--real", action="store_true", help="also SmolLM2 on real tasks (letter and cloze)")
    ap.add_argument("--real-tasks", default="commonsenseqa,siqa,openbookqa")
    ap.add_argument("--real-modes", default="letter,cloze")
    ap.add_argument("--real-n-random", type=int, default=3)
    ap.add_argument("--real-sweeps", default="commonsenseqa", help="real tasks that also get the z and K sweeps")
    ap.add_argument("--n-identify", type=int, default=24)
    ap.add_argument("--n-heldout", type=int, default=40)
    ap.add_argument("--methods", default="", help="comma-separated labels (default: all)")
    ap.add_argument("--merge", nargs="+", default=None, help="JSON files of earlier runs to merge into one table")
    args = ap.parse_args(argv)
    if args.instances < 1:
        ap.error(f"--instances must be >= 1, got {args.instances}")
    if args.run is None:
        parts = ["testbeds" + ("_instances" if args.instances > 1 else "")] if args.testbeds else []
        args.run = "merged" if args.merge else "_".join(parts + (["real"] if args.real else [])) or "empty"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        parts = [harness.read_json(p) for p in args.merge]
        runs = [r for p in parts for r in p["runs"]]
        meta = {k: v for k, v in parts[0].items() if k != "runs"}  # the runs' machine, versions, threads
        meta.update(
            date=max(p.get("date", "") for p in parts), wall_seconds=sum(p.get("wall_seconds", 0.0) for p in parts)
        )
        write(runs, meta, run=args.run, out=args.out, args=args)
        return
    harness.setup(args)
    meta = run_meta()
    only = {m.strip() for m in re.split(r",(?![^()]*\))", args.methods) if m.strip()}  # commas inside (...) stay
    t_start = time.perf_counter()
    runs = testbed_runs([t for t in args.testbeds.split(",") if t], args.instances, args.k, args.n_random, only)
    if args.real:
        runs += real_runs(args, only)
    meta["wall_seconds"] = time.perf_counter() - t_start
    write(runs, meta, run=args.run, out=args.out, args=args)


def run_meta() -> dict[str, Any]:
    """Date, versions, machine and thread count of a run (from :func:`benchmarks.harness.environment`), for
    the markdown's header."""
    env = harness.environment()
    return {
        "date": env["date"][:10],
        "torch": env["versions"]["torch"],
        "versions": env["versions"],
        "machine": f"{env['machine']}, {env['cpu_count']} cores, {env['cpu']}, torch kernels {env['cpu_capability']}",
        "torch_threads": env["torch_threads"],
    }


if __name__ == "__main__":
    main()
