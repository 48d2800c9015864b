"""Controllability across independently trained testbed instances: the spread, and wins that hold on all of them.

A trained testbed is one draw: training on another CPU (other vectorised kernels, another MKL code path)
or with another seed takes another path and ends at other weights, and the held-out effects move with
it (see ``benchmarks/results/testbed_repro/facts-small.md``). ``python -m benchmarks controllability --instances N`` trains
each testbed N times (``TestbedConfig.seed`` 0 .. N-1: the facts, the distractors, the initialisation
and the training data are drawn again; seed 0 is the shipped testbed) and runs every method on each.
This module summarises those runs:

* :func:`across_instances`: per testbed x method x condition, the per-instance Δ accuracy and Δ gold
  probability with their 95% intervals, and their mean, sd, min and max across instances.
* :func:`verdict`: method A against method B (or against A's matched random sets) on one condition:
  **win** when A's effect is further in the expected direction (method.md's: suppressing good neurons
  should lower the scores, suppressing bad ones raise them) than B's on *every* instance, **loss** when
  it is less far on every instance, **tie** otherwise (mixed, or equal somewhere). ``separated`` counts
  the instances whose two 95% intervals do not overlap in the winner's favour (a stricter reading).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tl_neuronllm.evaluation.conditions import EXPECTED_DIRECTION

METRIC_KEYS = {"d_acc": ("d_acc_ci", "random_d_acc"), "d_gold": ("d_gold_ci", "random_d_gold")}
HEADLINE = ("suppress_good", "suppress_bad")
DEFAULT_METHOD = "neuronllm (defaults: z=1%, strict filter)"
PEERS = ("grad x act", "activation contrast", "knowledge neurons", "qr-neuron", "random")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample sd (0 for one value), min and max."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values)}


def across_instances(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group the runs of one testbed's instances by method and condition.

    Args:
        runs: Runs as ``controllability.py`` writes them, with ``testbed`` and ``instance`` keys.

    Returns:
        One entry per testbed x method x condition (in first-seen order) with ``instances``, the
        per-instance ``d_acc`` / ``d_gold`` (with ``*_ci`` and ``random_*``) lists, ``n_good`` / ``n_bad``
        lists, and ``stats`` (``spread`` of each metric and of its random means) when the condition is
        available on every instance (``available`` False otherwise).

    Raises:
        ValueError: if a testbed has two runs of the same instance.
    """
    by_tb: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if "instance" in run:
            by_tb.setdefault(run["testbed"], []).append(run)
    out = []
    for tb, tb_runs in by_tb.items():
        inst = [r["instance"] for r in tb_runs]
        if len(set(inst)) != len(inst):
            raise ValueError(f"testbed {tb!r} has repeated instances {inst}")
        tb_runs = sorted(tb_runs, key=lambda r: r["instance"])
        keys: dict[tuple[str, str], list[dict[str, Any] | None]] = {}
        for i, run in enumerate(tb_runs):
            for m in run["methods"]:
                for row in m["rows"]:
                    if row["condition"] == "baseline":
                        continue
                    slot = keys.setdefault((m["method"], row["condition"]), [None] * len(tb_runs))
                    slot[i] = {**row, "n_good": m["n_good"], "n_bad": m["n_bad"]}
        for (method, cond), rows in keys.items():
            ok = all(r is not None and r["available"] for r in rows)
            e: dict[str, Any] = {
                "testbed": tb,
                "method": method,
                "condition": cond,
                "instances": [r["instance"] for r in tb_runs],
                "available": ok,
            }
            if ok:
                got = [r for r in rows if r is not None]
                e["n_good"] = [r["n_good"] for r in got]
                e["n_bad"] = [r["n_bad"] for r in got]
                e["stats"] = {}
                for metric, (ci, rnd) in METRIC_KEYS.items():
                    e[metric] = [r[metric] for r in got]
                    e[ci] = [r[ci] for r in got]
                    e[rnd] = [r[rnd] for r in got]
                    e["stats"][metric] = spread(e[metric])
                    if all(v is not None for v in e[rnd]):
                        e["stats"][rnd] = spread(e[rnd])
            out.append(e)
    return out


def _find(agg: Sequence[dict[str, Any]], testbed: str, method: str, cond: str) -> dict[str, Any] | None:
    return next((e for e in agg if (e["testbed"], e["method"], e["condition"]) == (testbed, method, cond)), None)


def verdict(
    agg: Sequence[dict[str, Any]], testbed: str, cond: str, a: str, b: str, metric: str = "d_gold"
) -> dict[str, Any] | None:
    """A against B (``b="random"``: A's matched random sets) on one testbed and condition.

    Returns:
        ``{"result": "win" | "tie" | "loss", "diffs": [...], "separated": k}`` (``diffs``: A minus B in
        the expected direction, per instance; ``separated``: instances whose 95% intervals do not overlap,
        against the random sets: whose A interval excludes their mean), or ``None`` when either is not available on every instance.

    Raises:
        KeyError: for a condition without an expected direction.
    """
    sign = EXPECTED_DIRECTION[cond]
    ea = _find(agg, testbed, a, cond)
    if ea is None or not ea["available"]:
        return None
    ci_key, rnd_key = METRIC_KEYS[metric]
    if b == "random":
        if any(v is None for v in ea[rnd_key]):
            return None
        vb, cb = ea[rnd_key], [None] * len(ea[rnd_key])
    else:
        eb = _find(agg, testbed, b, cond)
        if eb is None or not eb["available"]:
            return None
        vb, cb = eb[metric], eb[ci_key]
    diffs = [sign * (x - y) for x, y in zip(ea[metric], vb)]
    result = "win" if all(d > 0 for d in diffs) else "loss" if all(d < 0 for d in diffs) else "tie"
    separated = 0  # instances whose two intervals do not overlap (then the points are ordered alike)
    for ca, cbi, y in zip(ea[ci_key], cb, vb):
        lo_b, hi_b = (y, y) if cbi is None else (cbi[0], cbi[1])
        if ca is not None and (ca[1] < lo_b or ca[0] > hi_b):
            separated += 1
    return {"result": result, "diffs": diffs, "separated": separated}


