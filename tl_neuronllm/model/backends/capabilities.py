"""What a backend can do for the shortcuts, declared once per model instead of sniffed at each use.

:class:`Capabilities` answers, for one model under one backend, the questions the shortcuts of
:mod:`tl_neuronllm.model.shortcuts` ask: can continuation rows be packed into one sequence (a 4D additive
mask and explicit ``position_ids`` reach every attention), does an ALiBi bias follow the packed positions,
is there a sliding attention window (and how wide), can the unembedding compute only some vocabulary
columns through the model's own head code (so that a final logit transform, soft-capping or scaling,
still applies), and can rows join at later blocks. A capability says a shortcut *may* work; the one-time
checks against the plain forward (:mod:`tl_neuronllm.model.checks`) still decide whether it is used.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from tl_neuronllm.model.protocol import HookedModel


@dataclass(frozen=True)
class Capabilities:
    """The shortcuts a backend supports on one model (see the module docstring).

    Attributes:
        packing: Continuation rows can be packed into one sequence after the prefix.
        skip_layers: Packed row copies can join at later blocks (needs ``packing`` and the model's blocks).
        alibi_module: The Hugging Face modelling module whose ``build_alibi_tensor`` builds the model's ALiBi
            bias (BLOOM, ALiBi Falcon); while packed rows run, it is given the packed key positions.
        sliding_window: The attention window of the sliding layers (``None``: no window). The packed mask
            carries it (a key more than ``window - 1`` positions before a query is masked), and with a cache
            it addresses only the keys a sliding cache layer keeps.
        mixed_layers: Some layers slide and others attend to everything (Gemma 2 / 3): the packed mask is a
            ``{"full_attention": ..., "sliding_attention": ...}`` mapping, which these models take as given.
        logit_columns: The unembedding is a plain ``nn.Linear`` that can compute only some vocabulary
            columns; its output still runs through the model's own head code (final soft-capping or
            logit scaling applies to the columns, elementwise).
        final_transform: The model's final logit transform, in words (``""`` when there is none).
    """

    packing: bool = False
    skip_layers: bool = False
    alibi_module: ModuleType | None = None
    sliding_window: int | None = None
    mixed_layers: bool = False
    logit_columns: bool = False
    final_transform: str = ""

    def packs(self, prefix_len: int, row_len: int, n_ctx: int) -> int:
        """How many rows of ``row_len`` tokens fit one packed sequence after ``prefix_len`` tokens (0: none)."""
        if not self.packing or not prefix_len:
            return 0
        return max(0, (n_ctx - prefix_len) // row_len) if n_ctx > 0 else 2**31


def hf_config(model: HookedModel) -> Any:
    """The Hugging Face config inside a ``TransformerBridge`` (``None`` for other models)."""
    return getattr(getattr(model, "original_model", None), "config", None)


def sliding_window(model: HookedModel) -> int | None:
    """The model's sliding attention window (``None`` when no layer uses one)."""
    cfg = hf_config(model)
    window = getattr(cfg, "sliding_window", None)
    if not window or getattr(cfg, "use_sliding_window", True) is False:
        return None
    types = getattr(cfg, "layer_types", None)
    if types is not None and "sliding_attention" not in types:
        return None
    return int(window)


def mixed_layers(model: HookedModel) -> bool:
    """Whether some layers use a sliding window and others full attention (``layer_types`` says both)."""
    types = set(getattr(hf_config(model), "layer_types", None) or ())
    return {"sliding_attention", "full_attention"} <= types


def alibi_module(model: HookedModel) -> ModuleType | None:
    """The modelling module that builds the Hugging Face model's ALiBi bias, when the model uses ALiBi."""
    hf, cfg = getattr(model, "original_model", None), hf_config(model)
    if hf is None or cfg is None:
        return None
    uses = getattr(cfg, "alibi", None)
    if uses is None:
        uses = getattr(cfg, "model_type", "") == "bloom"
    mod = sys.modules.get(type(hf).__module__)
    return mod if uses and hasattr(mod, "build_alibi_tensor") else None


def final_transform(model: HookedModel) -> str:
    """The final logit transform the model's head applies after the unembedding, in words."""
    cfg = hf_config(model)
    if cfg is None:
        return ""
    parts = []
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        parts.append(f"soft-capping at {cap:g}")
    scaling = getattr(cfg, "logits_scaling", None)
    if scaling not in (None, 1, 1.0):
        parts.append(f"division by logits_scaling {scaling:g}")
    scale = getattr(cfg, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        parts.append(f"multiplication by logit_scale {scale:g}")
    return ", ".join(parts)


def unembed_linear(model: HookedModel) -> torch.nn.Linear | None:
    """The Bridge's unembedding as a plain ``nn.Linear`` (for computing only some columns), or ``None``."""
    lin = getattr(getattr(model, "unembed", None), "original_component", None)
    return lin if isinstance(lin, torch.nn.Linear) else None


def bridge_capabilities(model: HookedModel) -> Capabilities:
    """The capabilities of a ``TransformerBridge`` (packed rows reach it through ``attention_mask`` and
    ``position_ids``; the HF cache and the re-run backend both serve them)."""
    blocks = getattr(model, "blocks", None)
    n_layers = int(getattr(model.cfg, "n_layers", 0) or 0)
    return Capabilities(
        packing=True,
        skip_layers=blocks is not None and len(blocks) == n_layers,
        alibi_module=alibi_module(model),
        sliding_window=sliding_window(model),
        mixed_layers=sliding_window(model) is not None and mixed_layers(model),
        logit_columns=unembed_linear(model) is not None,
        final_transform=final_transform(model),
    )


__all__ = ["Capabilities", "bridge_capabilities", "final_transform", "hf_config", "sliding_window", "unembed_linear"]
