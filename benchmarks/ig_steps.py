"""IG steps: how many Gauss-Legendre steps the default run's top-K sets need (issue 21, part 5).

    OMP_NUM_THREADS=1 python -m benchmarks ig_steps measure --threads 1 --state /tmp/ig_steps_state.pt
    python -m benchmarks ig_steps analyze --state /tmp/ig_steps_state.pt

The default cloze setting of ``tl-neuronllm run`` (:data:`tl_neuronllm.cli.args.DEFAULTS`): SmolLM2-135M-Instruct,
CommonsenseQA, its identification items (the CLI's split: 24 items, seed 0, 1 demonstration), cloze mode without
listed options (so 1 proxy; the split from :func:`benchmarks.harness.split`, as the CLI's), IG with ``ig_rule="gauss"``, ACE with z = 10% and no filter, K = 500.

``measure`` computes every identification item's IG at 2 / 4 / 8 / 16 / 64 steps, item by item (items in the
outer loop, the step counts in a rotating order inside, so that the step counts' wall times are taken side by
side under the same machine load), through the same ``run_scoring`` that ``identify`` uses, and saves the
per-item attributions and seconds to ``--state`` after every item (a stopped run keeps its finished items).
``analyze`` forms the sets of each step count from the first ``n`` finished items with the ACE reducer (what
``identify`` / ``rescore`` would return on those items) and writes, against the 64-step reference: the top-K
overlap of the good and of the bad set (``|A & B| / K``), the mean absolute attribution error (and relative
to the reference's mean ``|IG|``) and the IG seconds per item. Writes ``results/ig_steps/<run>.{json,md}``
(run: the task's name by default) with the harness's schema.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import harness

STEPS = (2, 4, 5, 6, 8, 16)
REFERENCE = 64
BUDGET_MB = 4096.0  # IG chunk memory of the sweep (fewer, larger chunks; the scores do not depend on it)
TODAY = "4@1024"  # today's default run: 4 steps at the CPU default chunk budget (1024 MB), timed alongside


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The CLI's default model, identification items, demos and IdentifyConfig (at the reference's steps)."""
    from tl_neuronllm.cli.args import DEFAULTS as D
    from tl_neuronllm.config.identify import IdentifyConfig

    task = harness.load_task(args.task)
    ident, _held, demo = harness.split(task, args.n_identify, args.n_heldout, n_shots=args.n_shots, seed=args.seed)
    if args.n_items is not None:
        ident = ident.subset(list(range(min(args.n_items, len(ident)))), name=ident.name)
    show = D["mode"] == "letter" if D["show_options"] is None else D["show_options"]
    cfg = IdentifyConfig.from_options(
        mode=D["mode"],
        show_options=show,
        n_shots=args.n_shots,
        n_proxies=1 if D["mode"] == "cloze" and not show else 3,
        method=D["method"],
        steps=REFERENCE,
        ig_rule=D["ig_rule"],
        seed=D["seed"],
        z=float(D["z"]),
        ambiguity=D["ambiguity"],
    )
    return harness.load_model(), ident, demo, cfg


def measure(args: argparse.Namespace) -> None:
    """Per-item IG at every step count (and today's default), saved after each item."""
    from tl_neuronllm.attribution.kernels import ensure_exact_ig
    from tl_neuronllm.model.adapter import preserved_model_state
    from tl_neuronllm.pipeline.identify import prepare, ready_adapter, run_scoring

    model, ident, demo, cfg = _setup(args)
    runs: dict[Any, Any] = {s: replace(cfg, steps=s, memory_budget_mb=BUDGET_MB) for s in (*STEPS, REFERENCE)}
    runs[TODAY] = replace(cfg, steps=4, memory_budget_mb=None)
    keys = list(runs)
    prep = prepare(model, ident, cfg, demos=demo)
    state: dict[str, Any] = {"item_ids": prep.item_ids, "steps": (*STEPS, REFERENCE), "attr": {s: [] for s in keys}}
    state.update(seconds={s: [] for s in keys}, config=cfg.to_dict(), budget_mb=BUDGET_MB, started=time.time())
    first = 0
    if args.resume and Path(args.state).exists():  # go on after the saved state's finished items
        state = torch.load(args.state, weights_only=False)
        if state["item_ids"] != prep.item_ids or list(state["seconds"]) != keys:
            raise ValueError(f"{args.state} holds another run's items or step counts; drop --resume")
        first = int(state["n_done"])
    with preserved_model_state(model):
        ready_adapter(prep, cfg, prep.queries)
        ensure_exact_ig(prep.adapter, prep.queries[0][0], rule=cfg.ig_rule, target=cfg.target)  # not timed
        for i in range(first, len(prep.queries)):
            order = keys[i % len(keys) :] + keys[: i % len(keys)]  # rotate which run goes first
            for s in order:
                kept: list[tuple[torch.Tensor, torch.Tensor]] = []
                t0 = time.perf_counter()
                run_scoring(prep.adapter, prep.queries[i : i + 1], runs[s], progress=False, kept=kept)
                state["seconds"][s].append(time.perf_counter() - t0)
                state["attr"][s].append(kept[0][0][0, 0].clone())
            state["n_done"] = i + 1
            torch.save(state, args.state)
            secs = {s: round(state["seconds"][s][-1], 1) for s in keys}
            print(f"item {i + 1}/{len(prep.queries)} {prep.item_ids[i]}: seconds {secs}", flush=True)


