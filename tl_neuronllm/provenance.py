"""The package's version string and the versions a run records (one place for both)."""

# pyright: strict

from __future__ import annotations

import importlib.metadata as md
import platform

__version__ = "0.6.0"

#: (key in the record, distribution name) of the libraries whose versions a result records.
LIBRARIES = (
    ("transformer_lens", "transformer-lens"),
    ("transformers", "transformers"),
    ("numpy", "numpy"),
)


def versions() -> dict[str, str]:
    """The versions this process runs with: tl_neuronllm, torch, python, and those of :data:`LIBRARIES`
    that are installed."""
    import torch

    out = {"tl_neuronllm": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
    for key, dist in LIBRARIES:
        try:
            out[key] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


__all__ = ["LIBRARIES", "__version__", "versions"]
