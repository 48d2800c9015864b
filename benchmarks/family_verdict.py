"""Issue 12's verdict per task family from ``controllability.py`` runs on SmolLM2 (one JSON per task).

    python benchmarks/family_verdict.py benchmarks/results/controllability_smollm2_{boolq,commonsenseqa,...}.json

For each task, on held-out Δ gold probability (paired bootstrap 95% intervals, as the runs report them):

* **good neurons**: the shipped default's "suppress good" against every other method's: a **win** when the
  default's interval lies entirely below the other's (suppressing good neurons should lower the gold
  probability: further is stronger), a **loss** when entirely above, a **tie** when the intervals overlap
  (the issue's rule). "At least as strong as every baseline" = no loss.
* **bad neurons**: the shipped default's "suppress bad" against its matched random sets: **beats random**
  when its interval lies entirely above the random sets' mean Δ (suppressing bad neurons should raise it).

Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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


def verdict(run: dict[str, Any]) -> dict[str, Any]:
    methods = {m["method"]: m for m in run["methods"]}
    d = methods[DEFAULT]
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
        if name == DEFAULT:
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


def markdown(vs: list[dict[str, Any]]) -> str:
    seen = {p for v in vs for p in v["good"]}
    peers = [p for p in BASELINES if p in seen] + sorted(seen - set(BASELINES))
    lines = [
        "# Issue 12 verdict per task family (SmolLM2-135M-Instruct, held-out Δ gold probability, 95% intervals)",
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", help="controllability JSON files")
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "controllability_smollm2_families")
    )
    args = ap.parse_args()
    runs = [run for f in args.runs for run in json.loads(Path(f).read_text())["runs"]]
    vs = [verdict(run) for run in runs]
    Path(args.out + ".json").write_text(json.dumps(vs, indent=2))
    md = markdown(vs) + "\n".join(measures(runs))
    Path(args.out + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
