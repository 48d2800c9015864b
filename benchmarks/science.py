"""Issue 21: is it task-level? Every method at equal K on the same held-out items, activation-matched random
controls, specificity (an unrelated task and language-model loss on plain passages), balanced accuracy, paired
Holm-corrected verdicts, and the ablations P = 1 vs P = 3, ACE vs ``mean_ig``, strict vs no filter.

    python -m benchmarks science --task commonsenseqa --n-identify 24 --n-heldout 60 --k 500 --n-random 20

One identification run per attribution (the default IG with ``keep_attributions``; ``mean_ig``, the strict
filter and P = 1 are re-formings of it with ``rescore``, exact; QR-Neuron a re-forming of knowledge neurons' gold
probability IG), every result evaluated at the same K on the same held-out items (label-balanced for
classification tasks). Writes ``benchmarks/results/science/<task>.json`` and ``.md`` (harness schema: date,
versions, threads, git revision) with the wall time of every stage.

``--state DIR`` keeps every finished stage (each identification's result, each evaluation) in ``DIR`` and
reuses it when the same command runs again, so a run longer than one sitting (PIQA: about 70 minutes for ACE's
identification alone on one core) can be stopped and resumed; ``DIR`` records the run's arguments and refuses
another run's. Each method's stages are kept under its name, so runs with different ``--methods`` share a folder:
two processes with some of the methods each (one core each), then one with all of them, which finds every stage
kept and writes the tables. (A method evaluated in another group of methods equals its evaluation in this one up
to float rounding: :func:`tl_neuronllm.evaluate_many` batches the forwards differently.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from tl_neuronllm import EvalResult, NeuronResult, evaluate, evaluate_many, identify, rescore
from tl_neuronllm.data.tasks.balance import balanced_heldout, is_classification
from tl_neuronllm.studies.paired import paired_table

#: Methods and how each is formed: ("identify", method) or ("rescore", source, options).
METHODS: dict[str, tuple[Any, ...]] = {
    "ace": ("identify", "ig"),
    "mean_ig": ("rescore", "ace", {"method": "mean_ig"}),
    "ace_strict": ("rescore", "ace", {"ambiguity": 0.0}),
    "ace_p1": ("rescore", "ace", {"proxies": [0]}),
    "grad_x_act": ("identify", "grad_x_act"),
    "activation_contrast": ("identify", "activation_contrast"),
    "knowledge_neurons": ("identify", "knowledge_neurons"),
    "qr_neuron": ("rescore", "knowledge_neurons", {"method": "qr_neuron"}),
}
#: The default run's prompt: cloze, options not listed, three cloze proxies.
PROMPT = {"mode": "cloze", "show_options": False, "n_proxies": 3}


def parse(argv: list[str] | None) -> Any:
    ap = harness.parser(__doc__, task="commonsenseqa")
    ap.add_argument("--k", type=int, default=500, help="common set size K (default %(default)s)")
    ap.add_argument("--n-random", type=int, default=20, help="random sets per condition (default %(default)s)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    ap.add_argument("--control-task", default=None, help="unrelated task (default: openbookqa, or siqa for it)")
    ap.add_argument("--n-control", type=int, default=30, help="control task held-out items (default %(default)s)")
    ap.add_argument("--n-passages", type=int, default=10, help="control passages (BoolQ) (default %(default)s)")
    ap.add_argument("--interventions", default="suppress_good,suppress_bad", help="conditions (default %(default)s)")
    ap.add_argument("--steps", type=int, default=None, help="IG steps (default: the package's)")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default %(default)s)")
    ap.add_argument(
        "--random-methods",
        default="all",
        help="methods whose rows get the n-random random sets (comma list; default all); the others get none "
        "(their paired comparisons need no random sets)",
    )
    ap.add_argument(
        "--layer-random",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate ace again with layer-matched random sets (default on)",
    )
    ap.add_argument(
        "--control-text", default=None, help="task whose passages are the control text (default boolq; imdb for boolq)"
    )
    ap.add_argument("--state", default=None, help="folder keeping finished stages, reused when run again")
    ap.add_argument(
        "--own-k-only",
        action="store_true",
        help="evaluate only ace at each smaller method's own set size (see own_k_sizes); for --merge into a saved run",
    )
    return ap.parse_args(argv)


#: Arguments that must match for a state folder's stages to be reused (the rest only name outputs or threads).
STATE_ARGS = (
    "task", "n_identify", "n_heldout", "n_shots", "seed", "k", "n_random", "control_task", "n_control",
    "n_passages", "interventions", "steps", "n_boot", "random_methods", "layer_random", "control_text",
)  # fmt: skip


class State:
    """Finished stages of one run in a folder (``None`` folder: nothing kept)."""

    def __init__(self, folder: str | None, args: Any) -> None:
        self.dir = None if folder is None else Path(folder)
        if self.dir is None:
            return
        mine = {k: getattr(args, k, None) for k in STATE_ARGS}
        f = self.dir / "args.json"
        if f.exists():
            saved = json.loads(f.read_text())
            diff = sorted(k for k in mine if saved.get(k) != mine[k])  # a folder's other keys: not compared
            if diff:
                raise SystemExit(f"--state {folder} holds another run's stages (differs in {diff}); use a new folder")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(mine, indent=1))

    def _path(self, kind: str, name: str) -> Path | None:
        return None if self.dir is None else self.dir / kind / name.replace("@", "_at_")

    def result(self, name: str) -> Any:
        p = self._path("identify", name)
        return NeuronResult.load(p) if p is not None and p.exists() else None

    def keep_result(self, name: str, r: Any) -> None:
        p = self._path("identify", name)
        if p is not None:
            r.save(p)

    def evaluation(self, name: str) -> Any:
        p = self._path("evaluate", name)
        return EvalResult.load(p) if p is not None and (p / "evaluation.json").exists() else None

    def own_k_names(self) -> list[str]:
        """The ``ace@k<size>`` evaluations this folder keeps."""
        if self.dir is None or not (self.dir / "evaluate").is_dir():
            return []
        found = [p.name.replace("_at_", "@") for p in (self.dir / "evaluate").iterdir()]
        return sorted(n for n in found if n.startswith("ace@k") and n[len("ace@k") :].isdigit())

    def keep_evaluation(self, name: str, ev: Any) -> None:
        p = self._path("evaluate", name)
        if p is not None:
            ev.save(p)


def splits(args: Any) -> dict[str, Any]:
    """Identification, held-out (label-balanced for classification tasks) and demonstration items; the control
    task's held-out items and demonstrations; the control passages."""
    task = harness.load_task(args.task)
    n_demo = args.n_shots * PROMPT["n_proxies"]
    ident, held, demos = task.split(args.n_identify, None, n_demo=n_demo, seed=args.seed)
    assert held is not None and demos is not None
    if is_classification(task):
        used = [it.id for it in ident.items] + [it.id for it in demos.items]
        held = balanced_heldout(task, args.n_heldout, seed=args.seed, exclude=used)
    else:
        held = held.subset(range(min(args.n_heldout, len(held))))
    cname = args.control_task or ("siqa" if args.task == "openbookqa" else "openbookqa")
    ctask = harness.load_task(cname)
    _, cheld, cdemos = ctask.split(1, args.n_control, n_demo=n_demo, seed=args.seed + 1)
    tname = args.control_text or ("imdb" if args.task == "boolq" else "boolq")
    passages = [str(it.context) for it in harness.load_task(tname, limit=200).items if it.context]
    return {
        "ident": ident,
        "held": held,
        "demos": demos,
        "control": cheld,
        "control_demos": cdemos,
        "control_name": cname,
        "passages": passages[-args.n_passages :],
        "control_text_name": tname,
    }


