"""Checks and choices of the ``tl-neuronllm`` command that depend on its arguments and its output folder:
options that cannot be combined (checked before the model is built), the result an evaluation measured,
and an explanation saved by an earlier ``report``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tl_neuronllm.cli.args import DEFAULTS, UNSET
from tl_neuronllm.provenance import __version__

__all__ = [
    "EXPLANATION_JSON",
    "RESCORED_DIR",
    "check_identify_args",
    "reported_result",
    "run_record",
    "saved_explanation",
    "writable_out",
]

#: The re-formed result that ``evaluate --z/--ambiguity`` evaluated (``report`` reports it with its evaluation).
RESCORED_DIR = "result_rescored"
#: The explanation ``report`` wrote beside ``explanation.csv`` (reused by ``report --no-explain``).
EXPLANATION_JSON = "explanation.json"


def check_identify_args(args: argparse.Namespace) -> None:
    """Refuse ``--select-cv`` with ``--z`` or ``--ambiguity`` (the selection would silently replace them),
    then fill in the defaults of the options not given.

    Raises:
        SystemExit: with a one-line message, for the combination.
    """
    given = [f"--{name}" for name in ("z", "ambiguity") if getattr(args, name, UNSET) is not UNSET]
    if getattr(args, "select_cv", False) and given:
        raise SystemExit(
            f"tl-neuronllm: error: --select-cv chooses --z and --ambiguity itself; drop {' and '.join(given)} "
            "or --select-cv"
        )
    for name in ("z", "ambiguity"):
        if getattr(args, name, UNSET) is UNSET:
            setattr(args, name, DEFAULTS[name])


def reported_result(out: Path, result: Any, evaluation: Any) -> Any:
    """The result to report with ``evaluation``: ``result`` (with the evaluation's ``k``), or the re-formed
    result that ``evaluate --z/--ambiguity`` saved, whichever the evaluation measured.

    Raises:
        MismatchError: when neither is the evaluated result (the evaluation is of another run).
    """
    if evaluation is None:
        return result
    k = evaluation.result_info.get("k")
    candidates = [result.with_k(k) if k is not None and k != result.config.get("k") else result]
    if (out / RESCORED_DIR).is_dir():
        from tl_neuronllm.result.neuron_result import NeuronResult

        candidates.append(NeuronResult.load(out / RESCORED_DIR))
    want = evaluation.result_info.get("result_fingerprint")
    for r in candidates:
        if want is None or r.fingerprint() == want:
            return r
    evaluation.check_of(candidates[0])  # raises, naming what differs
    return candidates[0]


def saved_explanation(out: Path, result: Any) -> Any:
    """The explanation an earlier ``report`` saved in ``out`` when it is of ``result``'s neurons, else ``None``."""
    f = out / EXPLANATION_JSON
    if not f.exists():
        return None
    from tl_neuronllm.explain.explanation import Explanation

    explanation = Explanation.load_json(f)
    return explanation if [x.label for x in explanation.neurons] == result.labels("both") else None


def run_record(args: argparse.Namespace) -> dict[str, Any]:
    """What ``run.json`` records of an identify run: model, task, split and options."""
    return {
        "model": args.model,
        "task": args.task,
        "mode": args.mode,
        "show_options": args.show_options,
        "cloze_listing": getattr(args, "cloze_listing", False),
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
        "device": args.device,
        "dtype": args.dtype,
        "version": __version__,
    }


def writable_out(out: str) -> Path:
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