def _sets(attr: torch.Tensor, cfg: Any, k: int) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """The good and bad top-k sets the ACE reducer forms from ``attr`` ``[items, n_layers, d_mlp]``."""
    from tl_neuronllm.scoring.ace import select
    from tl_neuronllm.scoring.reducers import reducer_class

    red = reducer_class("ace").create(attr.shape[1], attr.shape[2], cfg.scoring)
    red.update(attr[:, None], torch.ones(attr.shape[0], 1))
    scores = red.result().scores
    return ({(a, b) for a, b, _ in select(scores, k, 1)}, {(a, b) for a, b, _ in select(scores, k, -1)})


def _boot_overlaps(attr: dict[Any, torch.Tensor], cfg: Any, k: int, n_boot: int) -> dict[Any, list[list[float]]]:
    """Per step count, the good and bad overlaps with the reference on ``n_boot`` resamples of the items
    (with replacement, seed 0; the same resamples for every step count)."""
    n = attr[REFERENCE].shape[0]
    g = torch.Generator().manual_seed(0)
    out: dict[Any, list[list[float]]] = {s: [[], []] for s in attr}
    for _ in range(n_boot):
        idx = torch.randint(n, (n,), generator=g)
        ref = _sets(attr[REFERENCE][idx], cfg, k)
        for s, a in attr.items():
            sets = _sets(a[idx], cfg, k)
            for j in (0, 1):
                out[s][j].append(len(sets[j] & ref[j]) / k)
    return out


def analyze(args: argparse.Namespace) -> dict[str, Any]:
    """Overlaps, errors and seconds against the reference, from the saved per-item attributions."""
    from tl_neuronllm.config.identify import IdentifyConfig
    from tl_neuronllm.provenance import versions

    state = torch.load(args.state, weights_only=False)
    n = int(state["n_done"]) if args.n_items is None else min(args.n_items, int(state["n_done"]))
    cfg = IdentifyConfig.from_dict(state["config"], strict=False)
    attr = {s: torch.stack(state["attr"][s][:n]) for s in state["steps"]}
    ref = attr[REFERENCE]
    good_ref, bad_ref = _sets(ref, cfg, args.k)
    ref_abs = float(ref.abs().mean())
    boot = _boot_overlaps(attr, cfg, args.k, args.n_boot)
    q = lambda v: [float(x) for x in torch.tensor(v).quantile(torch.tensor([0.025, 0.975]))]
    rows = []
    for s in state["steps"]:
        good, bad = _sets(attr[s], cfg, args.k)
        err = (attr[s] - ref).abs()
        secs = state["seconds"][s][:n]
        rows.append(
            {
                "steps": s,
                "overlap_good": len(good & good_ref) / args.k,
                "overlap_bad": len(bad & bad_ref) / args.k,
                "overlap_good_ci95": q(boot[s][0]),
                "overlap_bad_ci95": q(boot[s][1]),
                "n_good": len(good),
                "n_bad": len(bad),
                "mean_abs_err": float(err.mean()),
                "rel_mean_abs_err": float(err.mean()) / ref_abs,
                "max_abs_err": float(err.max()),
                "ig_seconds": float(sum(secs)),
                "ig_seconds_per_item": float(sum(secs) / n),
            }
        )
    ok = [r["steps"] for r in rows if r["steps"] != REFERENCE and min(r["overlap_good"], r["overlap_bad"]) >= 0.95]
    ok_lo = [
        r["steps"]
        for r in rows
        if r["steps"] != REFERENCE and min(r["overlap_good_ci95"][0], r["overlap_bad_ci95"][0]) >= 0.95
    ]
    today = None
    if TODAY in state["seconds"]:
        t_today = float(sum(state["seconds"][TODAY][:n]))
        same = (torch.stack(state["attr"][TODAY][:n]) - attr[4]).abs().max()
        today = {
            "steps": 4,
            "memory_budget_mb": "CPU default (1024)",
            "ig_seconds": t_today,
            "ig_seconds_per_item": t_today / n,
            "max_abs_diff_vs_4_steps_at_sweep_budget": float(same),
        }
        for r in rows:
            r["x_today"] = r["ig_seconds"] / t_today
    out = {
        "what": "top-K overlap of the default run's good / bad sets at m Gauss-Legendre IG steps vs 64 steps",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "setup": {
            "model": "SmolLM2-135M-Instruct",
            "task": args.task,
            "n_items": n,
            "n_identify_default": len(state["item_ids"]),
            "item_ids": state["item_ids"][:n],
            "k": args.k,
            "mode": cfg.mode,
            "show_options": cfg.show_options,
            "n_proxies": cfg.n_proxies,
            "ig_rule": cfg.ig_rule,
            "z": cfg.z,
            "ambiguity": cfg.ambiguity,
            "threads": 1,
            "timing": "IG + scoring of one item (run_scoring), step counts interleaved per item in rotating order",
        },
        "memory_budget_mb": state.get("budget_mb"),
        "today_default": today,
        "reference_steps": REFERENCE,
        "reference_mean_abs_attribution": ref_abs,
        "rows": rows,
        "smallest_steps_with_overlap_ge_0.95": min(ok) if ok else None,
        "smallest_steps_with_ci_lower_ge_0.95": min(ok_lo) if ok_lo else None,
        "n_boot": args.n_boot,
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": list(os.getloadavg())},
    }
    harness.write_result("ig_steps", args.run or args.task, out, args=args, markdown=_markdown(out), out=args.out)
    print(_markdown(out))
    return out