def identify_all(
    model: Any, data: dict[str, Any], args: Any, names: list[str], state: State | None = None
) -> tuple[dict[str, Any], dict]:
    """Every requested method's result (and each identification's wall time; ``"kept"`` for one ``state`` had)."""
    state = state or State(None, args)
    opts: dict[str, Any] = dict(PROMPT, progress=False, demos=data["demos"], k=args.k)
    if args.steps:
        opts["steps"] = args.steps
    sources = {METHODS[n][1] for n in names if METHODS[n][0] == "rescore"}
    need = set(names) | sources
    out: dict[str, Any] = {}
    seconds: dict[str, float | str] = {}
    for name in [n for n in METHODS if n in need]:
        how = METHODS[name]
        t0 = time.perf_counter()
        if how[0] == "identify":
            kept = state.result(name)
            if kept is not None:
                out[name] = kept
                seconds[name] = "kept"
                print(f"  {name}: kept in {state.dir}", flush=True)
                continue
            keep = name in sources or name == "ace"
            out[name] = identify(model, data["ident"], method=how[1], keep_attributions=keep, **opts)
            state.keep_result(name, out[name])
        else:
            out[name] = rescore(out[how[1]], **how[2])
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"  {name}: {seconds[name]} s", flush=True)
    return {n: out[n] for n in names}, seconds


