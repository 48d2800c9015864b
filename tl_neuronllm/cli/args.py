"""The ``tl-neuronllm`` argument parser: the defaults of the no-argument run, option types that refuse bad
values with one line, and the arguments of each subcommand (see :mod:`tl_neuronllm.cli.app`)."""

from __future__ import annotations

import argparse
from typing import Any

from tl_neuronllm.provenance import __version__

__all__ = ["DEFAULTS", "DEFAULT_OUT", "UNSET", "build_parser", "method_option", "parse_num"]

DEFAULT_OUT = "tl_neuronllm_out"

#: Defaults of the no-argument run, chosen by measurement on SmolLM2-135M-Instruct (see the README).
DEFAULTS: dict[str, Any] = {
    "model": "smollm2",
    "task": "commonsenseqa",
    "mode": "cloze",
    "show_options": None,  # cloze: not listed (SmolLM2 is at or below chance with them listed); letter: listed
    "n_identify": 24,
    "n_heldout": 200,
    "n_shots": 1,
    "n_proxies": None,  # 3; 1 in cloze mode without listed options (cloze proxies exist but triple the cost; issue 21)
    "method": "ig",
    "steps": 8,  # smallest Gauss step count whose top-500 sets overlap 64 steps' by >= 0.95 (docs/ig_steps.md)
    "ig_rule": "gauss",
    "k": 500,
    "z": 0.1,  # with no filter: what select_cv chose where the model has the skill (the method: 0.01 and 0)
    "ambiguity": None,
    "split_seed": 0,
    "seed": 0,
    "n_random": 5,
    "factor": 2.0,
    "n_boot": 2000,
}


#: Default of the options that, when given to ``evaluate``, re-form the sets (``--z``, ``--ambiguity``).
UNSET = object()


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


def parse_num(x: str | float | int) -> int | float:
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
        from tl_neuronllm.validate import check_count_or_fraction

        try:
            return check_count_or_fraction(name, parse_num(x), min_count=1)
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


def _folder(x: str) -> str:
    if not x.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty string (it would write into the current one)")
    return x


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=_folder, default=DEFAULT_OUT, help=f"output directory (default ./{DEFAULT_OUT}/)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        help="torch CPU threads (default: 1 if the machine is already busy, else torch's default)",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of permutations, random sets and bootstrap")


def _device_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` of the model (every subcommand that may load it)."""
    p.add_argument(
        "--device",
        default=None,
        help="device of the model: auto (cuda when there is a GPU, else cpu), cpu, cuda, cuda:1, mps, ... "
        "(default: as recorded in run.json, else auto)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16", "float64"),
        default=None,
        help="parameter dtype of the model (default: as recorded in run.json, else float32)",
    )


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULTS["model"],
        help="model: smollm2 (default: SmolLM2-135M-Instruct, offline), smollm2-letter (with the letter adapter, see "
        "docs/organism.md), a Hugging Face model id (needs the hub) or "
        "a local folder written by save_pretrained (loaded with transformers, run as a TransformerBridge)",
    )


def _method_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=method_option,
        help="an option of the method's own (repeatable; VALUE read as JSON, else as a string)",
    )


def _listing_args(p: argparse.ArgumentParser) -> None:
    """Whether and how the options are listed in cloze prompts."""
    p.add_argument(
        "--show-options",
        dest="show_options",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cloze mode: list the lettered options in the prompt (default: no; SmolLM2 scores worse with them listed)",
    )
    p.add_argument(
        "--cloze-listing",
        dest="cloze_listing",
        action="store_true",
        help="cloze mode without --show-options: list the options unlettered, in each proxy's order (default: no)",
    )


def _identify_args(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    _model_arg(p)
    p.add_argument(
        "--task",
        default=d["task"],
        help=f"real task (mmlu, openbookqa, piqa, siqa, commonsenseqa, imdb, boolq) or a .jsonl/.csv file "
        f"(default {d['task']})",
    )
    p.add_argument("--mode", choices=("letter", "cloze"), default=d["mode"], help=f"answer mode (default {d['mode']})")
    _listing_args(p)
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
        help="proxies per item (default 3; 1 in cloze mode without listed options, where each proxy varies "
        "the instruction template and demonstration instead of the option letters)",
    )
    p.add_argument(
        "--method", default=d["method"], help="attribution: ig (default), grad_x_act, activation, or a baseline"
    )
    _method_option_arg(p)
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
        default=UNSET,  # the default is filled in after checking that --select-cv is not given with it
        help=f"per-item candidates of each sign: a fraction < 1 of all neurons or a count (default {d['z']})",
    )
    p.add_argument(
        "--ambiguity",
        type=_ambiguity,
        default=UNSET,
        help="ambiguity filter: 0 strict (the method's), rho in (0, 0.5], or none (default)",
    )
    p.add_argument(
        "--select-cv",
        action="store_true",
        help="choose --z and --ambiguity (not to be given with it) per task with select_cv on 4 folds of the identification items (forward "
        "passes only; held-out items untouched); writes selection/selection.json",
    )
    p.add_argument(
        "--keep-attributions",
        action="store_true",
        help="keep per-item attributions in the result so `evaluate --z/--ambiguity` can re-form the sets",
    )
    p.add_argument("--split-seed", type=int, default=d["split_seed"], help="seed of the identify/held-out/demo split")
    p.add_argument(
        "--cache",
        default=None,
        help="cache directory for the model and data (default: see tl_neuronllm.data.wheels.cache_dir)",
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
            default=UNSET,
            help="re-form the sets with this per-item candidate size (needs identify --keep-attributions)",
        )
        p.add_argument(
            "--ambiguity",
            type=_ambiguity,
            default=UNSET,
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
    _device_args(p_run)
    _identify_args(p_run)
    _evaluate_args(p_run, heldout=False)
    _report_args(p_run)
    p_id = sub.add_parser("identify", help="find the good and bad neurons")
    _common(p_id)
    _device_args(p_id)
    _identify_args(p_id)
    p_ev = sub.add_parser("evaluate", help="evaluate the interventions on the held-out items")
    _common(p_ev)
    _device_args(p_ev)
    _evaluate_args(p_ev, heldout=True)
    p_rep = sub.add_parser("report", help="draw the figures, explain the neurons and write report.md and report.html")
    _common(p_rep)
    _device_args(p_rep)
    _report_args(p_rep)
    return parser


def method_option(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` of ``--method-option`` as ``(name, value)``; the value is read as JSON when it parses
    (``3``, ``0.5``, ``true``, ``[1, 2]``), else kept as the string.

    Raises:
        argparse.ArgumentTypeError: without ``=`` or with an empty name.
    """
    import json

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--method-option takes NAME=VALUE, got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        return name.strip(), value