def _markdown(out: dict[str, Any]) -> str:
    s = out["setup"]
    lines = [
        f"# IG steps: {s['task']} ({out['date']})",
        "",
        f"{s['model']}, {s['n_items']} identification items (of the default run's {s['n_identify_default']}), "
        f"cloze without listed options (P = {s['n_proxies']}), Gauss-Legendre IG, ACE z = {s['z']}, no filter, "
        f"K = {s['k']}; reference {out['reference_steps']} steps (mean |IG| "
        f"{out['reference_mean_abs_attribution']:.3g}). Overlap = |A & B| / K. Seconds: IG of all items, 1 torch "
        "thread, step counts interleaved per item on a shared 2-core machine.",
        "",
        "| steps | overlap good [95% CI] | overlap bad [95% CI] | mean abs err | rel. mean abs err | IG s / item "
        "| x today |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ci = lambda v: f"{v[0]:.3f}, {v[1]:.3f}"
    for r in out["rows"]:
        ratio = f"{r['x_today']:.2f}" if "x_today" in r else "-"
        lines.append(
            f"| {r['steps']} | {r['overlap_good']:.3f} [{ci(r['overlap_good_ci95'])}] | {r['overlap_bad']:.3f} "
            f"[{ci(r['overlap_bad_ci95'])}] | {r['mean_abs_err']:.3g} | "
            f"{r['rel_mean_abs_err']:.3g} | {r['ig_seconds_per_item']:.1f} | {ratio} |"
        )
    v = out["versions"]
    t = out.get("today_default")
    if t:
        lines += [
            "",
            f"Rows at a {out['memory_budget_mb']:.0f} MB IG chunk budget; x today: IG seconds against today's default "
            f"(4 steps at the CPU default 1024 MB budget: {t['ig_seconds_per_item']:.1f} s / item, timed in the same "
            f"item loop; its attributions equal the 4-step row's to {t['max_abs_diff_vs_4_steps_at_sweep_budget']:.2g}).",
        ]
    lines += [
        "",
        f"Smallest step count with both overlaps >= 0.95: **{out['smallest_steps_with_overlap_ge_0.95']}**; with "
        f"both intervals' lower ends >= 0.95: **{out['smallest_steps_with_ci_lower_ge_0.95']}** (95% intervals: "
        f"{out['n_boot']} resamples of the items, the same for every step count).",
        "",
        "Versions: " + ", ".join(f"{k} {v[k]}" for k in sorted(v)),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("what", choices=("measure", "analyze"))
    ap.add_argument("--state", default="/tmp/ig_steps_state.pt", help="per-item attributions (written by measure)")
    ap.add_argument("--n-items", type=int, default=None, help="first n identification items (default all)")
    ap.add_argument("--resume", action="store_true", help="measure: go on after the items --state holds")
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--n-boot", type=int, default=30, help="item resamples for the overlaps' intervals")
    args = ap.parse_args(argv)
    harness.setup(args)
    (measure if args.what == "measure" else analyze)(args)


if __name__ == "__main__":
    main()