def own_k_sizes(sizes: dict[str, int], k: int) -> dict[str, int]:
    """Methods whose good set at ``k`` is smaller than the default's (knowledge neurons and QR-Neuron select only
    the neurons their thresholds pass) -> that size: each is compared with ``ace@k<size>``, the default's top
    ``size`` good neurons, so that a comparison is never 500 neurons against 150."""
    ace = sizes.get("ace", k)
    return {n: s for n, s in sizes.items() if n != "ace" and "@" not in n and 0 < s < ace}


def evaluate_all(
    model: Any, results: dict[str, Any], data: dict[str, Any], args: Any, state: State | None = None
) -> tuple[dict, dict]:
    """Every result at K on the held-out items with the controls; the three-proxy results in one pass, P = 1 in
    another; the default again with layer-matched random sets (each reused from ``state`` where it has it)."""
    state = state or State(None, args)
    eo: dict[str, Any] = dict(
        demos=data["demos"],
        k=args.k,
        n_boot=args.n_boot,
        interventions=tuple(args.interventions.split(",")),
        control=data["control"],
        control_demos=data["control_demos"],
        control_text=data["passages"],
        progress=False,
        seed=args.seed,
    )
    seconds: dict[str, float | str] = {}
    evals: dict[str, Any] = {}
    with_random = set(results) if args.random_methods == "all" else set(args.random_methods.split(","))
    p3 = [n for n in results if results[n].identify_config().n_proxies == PROMPT["n_proxies"]]
    only_own_k = getattr(args, "own_k_only", False)
    for label, group, n_random in (
        ()
        if only_own_k
        else (
            ("P3", [n for n in p3 if n in with_random], args.n_random),
            ("P3_no_random", [n for n in p3 if n not in with_random], 0),
        )
    ):
        kept = {n: state.evaluation(n) for n in group}
        evals.update({n: ev for n, ev in kept.items() if ev is not None})
        group = [n for n in group if kept[n] is None]
        if not group:
            seconds[f"evaluate_{label}"] = "kept"
            continue
        t0 = time.perf_counter()
        for n, ev in zip(
            group, evaluate_many(model, [results[n] for n in group], data["held"], **eo, n_random=n_random)
        ):
            evals[n] = ev
            state.keep_evaluation(n, ev)
        seconds[f"evaluate_{label}"] = round(time.perf_counter() - t0, 1)
        print(f"  evaluate {group}: {seconds[f'evaluate_{label}']} s", flush=True)
    singles = [n for n in results if n not in p3] + (
        ["ace@layer_random"] if "ace" in results and args.layer_random else []
    )
    sizes = {n: len(r.with_k(args.k).good) for n, r in results.items()}
    own_k = sorted(set(own_k_sizes(sizes, args.k).values())) if "ace" in results else []
    singles = ([] if only_own_k else singles) + [f"ace@k{size}" for size in own_k]
    for n in singles:
        kept_ev = state.evaluation(n)
        if kept_ev is not None:
            evals[n], seconds[f"evaluate_{n}"] = kept_ev, "kept"
            continue
        t0 = time.perf_counter()
        if n == "ace@layer_random":
            lay = {**eo, "control": None, "control_text": None, "n_random": args.n_random}
            evals[n] = evaluate(model, results["ace"], data["held"], random_match="layer", **lay)
        elif n.startswith("ace@k"):  # the default at a smaller method's size: its good set only, no controls
            own = {**eo, "k": int(n[len("ace@k") :]), "interventions": ("suppress_good",), "control": None}
            evals[n] = evaluate(model, results["ace"], data["held"], **{**own, "control_text": None, "n_random": 0})
        else:
            evals[n] = evaluate(
                model, results[n], data["held"], **eo, n_random=args.n_random if n in with_random else 0
            )
        state.keep_evaluation(n, evals[n])
        seconds[f"evaluate_{n}"] = round(time.perf_counter() - t0, 1)
        print(f"  evaluate {n}: {seconds[f'evaluate_{n}']} s", flush=True)
    return evals, seconds


