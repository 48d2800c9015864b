"""What ``tl-neuronllm`` says before it runs: "did you mean ..." for unknown options and subcommands, options
without a subcommand refused with the usage, the no-argument run announced, and the settings a run uses
(with the reason wherever the command's default differs from the library's)."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any

from tl_neuronllm.cli.args import DEFAULT_OUT, DEFAULTS, UNSET

__all__ = ["LIBRARY_DEFAULTS", "check_argv", "parse_argv", "settings_lines", "subparsers"]

#: Where the command's default differs from ``identify()``'s: the library's value and why the command differs.
LIBRARY_DEFAULTS: dict[str, tuple[Any, str]] = {
    "mode": (
        "letter",
        "SmolLM2-135M-Instruct, the default model, answers lettered questions at about chance; scored by the "
        "likelihood of each option's text it has the skill (docs/results.md)",
    ),
    "k": (100, "the cloze-mode sets measured on SmolLM2 in docs/results.md (about 1% of its 46,080 neurons)"),
}

NO_SUBCOMMAND = (
    "tl-neuronllm: no subcommand given: running `tl-neuronllm run` with its defaults (SmolLM2-135M-Instruct on "
    f"CommonsenseQA, minutes on a CPU, output in ./{DEFAULT_OUT}/); `tl-neuronllm --help` lists the subcommands"
)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name."""
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _unknown_option(sub: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[str, str | None] | None:
    """The first ``--option`` in ``argv`` that ``sub`` does not know (nor as a prefix), with the closest known."""
    known = [s for a in sub._actions for s in a.option_strings if s.startswith("--")]
    for tok in argv:
        if tok == "--":
            break
        if not tok.startswith("--"):
            continue
        name = tok.split("=", 1)[0]
        if name in known or any(k.startswith(name) for k in known):  # argparse accepts unique prefixes
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return name, (close[0] if close else None)
    return None


def check_argv(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], str | None]:
    """``(argv to parse, None)``, or ``(argv, message)`` when the command must stop with exit status 2 (the
    message is printed after the usage). No arguments: ``run`` with its defaults, announced on stderr."""
    subs = subparsers(parser)
    if not argv:
        return ["run"], None
    first = argv[0]
    if first in ("-h", "--help", "--version"):
        return argv, None
    if first.startswith("-"):
        return argv, (
            f"tl-neuronllm: error: options need a subcommand: `tl-neuronllm run {' '.join(argv)}` (identify + "
            "evaluate + report), or identify / evaluate / report"
        )
    if first not in subs:
        close = difflib.get_close_matches(first, list(subs), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return argv, f"tl-neuronllm: error: unknown subcommand {first!r}{hint} (choose from {', '.join(subs)})"
    bad = _unknown_option(subs[first], argv[1:])
    if bad is not None:
        name, close = bad
        hint = f"; did you mean {close}?" if close else ""
        return argv, f"tl-neuronllm {first}: error: unknown option {name}{hint} (tl-neuronllm {first} --help)"
    return argv, None


def _value(v: Any) -> str:
    return "none" if v is None else str(v)


def settings_lines(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The settings of a run, one per line: each option's value, marked as the default or given, with the
    library's default and the reason where the command's differs."""
    sub = subparsers(parser).get(args.command)
    defaults = {a.dest: a.default for a in (sub._actions if sub else []) if a.dest != "help"}
    skip = {"command", "quiet", "help", "version"}
    lines = [f"tl-neuronllm {args.command}: settings"]
    width = max((len(k) for k in vars(args)), default=8)
    for key, v in vars(args).items():
        if key in skip or key not in defaults or v is argparse.SUPPRESS:
            continue
        if v is UNSET:  # --z / --ambiguity not given: filled in after the checks
            v = DEFAULTS.get(key)
            given = False
        else:
            given = v != defaults[key]
        note = "given" if given else "default"
        if key in ("show_options", "n_proxies") and v is None:
            note = "default: from the mode (3 proxies, options listed; cloze: 1 proxy, not listed)"
        elif key in ("device",) and v is None:
            note = "default: as recorded in run.json, else cuda when there is a GPU, else cpu"
        elif key in ("dtype",) and v is None:
            note = "default: as recorded in run.json, else float32"
        elif not given and key in LIBRARY_DEFAULTS and DEFAULTS.get(key) == v:
            lib, why = LIBRARY_DEFAULTS[key]
            note = f"default here; identify() uses {lib}: {why}"
        lines.append(f"  {key.replace('_', '-'):<{width}}  {_value(v)}  ({note})")
    return lines


def parse_argv(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """The parsed arguments after the checks of :func:`check_argv`, or the exit status 2 when they refuse (the
    usage and the message printed on stderr); the settings are printed unless ``--quiet``."""
    announce = not argv
    argv, refusal = check_argv(parser, argv)
    if refusal is not None:
        sub = subparsers(parser).get(argv[0]) if argv else None
        print((sub or parser).format_usage().rstrip(), file=sys.stderr)
        print(refusal, file=sys.stderr)
        return 2
    if announce:
        print(NO_SUBCOMMAND, file=sys.stderr)
    args = parser.parse_args(argv)
    if not getattr(args, "quiet", False) and args.command:
        print("\n".join(settings_lines(args, parser)), file=sys.stderr if args.progress else sys.stdout, flush=True)
    return args
