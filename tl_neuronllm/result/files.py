"""The files of a saved :class:`~tl_neuronllm.result.neuron_result.NeuronResult`: names, format, and reading them back
with checks (readable, the right format, state tensors of the right reducer and shape, good/bad lists
that agree with the scores)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch
from safetensors.torch import load_file
from torch import Tensor

from tl_neuronllm.config.result import ResultConfig
from tl_neuronllm.errors import ResultFileError
from tl_neuronllm.scoring.ace import ACEState, ScoringConfig, select
from tl_neuronllm.scoring.reducers import ACEReducer, Reducer, reducer_class

TENSORS_FILE = "tensors.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "tl_neuronllm.NeuronResult"
FORMAT = f"{FORMAT_NAME}/1"


_REDO = "save the result again (or rerun identify)"


def config_digest(config: Any) -> str:
    """A SHA-256 of a result's recorded config (its JSON form, keys sorted), stored with the tensors so that
    a hand-edited ``config.json`` (hook, mode, z, layers, proxies, ...) is refused at load."""
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def tensor_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (``{}`` when it cannot be read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception:  # unreadable: read_files reports it
        return {}


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


def load_state(t: dict[str, Tensor], reducer: str, L: int, d: int, fail: Any) -> ACEState | Reducer:
    """The saved ``state.*`` tensors as the state of the result's reducer (an :class:`ACEState` for the
    method, and for a baseline result of an earlier version, which saved an all-zero one); ``reducer`` is
    the reducer's registered name, as the result recorded it."""
    state_t = {k[len("state.") :]: v for k, v in t.items() if k.startswith("state.")}
    cls: type[Reducer] = reducer_class(reducer)
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


def read_result(path: Path) -> dict[str, Any]:
    """The parts of a saved result, checked to belong together: ``NeuronResult`` keyword arguments, with
    ``good`` and ``bad`` as ``(layer, neuron, score)`` lists.

    Raises:
        FileNotFoundError: without the files; ResultFileError: see :meth:`NeuronResult.load`.
    """
    t, meta = read_files(path)

    def fail(msg: str) -> NoReturn:
        raise ResultFileError(
            f"{path}: {msg}; the files do not belong together (edited or mixed from different runs): save the result "
            "again (or rerun identify)"
        )

    scores = t.get("scores")
    if scores is None or scores.ndim != 2:
        fail(f"{TENSORS_FILE} has no 2-D 'scores' tensor")
    L, d = (int(x) for x in scores.shape)
    if not bool(torch.isfinite(scores).all()):
        fail("'scores' has non-finite values")
    raw = meta["config"]
    try:
        config = ResultConfig.from_dict(raw if isinstance(raw, Mapping) else {})
    except (TypeError, ValueError) as e:
        fail(f"{CONFIG_FILE} records options this version refuses ({e})")
    state = load_state(t, config.reducer, L, d, fail)
    if "act_mean" in t and tuple(t["act_mean"].shape) != (L, d):
        fail(f"'act_mean' has shape {tuple(t['act_mean'].shape)}, expected {(L, d)}")
    if "attributions" in t:
        a = t["attributions"]
        if a.ndim != 4 or tuple(a.shape[2:]) != (L, d):
            fail(f"'attributions' has shape {tuple(a.shape)}, expected [items, proxies, {L}, {d}]")
        if "proxy_mask" in t and tuple(t["proxy_mask"].shape) != tuple(a.shape[:2]):
            fail(f"'proxy_mask' has shape {tuple(t['proxy_mask'].shape)}, expected {tuple(a.shape[:2])}")
    rec = (config.model.get("n_layers"), config.model.get("d_mlp"))
    if rec != (None, None) and rec != (L, d):
        fail(f"{CONFIG_FILE} records a model with {rec[0]} layers x {rec[1]} neurons but the scores are {L} x {d}")
    lists = {role: load_neuron_list(meta[role], role, scores, fail) for role in ("good", "bad")}
    if config.k is not None:
        for role, sign in (("good", 1), ("bad", -1)):
            want_ids = [(a, b) for a, b, _ in select(scores, config.k, sign)]  # type: ignore[arg-type]
            if [(x[0], x[1]) for x in lists[role]] != want_ids:
                fail(
                    f"{CONFIG_FILE}: the {role} list ({len(lists[role])} neurons) is not the top-k={config.k} "
                    "of the scores tensor"
                )
    saved = tensor_metadata(path / TENSORS_FILE).get("config_digest")
    if saved is not None and saved != config_digest(meta["config"]):
        fail(
            f"{CONFIG_FILE}'s 'config' differs from the one saved with {TENSORS_FILE} (its digest does not match): "
            "it was edited by hand or copied from another run, and hooks, rescore and evaluate would use the edited "
            "values"
        )
    return dict(
        scores=scores,
        good=lists["good"],
        bad=lists["bad"],
        state=state,
        act_mean=t.get("act_mean"),
        config=config,
        stats=meta.get("stats", {}),
        attributions=t.get("attributions"),
        proxy_mask=t.get("proxy_mask"),
    )