NEURONLLM = (
    DEFAULT_METHOD,
    "neuronllm defaults, the method's IG (16 Riemann steps)",
    "neuronllm z=0.05 amb=0.25",
    "ablation: no ambiguity filter",
)


def _cell(e: dict[str, Any], metric: str) -> str:
    ci_key, _ = METRIC_KEYS[metric]
    per = ", ".join(f"{v:+.3f}" + (f" [{c[0]:+.2f}, {c[1]:+.2f}]" if c else "") for v, c in zip(e[metric], e[ci_key]))
    st = e["stats"][metric]
    return f"{st['mean']:+.3f} ± {st['sd']:.3f} ({st['min']:+.3f} … {st['max']:+.3f}) | {per}"


def _train_table(runs: Sequence[dict[str, Any]]) -> list[str]:
    out = [
        "| testbed | instance (config seed) | converged | training steps | training s | "
        "base accuracy on the held-out split |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        if "instance" not in r:
            continue
        t = r.get("train", {})
        secs = t.get("train_seconds")
        out.append(
            f"| {r['testbed']} | {r['instance']} | {t.get('converged')} | {t.get('steps')} | "
            f"{'?' if secs is None else f'{secs:.0f}'} | {r['base_accuracy']:.3f} |"
        )
    return out


def _wins_table(agg: Sequence[dict[str, Any]], metric: str) -> tuple[list[str], dict[str, dict[str, int]]]:
    testbeds = list(dict.fromkeys(e["testbed"] for e in agg))
    out = [
        "| testbed | condition | NeuronLLM variant | " + " | ".join(PEERS) + " |",
        "|---|---|---|" + "---|" * len(PEERS),
    ]
    tally: dict[str, dict[str, int]] = {p: {"win": 0, "tie": 0, "loss": 0} for p in PEERS}
    for tb in testbeds:
        for cond in HEADLINE:
            for a in NEURONLLM:
                cells = []
                for b in PEERS:
                    v = verdict(agg, tb, cond, a, b, metric)
                    if v is None:
                        cells.append("n/a")
                        continue
                    cells.append(f"{v['result']} ({v['separated']}/{len(v['diffs'])})")
                    if a == DEFAULT_METHOD:
                        tally[b][v["result"]] += 1
                if any(c != "n/a" for c in cells):
                    out.append(f"| {tb} | {cond} | {a} | " + " | ".join(cells) + " |")
    return out, tally


def instances_markdown(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The across-instances sections of the report (empty when no testbed has two instances)."""
    agg = across_instances(runs)
    if not agg or max(len(e["instances"]) for e in agg) < 2:
        return []
    out = [
        "## Across independently trained instances",
        "",
        "Each testbed was trained once per config seed (instance); seed 0 is the shipped testbed. Per method "
        "and condition: mean ± sd (min … max) across instances, then each instance's value [paired bootstrap "
        "95% interval].",
        "",
    ]
    out += _train_table(runs) + [""]
    for tb in dict.fromkeys(e["testbed"] for e in agg):
        out += [
            f"### {tb}",
            "",
            "| method | condition | neurons (good/bad per instance) | Δ accuracy: mean ± sd (min … max) | "
            "per instance | Δ gold p: mean ± sd (min … max) | per instance | random Δ gold p (mean over instances) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in agg:
            if e["testbed"] != tb or e["condition"] not in HEADLINE:
                continue
            if not e["available"]:
                out.append(f"| {e['method']} | {e['condition']} | | n/a | | | | |")
                continue
            sizes = " ".join(f"{g}/{b}" for g, b in zip(e["n_good"], e["n_bad"]))
            rnd = e["stats"].get("random_d_gold")
            rnd_s = "" if rnd is None else f"{rnd['mean']:+.3f}"
            out.append(
                f"| {e['method']} | {e['condition']} | {sizes} | {_cell(e, 'd_acc')} | {_cell(e, 'd_gold')} | {rnd_s} |"
            )
        out.append("")
    for metric, name in (("d_gold", "Δ gold probability"), ("d_acc", "Δ accuracy")):
        table, tally = _wins_table(agg, metric)
        out += [
            f"### Wins on {name}: NeuronLLM against each peer, every instance",
            "",
            "win: further in the expected direction than the peer on every instance; loss: less far on every "
            "instance; tie: otherwise. (k/N): instances whose two 95% intervals do not overlap (against "
            "random: whose interval excludes the random sets' mean).",
            "",
            *table,
            "",
            "Shipped default ("
            + DEFAULT_METHOD
            + ") over both conditions and all testbeds: "
            + "; ".join(f"vs {p}: {t['win']} W / {t['tie']} T / {t['loss']} L" for p, t in tally.items()),
            "",
        ]
    return out
