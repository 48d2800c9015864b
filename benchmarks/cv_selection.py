"""Issue 12, parts 4 and 5 on the small testbeds: cross-validated setting vs fixed ones, and stability.

    python -m benchmarks cv_selection [--testbeds facts-small,relations-small,facts-lured-small] [--run NAME]

Per testbed (split ``tb.splits(0)``): exact IG (the method's defaults, 3 proxies, k = 25) with
``keep_attributions=True``; then, re-formed without the model, the method's fixed defaults (z = 1%, strict
filter), the hand-picked setting of the controllability benchmark (z = 0.05, rho = 0.25), no filter
(z = 0.05), and the setting :func:`tl_neuronllm.select_cv` chooses on 4 folds of the identification items
(objective ``both``; the held-out split is not passed to it). Each is evaluated on the held-out items (5
matched random sets). Stability: :func:`tl_neuronllm.studies.stability.stability_curve` of the default and the
CV-chosen setting over the number of identification items. Writes ``results/cv_selection/<run>.{md,json}``
(run ``testbeds``).

Internals used: ``studies.stability.stability_curve`` / ``curve_markdown`` (the curve over item counts; the
public ``stability`` is one point of it) and ``studies.testbed.load_testbed``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks import harness
from tl_neuronllm import evaluate, identify, rescore, select_cv
from tl_neuronllm.studies.stability import curve_markdown, stability_curve

FIXED = {
    "paper defaults (z=0.01, strict)": {"z": 0.01, "ambiguity": 0.0},
    "hand-picked (z=0.05, rho=0.25)": {"z": 0.05, "ambiguity": 0.25},
    "no filter (z=0.05)": {"z": 0.05, "ambiguity": None},
}


def effects(model: Any, res: Any, held: Any, demos: Any, n_random: int) -> dict[str, Any]:
    ev = evaluate(model, res, held, demos=demos, n_random=n_random, n_boot=1000, progress=False)
    out = {"base_accuracy": ev.baseline.metrics["accuracy"], "n_good": len(res.good), "n_bad": len(res.bad)}
    for name in ("suppress_good", "suppress_bad", "enhance_good_suppress_bad", "enhance_bad_suppress_good"):
        r = ev.row(name)
        if not r.available:
            out[name] = None
            continue
        rnd = r.random.get("metrics", {})
        out[name] = {
            "d_acc": r.delta["accuracy"],
            "d_gold": r.delta["gold_prob"],
            "d_gold_ci": r.delta_ci["gold_prob"],
            "RAC": r.relative["RAC"],
            "RCC": r.relative["RCC"],
            "random_d_acc": rnd["delta_accuracy"]["mean"],
            "random_d_gold": rnd["delta_gold_prob"]["mean"],
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None, run="testbeds")
    ap.set_defaults(threads=1)
    ap.add_argument("--testbeds", default="facts-small,relations-small,facts-lured-small")
    ap.add_argument("--k", type=int, default=25)
    ap.add_argument("--n-random", type=int, default=5)
    args = ap.parse_args(argv)
    harness.setup(args)
    from tl_neuronllm.studies.testbed import load_testbed

    runs, curves = [], {}
    for name in [t for t in args.testbeds.split(",") if t]:
        t0 = time.perf_counter()
        tb = load_testbed(name)
        ident, held, demos = tb.splits(0)
        base = identify(
            tb.model, ident, k=args.k, demos=demos, token_format=tb.token_format, keep_attributions=True, progress=False
        )
        t_ident = time.perf_counter() - t0
        t1 = time.perf_counter()
        cv = select_cv(tb.model, base, ident, demos=demos, n_folds=4)
        t_cv = time.perf_counter() - t1
        variants = {label: rescore(base, **s) for label, s in FIXED.items()}
        variants[f"CV-chosen ({', '.join(f'{k}={v}' for k, v in cv.setting.items())})"] = cv.result
        rows = {label: effects(tb.model, r, held, demos, args.n_random) for label, r in variants.items()}
        # subsets of at most half the items (two subsets of m of n share m*m/n items on average, so larger
        # subsets agree by construction), then the bootstrap of all items
        sizes = sorted({max(2, len(ident) // 8), max(2, len(ident) // 4), max(2, len(ident) // 2)})
        for label, r in (("paper defaults", variants["paper defaults (z=0.01, strict)"]), ("CV-chosen", cv.result)):
            curves[f"{name}, {label}"] = stability_curve(r, sizes + [None], n_resamples=30)  # type: ignore[list-item]
        runs.append(
            {
                "testbed": name,
                "n_identify": len(ident),
                "n_heldout": len(held),
                "k": args.k,
                "identify_s": t_ident,
                "cv_s": t_cv,
                "cv_setting": cv.setting,
                "cv_table": cv.to_markdown(),
                "variants": rows,
            }
        )
        print(
            json.dumps(
                {"testbed": name, "cv_setting": cv.setting, "identify_s": round(t_ident, 1), "cv_s": round(t_cv, 1)}
            ),
            flush=True,
        )
    results = {"runs": runs, "stability": {k: [s.summary() for s in v] for k, v in curves.items()}}
    md = [f"# Cross-validated setting vs fixed ones, testbeds {args.testbeds} (k = {args.k})", ""]
    f = lambda x: "n/a" if x is None else f"{x:+.3f}"
    md += [
        "| testbed | setting | good / bad | suppress good: Δacc (Δgold) [random Δgold] | "
        "suppress bad: Δacc (Δgold) [random Δgold] | Degrade RAC | Enhance RAC |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for label, v in run["variants"].items():
            sg, sb = v["suppress_good"], v["suppress_bad"]
            dg, en = v["enhance_bad_suppress_good"], v["enhance_good_suppress_bad"]
            cell = lambda r: "n/a" if r is None else f"{f(r['d_acc'])} ({f(r['d_gold'])}) [{f(r['random_d_gold'])}]"
            md.append(
                f"| {run['testbed']} (base {v['base_accuracy']:.3f}) | {label} | {v['n_good']} / {v['n_bad']} | "
                f"{cell(sg)} | {cell(sb)} | {f(dg and dg['RAC'])} | {f(en and en['RAC'])} |"
            )
    for run in runs:
        md += [
            "",
            f"## {run['testbed']}: validated effects per setting (4 folds of {run['n_identify']} items)",
            "",
            run["cv_table"],
        ]
    md += ["", "## Stability over the number of identification items", "", curve_markdown(curves)]
    harness.write_result("cv_selection", args.run, results, args=args, markdown="\n".join(md), out=args.out)
    print("\n".join(md))


if __name__ == "__main__":
    main()
