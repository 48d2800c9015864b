"""The files of a saved :class:`~tl_neuronllm.result.NeuronResult`: names, format, and reading them back
with checks (readable, the right format, state tensors of the right reducer and shape, good/bad lists
that agree with the scores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from .baselines import reducer_class
from .reducers import ACEReducer, Reducer
from .scoring import ACEState, ScoringConfig

TENSORS_FILE = "tensors.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "tl_neuronllm.NeuronResult"
FORMAT = f"{FORMAT_NAME}/1"


class ResultFileError(ValueError):
    """A saved result (or checkpoint) that cannot be used: unreadable, truncated, another format, or
    parts that disagree; the message names the file and what to do."""


_REDO = "save the result again (or rerun identify)"


def read_files(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the JSON metadata of a saved result, checked for readability and format.

    Raises:
        FileNotFoundError: without the files; ResultFileError: unreadable, another format, missing fields.
    """
    ten_f, cfg_f = path / TENSORS_FILE, path / CONFIG_FILE
    if not ten_f.exists() or not cfg_f.exists():
        raise FileNotFoundError(f"{path} does not hold a saved NeuronResult ({TENSORS_FILE} + {CONFIG_FILE})")
    try:
        t = load_file(str(ten_f))
    except Exception as e:  # safetensors raises its own error types for truncated / foreign files
        raise ResultFileError(
            f"{ten_f}: cannot be read as safetensors ({type(e).__name__}: {e}); the file is "
            f"truncated or not a tl_neuronllm result: {_REDO}"
        ) from None
    try:
        meta = json.loads(cfg_f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultFileError(f"{cfg_f}: not valid JSON ({e}); the file is truncated or edited: {_REDO}") from None
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith(FORMAT_NAME + "/"):
        raise ResultFileError(
            f"{cfg_f}: not a tl_neuronllm NeuronResult (format "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})"
        )
    if meta["format"] != FORMAT:
        raise ResultFileError(
            f"{cfg_f}: format {meta['format']!r} is not the one this version reads ({FORMAT!r}); "
            "load it with the tl_neuronllm version that wrote it"
        )
    for key in ("config", "good", "bad"):
        if key not in meta:
            raise ResultFileError(f"{cfg_f}: missing field {key!r}: {_REDO}")
    return t, meta


def load_state(t: dict[str, Tensor], method: str, L: int, d: int, fail: Any) -> ACEState | Reducer:
    """The saved ``state.*`` tensors as the state of the result's reducer (an :class:`ACEState` for the
    method, and for a baseline result of an earlier version, which saved an all-zero one)."""
    state_t = {k[len("state.") :]: v for k, v in t.items() if k.startswith("state.")}
    cls: type[Reducer] = reducer_class(method)
    if cls is not ACEReducer and set(state_t) == set(ACEState.zeros(1, 1).tensors()):
        cls = ACEReducer  # a baseline result of an earlier version
    scoring = ScoringConfig()
    for name, want in cls.create(L, d, scoring).tensors().items():
        v = state_t.get(name)
        if v is None or tuple(v.shape) != tuple(want.shape):
            fail(
                f"state tensor {name!r} has shape {None if v is None else tuple(v.shape)}, expected {tuple(want.shape)}"
            )
    return cls.from_tensors(state_t, scoring).state


def load_neuron_list(entries: Any, role: str, scores: Tensor, fail: Any) -> list[tuple[int, int, float]]:
    """The saved good or bad list as ``(layer, neuron, score)``, checked against the scores tensor."""
    L, d = scores.shape
    out = []
    for j, entry in enumerate(entries):
        try:
            layer, neuron, score = int(entry[0]), int(entry[1]), float(entry[2])
        except (TypeError, ValueError, IndexError):
            fail(f"{CONFIG_FILE}: {role}[{j}] = {entry!r} is not [layer, neuron, score]")
        if not (0 <= layer < L and 0 <= neuron < d):
            fail(f"{CONFIG_FILE}: {role}[{j}] = L{layer}N{neuron} is outside the {L} x {d} scores")
        have = float(scores[layer, neuron])
        if abs(have - score) > 1e-6 * max(1.0, abs(score)):
            fail(
                f"{CONFIG_FILE}: {role}[{j}] L{layer}N{neuron} has score {score:.9g} but the scores tensor "
                f"holds {have:.9g}"
            )
        out.append((layer, neuron, score))
    return out
