"""The model's head after the last block, as the direct-effect computation needs it: the final norm's
effective weight and the final logit transform.

Families differ here: Gemma's RMS norms multiply by ``1 + weight`` (the stored weight is an offset), OLMo's
LayerNorm has no weight, Granite divides the logits by ``logits_scaling``, Cohere multiplies them by
``logit_scale``, Gemma 2 / 3 soft-cap them (``cap * tanh(logits / cap)``). :func:`norm_weight` finds the
effective weight by running the Hugging Face norm module itself on a probe direction (so an offset norm needs
no family list); :func:`logit_factor` is the slope of the final transform at zero logits (soft-capping has
slope 1 there; its input-dependent slope elsewhere is left out, like the norm's per-input scale).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tl_neuronllm.model.backends.capabilities import final_transform, hf_config
from tl_neuronllm.model.protocol import HookedModel


def norm_weight(model: HookedModel, stored: Tensor | None) -> Tensor | None:
    """The final norm's effective per-coordinate weight (``None``: the norm has none).

    On a ``TransformerBridge`` the wrapped Hugging Face norm module is probed with ``x = (+1, -1, +1, ...)``
    (mean 0, unit RMS and standard deviation; run at 10^4 times that scale, so that the norm's epsilon
    vanishes): ``(norm(x) - norm(-x)) / 2x`` is its weight, with Gemma's ``1 + weight`` and without the bias. Otherwise, or when the probe fails, ``stored`` is returned.
    """
    ln = getattr(model, "ln_final", None)
    inner = getattr(ln, "original_component", None)
    d = int(getattr(model.cfg, "d_model", 0) or 0)
    if not isinstance(inner, torch.nn.Module) or d < 2 or d % 2:
        return stored
    params = list(inner.parameters())
    dtype = params[0].dtype if params else torch.float32
    device = params[0].device if params else torch.device("cpu")
    x = torch.ones(d, dtype=dtype, device=device)
    x[1::2] = -1
    big = 1e4 * x  # so that the norm's epsilon (added to a variance of 1e8) changes nothing
    try:
        with torch.no_grad():
            w = (inner(big[None]) - inner(-big[None]))[0] / (2 * x)
    except Exception:  # a norm that needs more than a hidden state: keep the stored weight
        return stored
    if stored is None and bool(torch.allclose(w, torch.ones_like(w), atol=1e-3)):
        return None
    return w.detach()


def logit_factor(model: HookedModel) -> float:
    """The slope at zero of the final logit transform (1.0 when there is none): ``1 / logits_scaling``
    (Granite), ``logit_scale`` (Cohere); soft-capping has slope 1 at zero."""
    cfg = hf_config(model)
    factor = 1.0
    scaling = getattr(cfg, "logits_scaling", None)
    if isinstance(scaling, (int, float)) and scaling:
        factor /= float(scaling)
    scale = getattr(cfg, "logit_scale", None)
    if isinstance(scale, (int, float)):
        factor *= float(scale)
    return factor


__all__ = ["final_transform", "logit_factor", "norm_weight"]
