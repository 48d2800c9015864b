"""Issue 12's verdict per task family from ``controllability.py`` runs on SmolLM2 (one JSON per task).

    python -m benchmarks family_verdict benchmarks/results/controllability/smollm2_{boolq,commonsenseqa,...}.json
    python -m benchmarks family_verdict --default "neuronllm (0.5 default: z=10%, no filter)" \
        --cv-real benchmarks/results/cv_real/commonsenseqa.json benchmarks/results/controllability/smollm2_*.json \
        --run smollm2_families_0.5

Runs of one task, mode and held-out size (the same split) are merged, so a later run of one method joins the
earlier run of the others. ``--cv-real`` adds the rows of ``cv_real.py`` runs whose split matches (its
CV-chosen setting, labelled as the 0.5 default when it is z = 10% without filter).

For each task, on held-out Δ gold probability (paired bootstrap 95% intervals, as the runs report them):

* **good neurons**: the shipped default's "suppress good" against every other method's: a **win** when the
  default's interval lies entirely below the other's (suppressing good neurons should lower the gold
  probability: further is stronger), a **loss** when entirely above, a **tie** when the intervals overlap
  (the issue's rule). "At least as strong as every baseline" = no loss.
* **bad neurons**: the shipped default's "suppress bad" against its matched random sets: **beats random**
  when its interval lies entirely above the random sets' mean Δ (suppressing bad neurons should raise it).

Reads result files of either layout (the harness's, or the files written before it). Writes
``results/family_verdict/<run>.{md,json}`` (run ``smollm2_families``). No model time.
"""

from __future__ import annotations

from typing import Any

from benchmarks import harness

DEFAULT = "neuronllm (defaults)"
#: The peers the issue names; the other rows are NeuronLLM's own variants (ablations), shown but not counted.
BASELINES = ("grad x act", "activation contrast", "knowledge neurons", "qr-neuron")
FAMILY = {
    "openbookqa": "knowledge",
    "mmlu": "knowledge",
    "commonsenseqa": "commonsense",
    "siqa": "commonsense",
    "piqa": "commonsense",
    "imdb": "sentiment",
    "boolq": "reading comprehension",
}


def _row(method: dict[str, Any], cond: str) -> dict[str, Any] | None:
    r = next((x for x in method["rows"] if x["condition"] == cond), None)
    return r if r is not None and r["available"] and r.get("d_gold_ci") else None


def compare(a: list[float], b: list[float]) -> str:
    """``a`` vs ``b`` for good neurons (lower is stronger): win / loss / tie by interval overlap."""
    if a[1] < b[0]:
        return "win"
    if a[0] > b[1]:
        return "loss"
    return "tie"


SHIPPED = "neuronllm (0.5 default: z=10%, no filter)"
_CV_CONDS = ("suppress_good", "suppress_bad", "enhance_bad_suppress_good", "enhance_good_suppress_bad")