def _ci(c: Any) -> list[float] | None:
    return [round(float(x), 4) for x in c] if c else None


def row_summary(ev: Any) -> dict[str, Any]:
    """Per condition: the on-task changes with intervals, rank p, the random sets and the controls."""
    out: dict[str, Any] = {"baseline": {k: round(v, 4) for k, v in ev.baseline.metrics.items()}}
    for r in ev.rows[1:]:
        if not r.available:
            out[r.name] = {"available": False, "note": r.note}
            continue
        rnd = r.random.get("metrics", {}) if r.random else {}
        c = r.control or {}
        out[r.name] = {
            "n_good": r.n_good,
            "n_bad": r.n_bad,
            "delta": {k: round(v, 4) for k, v in r.delta.items()},
            "delta_ci": {k: _ci(v) for k, v in r.delta_ci.items()},
            "rank_p": r.rank_p,
            "random_delta_gold_prob": {k: round(rnd["delta_gold_prob"][k], 4) for k in ("mean", "sd", "min", "max")}
            if "delta_gold_prob" in rnd
            else None,
            "match_ratio": (r.random or {}).get("match_ratio"),
            "changed": round(r.metrics["changed"], 4),
            "control": c,
        }
    return out


def markdown(res: dict[str, Any], args: Any) -> str:
    lines = [
        f"# Is it task-level? {args.task} (issue 21)",
        "",
        f"SmolLM2-135M-Instruct, cloze with cloze proxies (P = 3, or the option count when smaller), {res['n_identify']} identification / "
        f"{res['n_heldout']} held-out items (control: {res['control_task']} {res['n_control']} items, "
        f"{res['n_passages']} {res['control_text']} passages), K = {args.k}, {args.n_random} activation-matched random "
        f"sets ({'every method' if args.random_methods == 'all' else 'for ' + args.random_methods}).",
        "",
        "| method | condition | Δgold p [95% CI] | rank p | Δacc | Δbal acc | off-task Δgold p | Δloss/token | specificity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    f = lambda x: "" if x is None or x != x else f"{x:+.3f}"
    for m, rows in res["methods"].items():
        for cond, r in rows.items():
            if cond == "baseline" or not r.get("delta"):
                continue
            ci = r["delta_ci"]["gold_prob"]
            c = r["control"]
            spec = c.get("specificity")
            lines.append(
                f"| {m} | {cond} | {f(r['delta']['gold_prob'])} [{f(ci[0])}, {f(ci[1])}] | "
                f"{r['rank_p'].get('gold_prob', float('nan')):.3g} | {f(r['delta']['accuracy'])} | "
                f"{f(r['delta'].get('balanced_accuracy'))} | {f(c.get('task', {}).get('delta', {}).get('gold_prob'))} | "
                f"{f(c.get('text', {}).get('delta_loss'))} | {'' if spec is None or spec != spec else f'{spec:.2f}'} |"
            )
    lines += ["", "Paired, Holm-corrected (reference: ace; per-item Δgold p, expected direction):", ""]
    lines.append(res["paired_markdown"])
    if res.get("paired_own_k_markdown"):
        lines += [
            "",
            "Methods with fewer than K good neurons against ace's top neurons at their size (Holm over these):",
            "",
        ]
        lines.append(res["paired_own_k_markdown"])
    lines += ["", f"Wall time: {res['seconds']}"]
    return "\n".join(lines) + "\n"


def tables(per_item: dict[str, Any], task: str, args: Any, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """The paired, Holm-corrected verdict tables (gold probability and correctness) from saved per-item values:
    every method against ace at K, and every method smaller than K (``sizes``: method -> good set size at K)
    against ``ace@k<size>`` where that evaluation is among ``per_item``."""
    from types import SimpleNamespace

    conds = tuple(args.interventions.split(","))
    ev = {n: SimpleNamespace(task=task, per_item=v) for n, v in per_item.items()}
    same = {n: e for n, e in ev.items() if "@" not in n}
    table = paired_table(same, "ace", conditions=conds, n_boot=args.n_boot, seed=args.seed, k=args.k)  # type: ignore[arg-type]
    acc = paired_table(same, "ace", conditions=conds, metric="correct", n_boot=args.n_boot, seed=args.seed)  # type: ignore[arg-type]
    out = {"paired": table.to_dict(), "paired_accuracy": acc.to_dict(), "paired_markdown": table.to_markdown()}
    pairs = {n: f"ace@k{size}" for n, size in own_k_sizes(sizes or {}, args.k).items() if f"ace@k{size}" in ev}
    if pairs:
        own = paired_table(ev, pairs, conditions=("suppress_good",), n_boot=args.n_boot, seed=args.seed, k=None)  # type: ignore[arg-type]
        out.update(paired_own_k=own.to_dict(), paired_own_k_markdown=own.to_markdown())
    return out


def method_sizes(res: dict[str, Any]) -> dict[str, int]:
    """Method -> its good set size at K, from a saved run's rows."""
    return {
        n: rows["suppress_good"]["n_good"]
        for n, rows in res["methods"].items()
        if "n_good" in rows.get("suppress_good", {})
    }


def _saved_args(doc: dict[str, Any]) -> argparse.Namespace:
    """A saved run's arguments; one an older run's file lacks takes today's default (each option added since
    defaults to what runs did before it)."""
    return argparse.Namespace(**{**vars(parse([])), **doc["args"]})


def _retable(doc: dict[str, Any]) -> None:
    """Re-make a saved run's verdict tables (in ``doc``) from its per-item values."""
    args = _saved_args(doc)
    res = doc["results"]
    res.setdefault("control_text", "boolq")
    res.update(tables(res["per_item"], res["task"], args, method_sizes(res)))


def _write(path: str, doc: dict[str, Any], note: str) -> None:
    """Write a saved run's JSON and markdown in place: its own environment record kept, every merge (``merged``)
    and ``note`` added to the markdown's first line."""
    args = _saved_args(doc)
    Path(path).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    merges = [
        f"{', '.join(m['methods'])} merged {m['date']} (git {m['git']}) from a state folder"
        for m in doc.get("merged", [])
    ]
    head = f"<!-- {'; '.join([harness.markdown_head('science', doc['run'], doc['environment']), *merges, note])} -->\n"
    Path(path).with_suffix(".md").write_text(head + markdown(doc["results"], args).rstrip("\n") + "\n")


def retable(path: str) -> None:
    """Recompute the verdict tables of a saved run from its per-item values (no model time) and rewrite its
    JSON and markdown in place, keeping the run's own environment record and noting the re-tabling."""
    doc = json.loads(Path(path).read_text())
    _retable(doc)
    env = harness.environment()
    doc["retabled"] = {"date": env["date"], "git": env["git"], "min_diff": doc["results"]["paired"]["min_diff"]}
    _write(path, doc, f"verdict tables re-made {env['date']} (git {env['git']}) from the saved per-item values")
    print(f"re-tabled {path}", flush=True)


def identification_summary(ace: Any, name: str, r: Any, k: int) -> dict[str, Any]:
    """One result's identification statistics, layer-0 share of its good set and Jaccard overlap of its good
    and bad sets with ace's at ``k`` (``ace`` None: no overlap)."""
    out: dict[str, Any] = {
        "stats": {key: r.stats.get(key) for key in ("accuracy", "consistent_accuracy", "gold_prob")},
        "layer0_share": sum(x.layer == 0 for x in r.with_k(k).good) / max(len(r.with_k(k).good), 1),
        "jaccard": {},
    }
    if ace is not None:
        a, b = ace.with_k(k), r.with_k(k)
        for role in ("good", "bad"):
            sa = {(x.layer, x.neuron) for x in getattr(a, role)}
            sb = {(x.layer, x.neuron) for x in getattr(b, role)}
            out["jaccard"][f"{name}:{role}"] = len(sa & sb) / max(len(sa | sb), 1) if sa or sb else None
    return out


#: Largest difference allowed between a merged evaluation's baseline per-item gold probabilities and the saved
#: run's (the same items and model; ``evaluate_many`` batches forwards differently, so float rounding only).
MERGE_TOL = 1e-4


def merge(state_dir: str, path: str) -> list[str]:
    """Add the methods a ``--state`` folder has evaluated, and a saved run lacks, to that run's result file and
    re-make its verdict tables (no model time): for methods run in another session than the rest. The folder
    must hold the same run's stages (every argument in :data:`STATE_ARGS` equal) and its evaluations the same
    held-out items with the same baseline (within :data:`MERGE_TOL`). Returns the methods added.

    Raises:
        SystemExit: if the folder is not a state folder, holds another run's stages, or an evaluation's items or
            baseline differ from the saved run's.
    """
    doc = json.loads(Path(path).read_text())
    res = doc["results"]
    args = _saved_args(doc)
    folder = Path(state_dir)
    if not (folder / "args.json").is_file():
        raise SystemExit(f"--merge: {folder} is not a --state folder (it has no args.json)")
    saved = json.loads((folder / "args.json").read_text())
    diff = sorted(k for k in STATE_ARGS if saved.get(k) != getattr(args, k, None))
    if diff:
        raise SystemExit(f"--merge: {folder} holds another run's stages than {path} (differs in {diff})")
    state = State(state_dir, args)
    ref = res["per_item"]["ace"]
    results: dict[str, Any] = {}
    for name in METHODS:  # sources first: METHODS lists each source before its re-formings
        how = METHODS[name]
        results[name] = state.result(name) if how[0] == "identify" else None
        if how[0] == "rescore" and results.get(how[1]) is not None:
            results[name] = rescore(results[how[1]], **how[2])
    added = []
    for name in [*METHODS, "ace@layer_random", *state.own_k_names()]:
        ev = state.evaluation(name)
        if name in res["per_item"] or ev is None:
            continue
        pi = ev.per_item
        if pi["item_ids"] != ref["item_ids"]:
            raise SystemExit(f"--merge: {name}'s evaluation in {folder} ran on other held-out items than {path}")
        gap = max(
            abs(a - b)
            for a, b in zip(pi["conditions"]["baseline"]["gold_prob"], ref["conditions"]["baseline"]["gold_prob"])
        )
        if gap > MERGE_TOL:
            raise SystemExit(
                f"--merge: {name}'s baseline gold probabilities differ from {path}'s by {gap:.2g} (> {MERGE_TOL})"
            )
        res["methods"][name] = row_summary(ev)
        res["per_item"][name] = pi
        r = results.get(name)
        if r is not None:
            summary = identification_summary(results.get("ace"), name, r, args.k)
            res["identification_stats"][name] = summary["stats"]
            res["layer0_share"][name] = summary["layer0_share"]
            res["jaccard_vs_ace"].update(summary["jaccard"])
        added.append(name)
    if not added:
        print(f"--merge: {folder} has no evaluated method that {path} lacks; nothing written", flush=True)
        return added
    env = harness.environment()
    doc.setdefault("merged", []).append(
        {"methods": added, "state": str(folder), "date": env["date"], "git": env["git"], "versions": env["versions"]}
    )
    _retable(doc)
    _write(
        path,
        doc,
        "verdict tables re-made",
    )
    print(f"merged {added} into {path}", flush=True)
    return added


def main(argv: list[str] | None = None) -> dict[str, Any]:
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if argv[:1] == ["--retable"]:
        for path in argv[1:]:
            retable(path)
        return {}
    if argv[:1] == ["--merge"]:
        if len(argv) != 3:
            raise SystemExit("usage: python -m benchmarks science --merge STATE_DIR RESULT.json")
        return {"merged": merge(argv[1], argv[2])}
    args = parse(argv)
    harness.setup(args)
    t_all = time.perf_counter()
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    data = splits(args)
    t0 = time.perf_counter()
    model = harness.load_model()
    seconds: dict[str, Any] = {"load_model": round(time.perf_counter() - t0, 1)}
    print(f"science {args.task}: identify {names}", flush=True)
    state = State(args.state, args)
    results, s_id = identify_all(model, data, args, names, state)
    seconds["identify"] = s_id
    evals, s_ev = evaluate_all(model, results, data, args, state)
    seconds["evaluate"] = s_ev
    ace = results.get("ace")
    if ace is None or args.own_k_only:  # every table compares with ace: this run only made (or found) its stages
        kept = f" and kept in {args.state}" if args.state else ""
        why = "--own-k-only" if ace is not None else "no ace among the methods"
        print(f"{why}: stages done{kept}; no tables written", flush=True)
        return {"seconds": seconds, "evaluated": sorted(evals)}
    summaries = {n: identification_summary(ace, n, r, args.k) for n, r in results.items()}
    seconds["total"] = round(time.perf_counter() - t_all, 1)
    res = {
        "task": args.task,
        "n_identify": len(data["ident"]),
        "n_heldout": len(data["held"]),
        "heldout_balanced": is_classification(data["held"]),
        "control_task": data["control_name"],
        "n_control": len(data["control"]),
        "n_passages": len(data["passages"]),
        "control_text": data["control_text_name"],
        "identification_stats": {n: s["stats"] for n, s in summaries.items()},
        "layer0_share": {n: s["layer0_share"] for n, s in summaries.items()},
        "jaccard_vs_ace": {key: v for s in summaries.values() for key, v in s["jaccard"].items()},
        "methods": {n: row_summary(ev) for n, ev in evals.items()},
        "per_item": {n: ev.per_item for n, ev in evals.items()},
        "seconds": seconds,
    }
    res.update(tables({n: ev.per_item for n, ev in evals.items()}, args.task, args, method_sizes(res)))
    path = harness.write_result(
        "science", args.run or args.task, res, args=args, markdown=markdown(res, args), out=args.out
    )
    print(f"wrote {path}", flush=True)
    return res


if __name__ == "__main__":
    main()
