"""Command-line interface (the only place that raises SystemExit)."""

from tl_neuronllm.cli.app import main

__all__ = ["main"]
