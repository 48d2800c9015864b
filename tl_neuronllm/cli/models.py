"""The models of ``tl-neuronllm --model``: the default SmolLM2, the models registered in-process (the tests'
tiny one), and any Hugging Face causal language model, given as a hub id or a local folder, loaded with
transformers (``AutoModelForCausalLM`` + ``AutoTokenizer``) and booted as a TransformerLens ``TransformerBridge``.

``--device`` (``auto``: CUDA when there is one, else the CPU) and ``--dtype`` apply to every model; with
``--no-progress`` transformers' own loading bars stay quiet too (:func:`tl_neuronllm.data.smollm2.hf_progress`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DTYPES", "MODELS", "Model", "load_hf_model", "load_model", "register_model", "resolve_device"]

#: ``--dtype`` names.
DTYPES = ("float32", "bfloat16", "float16", "float64")


@dataclass(frozen=True)
class Model:
    """A model ``--model NAME`` loads: ``load(cache)``, rendered with ``token_format`` when it is token-level."""

    load: Callable[[str | None], Any]
    token_format: Any = None


MODELS: dict[str, Model] = {}  # "smollm2" is added below


def register_model(name: str, load: Callable[[str | None], Any], *, token_format: Any = None) -> None:
    """Make ``--model name`` load ``load(cache)``, rendered with ``token_format`` when it is token-level.

    The tests register their tiny model here (``tests/_scaffold.py``).
    """
    MODELS[name] = Model(load, token_format)


def resolve_device(device: str | None) -> str:
    """``auto`` / None: ``cuda`` when torch sees a GPU, else ``cpu``; any other name as given."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _torch_dtype(name: str | None) -> Any:
    import torch

    return getattr(torch, name or "float32")


def load_hf_model(spec: str, *, device: str | None = None, dtype: str | None = None, progress: bool = True) -> Any:
    """A Hugging Face causal LM (hub id or local folder) with its tokenizer, as a ``TransformerBridge``.

    Raises:
        SystemExit: with a one-line message when transformers cannot load it (no such folder or id, no hub).
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tl_neuronllm.data.smollm2 import hf_progress

    dev, dt = resolve_device(device), _torch_dtype(dtype)
    local = Path(spec).expanduser()
    name = str(local) if local.is_dir() else spec
    with hf_progress(progress):
        try:
            hf = AutoModelForCausalLM.from_pretrained(name, dtype=dt)
            tok = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            where = "its folder" if local.is_dir() else "the Hugging Face hub (is it reachable?)"
            msg = " ".join(str(e).split())[:300]
            raise SystemExit(
                f"tl-neuronllm: error: unknown model {spec!r}: transformers cannot load it from {where}: {msg}"
            ) from None
        hf = hf.to(dev).eval()  # pyright: ignore[reportArgumentType]
        bridge = TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tok, device=dev, dtype=dt)
    return bridge.eval()


def _load_smollm2(cache: str | None, device: str | None, dtype: str | None, progress: bool) -> Any:
    from tl_neuronllm.data.smollm2 import load_smollm2

    return load_smollm2(cache=cache, device=resolve_device(device), dtype=_torch_dtype(dtype), progress=progress)


MODELS["smollm2"] = Model(lambda cache: _load_smollm2(cache, None, None, True))


def load_model(
    spec: str, *, cache: str | None = None, device: str | None = None, dtype: str | None = None, progress: bool = True
) -> Any:
    """The model of a run: ``smollm2`` (SmolLM2-135M-Instruct, offline), a registered name, or a Hugging Face
    model id or local folder (loaded with transformers and booted as a ``TransformerBridge``).

    Raises:
        SystemExit: with a one-line message for a name that is close to a known one but not it ("did you mean"),
            or a model transformers cannot load.
    """
    if spec == "smollm2":
        return _load_smollm2(cache, device, dtype, progress)
    if spec in MODELS:
        model = MODELS[spec].load(cache)
        return model if device is None else model.to(resolve_device(device))
    check_model_name(spec)
    return load_hf_model(spec, device=device, dtype=dtype, progress=progress)


def check_model_name(spec: str) -> None:
    """Refuse, before any loading, a ``--model`` that is neither a known name nor a folder but close to a known
    name (a typo), or written as a path (``./x``, ``/x``, ``~/x``, ``a/b/c``) to a folder that does not exist.

    Raises:
        SystemExit: "unknown model ...; did you mean ...?" with the names there are, or "no such folder".
    """
    if spec in MODELS or Path(spec).expanduser().is_dir():
        return
    known = list(MODELS)
    close = difflib.get_close_matches(spec, known, n=1, cutoff=0.75)
    if close:
        raise SystemExit(
            f"tl-neuronllm: error: unknown model {spec!r}; did you mean {close[0]!r}? (known: {', '.join(known)}; "
            "or a Hugging Face model id, or a local folder)"
        )
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).exists():
        raise SystemExit(
            f"tl-neuronllm: error: unknown model {spec!r}: no such model folder (a folder holds config.json and the "
            "weights, as save_pretrained writes them); or give a Hugging Face model id such as 'org/name'"
        )