def cv_real_methods(cv: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``cv_real.py`` JSON's CV-chosen variant as a controllability method entry."""
    out = []
    for label, v in cv["variants"].items():
        if label.startswith("CV-chosen"):
            s = cv["cv_setting"]
            label = SHIPPED if s == {"z": 0.1, "ambiguity": None} else f"{label} (select_cv)"
        else:
            continue  # its fixed settings are the controllability run's "neuronllm (defaults)" and no-filter ablation
        rows = [{"condition": "baseline", "available": True, "accuracy": v["base_accuracy"], "d_acc": None}]
        for cond in _CV_CONDS:
            r = v.get(cond)
            if r is None:
                rows.append({"condition": cond, "available": False})
                continue
            rows.append(
                {
                    "condition": cond,
                    "available": True,
                    "d_gold": r["d_gold"],
                    "d_gold_ci": r["d_gold_ci"],
                    "d_acc": r["d_acc"],
                    "random_d_gold": r["random_d_gold"],
                }
            )
        out.append({"method": label, "rows": rows})
    return out


def merge_runs(runs: list[dict[str, Any]], cv_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per (task, mode, held-out size): the union of the methods (the first run's entry wins)."""
    merged: dict[tuple[str, str, int], dict[str, Any]] = {}
    for run in runs:
        key = (run["task"].split(":")[-1], run["mode"], run["n_heldout"])
        if key not in merged:
            merged[key] = {**run, "methods": list(run["methods"])}
            continue
        have = {m["method"] for m in merged[key]["methods"]}
        merged[key]["methods"] += [m for m in run["methods"] if m["method"] not in have]
    for cv in cv_runs:
        key = (cv["task"], "cloze", cv["n_heldout"])
        if key in merged:
            have = {m["method"] for m in merged[key]["methods"]}
            merged[key]["methods"] += [m for m in cv_real_methods(cv) if m["method"] not in have]
    return list(merged.values())


def verdict(run: dict[str, Any], default: str = DEFAULT) -> dict[str, Any] | None:
    methods = {m["method"]: m for m in run["methods"]}
    if default not in methods:
        return None
    d = methods[default]
    good, bad = _row(d, "suppress_good"), _row(d, "suppress_bad")
    task = run["task"].split(":")[-1]
    out: dict[str, Any] = {
        "task": task,
        "family": FAMILY.get(task, "?"),
        "mode": run["mode"],
        "n_heldout": run["n_heldout"],
        "base_accuracy": next(x["accuracy"] for x in d["rows"] if x["condition"] == "baseline"),
        "good": {},
        "bad": None,
    }
    for name, m in methods.items():
        if name == default:
            continue
        other = _row(m, "suppress_good")
        if good is None or other is None:
            continue
        out["good"][name] = {
            "result": compare(good["d_gold_ci"], other["d_gold_ci"]),
            "default": [good["d_gold"], *good["d_gold_ci"]],
            "other": [other["d_gold"], *other["d_gold_ci"]],
        }
    if bad is not None:
        out["bad"] = {
            "d_gold": [bad["d_gold"], *bad["d_gold_ci"]],
            "random_mean": bad["random_d_gold"],
            "beats_random": bad["d_gold_ci"][0] > bad["random_d_gold"],
        }
    out["good_no_loss"] = all(v["result"] != "loss" for k, v in out["good"].items() if k in BASELINES)
    return out


CONDS = (
    ("suppress_good", "suppress good"),
    ("suppress_bad", "suppress bad"),
    ("enhance_bad_suppress_good", "Degrade"),
    ("enhance_good_suppress_bad", "Enhance"),
)


def measures(runs: list[dict[str, Any]]) -> list[str]:
    """Per task and method: Δ gold probability, Δ accuracy and RAC (Δ accuracy / baseline accuracy; in cloze
    mode with one proxy per item consistent accuracy is accuracy, so RCC = RAC) of each condition."""
    lines = [
        "## Every method, the paper's measures and ours (held-out; Δ gold p / Δ acc / RAC)",
        "",
        "| task | held-out | method | " + " | ".join(label for _, label in CONDS) + " |",
        "|---|---:|---|" + "---|" * len(CONDS),
    ]
    for run in runs:
        for m in run["methods"]:
            base = next(x["accuracy"] for x in m["rows"] if x["condition"] == "baseline")
            cells = []
            for cond, _ in CONDS:
                r = next((x for x in m["rows"] if x["condition"] == cond), None)
                if r is None or not r["available"] or r["d_acc"] is None:
                    cells.append("n/a")
                    continue
                rac = f"{r['d_acc'] / base:+.2f}" if base else "n/a"
                cells.append(f"{r['d_gold']:+.3f} / {r['d_acc']:+.3f} / {rac}")
            lines.append(
                f"| {run['task'].split(':')[-1]} | {run['n_heldout']} | {m['method']} | " + " | ".join(cells) + " |"
            )
    return lines + [""]


def markdown(vs: list[dict[str, Any]], default: str = DEFAULT) -> str:
    seen = {p for v in vs for p in v["good"]}
    peers = [p for p in BASELINES if p in seen] + sorted(seen - set(BASELINES))
    lines = [
        "# Issue 12 verdict per task family (SmolLM2-135M-Instruct, held-out Δ gold probability, 95% intervals)",
        "",
        f"The default here: **{default}**.",
        "",
        "Good neurons: the shipped default's *suppress good* against each method's (win = its interval entirely "
        "below, loss = entirely above, tie = overlap). Bad neurons: the default's *suppress bad* interval "
        "entirely above its matched random sets' mean. *No loss* counts the four baselines (grad x act, activation "
        "contrast, knowledge neurons, QR-Neuron); the ablations are NeuronLLM's own variants, shown for reference.",
        "",
        "| family | task | mode | held-out | base acc | default: suppress good | "
        + " | ".join(peers)
        + " | no loss | default: suppress bad (random mean) | beats random |",
        "|---|---|---|---:|---:|---|" + "---|" * len(peers) + "---|---|---|",
    ]
    for v in vs:
        g = next(iter(v["good"].values()))["default"] if v["good"] else None
        cells = [
            f"{v['good'][p]['result']} ({v['good'][p]['other'][0]:+.3f})" if p in v["good"] else "n/a" for p in peers
        ]
        b = v["bad"]
        lines.append(
            f"| {v['family']} | {v['task']} | {v['mode']} | {v['n_heldout']} | {v['base_accuracy']:.3f} | "
            + (f"{g[0]:+.3f} [{g[1]:+.2f}, {g[2]:+.2f}]" if g else "n/a")
            + " | "
            + " | ".join(cells)
            + f" | {'yes' if v['good_no_loss'] else 'no'} | "
            + (
                f"{b['d_gold'][0]:+.3f} [{b['d_gold'][1]:+.2f}, {b['d_gold'][2]:+.2f}] ({b['random_mean']:+.3f})"
                if b
                else "n/a"
            )
            + f" | {'yes' if b and b['beats_random'] else 'no'} |"
        )
    best: dict[str, dict[str, Any]] = {}  # per family, the run with the most held-out items decides
    for v in vs:
        if v["family"] not in best or v["n_heldout"] > best[v["family"]]["n_heldout"]:
            best[v["family"]] = v
    fams = set(best)
    good_f = {f for f, v in best.items() if v["good_no_loss"]}
    bad_f = {f for f, v in best.items() if v["bad"] and v["bad"]["beats_random"]}
    lines += [
        "",
        f"Families measured: {len(fams)} (per family, the run with the most held-out items counts). Good neurons at least as strong as every baseline (ties allowed): "
        f"{len(good_f)} of {len(fams)} ({', '.join(sorted(good_f)) or 'none'}). Bad neurons beat matched random "
        f"sets: {len(bad_f)} of {len(fams)} ({', '.join(sorted(bad_f)) or 'none'}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None, run="smollm2_families")
    ap.add_argument("runs", nargs="+", help="controllability JSON files")
    ap.add_argument("--default", default=DEFAULT, help=f"the method label judged as the default ({DEFAULT!r})")
    ap.add_argument(
        "--cv-real", action="append", default=[], help="a cv_real.py JSON whose rows join the matching run (repeatable)"
    )
    args = ap.parse_args(argv)
    runs = [run for f in args.runs for run in harness.read_json(f)["runs"]]
    runs = merge_runs(runs, [harness.read_json(f) for f in args.cv_real])
    vs = [v for v in (verdict(run, args.default) for run in runs) if v is not None]
    md = markdown(vs, args.default) + "\n".join(measures(runs))
    harness.write_result("family_verdict", args.run, vs, args=args, markdown=md, out=args.out)
    print(md)


if __name__ == "__main__":
    main()
