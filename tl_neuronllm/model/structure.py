"""What a model's structure says before any forward: mixture-of-experts blocks, and why a hook's width can
differ from ``cfg.d_mlp``.

**Mixture of experts.** An MoE block is found by its modules (a child ``experts`` and a router: a child
``gate`` or ``router``, or a ``W_gate`` parameter), never by its width: on TransformerLens's MoE bridge,
``blocks.{l}.mlp.hook_post`` is the block's *output* (``d_model`` wide), and when an expert's width equals
the model's width nothing else would tell output coordinates from neurons. Such models are refused before
any model time, with what is missing to support them (:data:`MOE_MISSING`).

**Width mismatch.** TransformerLens 4.3 maps OPT's ``ffn_dim`` and Falcon's ``ffn_hidden_size`` to
``d_mlp = 4 * d_model`` whatever the Hugging Face config says; the error then names that mapping.
"""

from __future__ import annotations

import importlib.metadata as md
from typing import Any

from torch import nn

from tl_neuronllm.errors import ModelError
from tl_neuronllm.model.protocol import HookedModel

#: What tl_neuronllm would need to attribute to an expert's hidden units, and TransformerLens lacks.
MOE_MISSING = (
    "TransformerLens's MoE bridge (MoEBridge) exposes only the block's input (hook_in, aliased hook_pre), its "
    "output (hook_out, aliased hook_post, d_model wide) and the router's scores (gate.hook_out); it has no hook "
    "point on an expert's hidden units (the input of an expert's down-projection): transformers runs all "
    "experts in one fused module with 3-D batched weights, so no (layer, expert, unit) activation can be read "
    "or scaled through hooks"
)

_ROUTERS = ("gate", "router")
#: Hugging Face config fields that hold the MLP width, by the families that use them.
_WIDTH_FIELDS = ("ffn_dim", "ffn_hidden_size", "intermediate_size", "n_inner", "d_ff")


def _inner(module: Any) -> Any:
    return getattr(module, "original_component", None) or module


def moe_layers(model: HookedModel) -> dict[int, str]:
    """Layers whose MLP is a mixture of experts, each with a description of the structure found."""
    found: dict[int, str] = {}
    for layer, block in enumerate(getattr(model, "blocks", None) or []):
        mlp = getattr(block, "mlp", None)
        if mlp is None:
            continue
        for mod in {id(m): m for m in (mlp, _inner(mlp))}.values():
            if not isinstance(mod, nn.Module):
                continue
            children = dict(mod.named_children())
            experts = children.get("experts")
            router = next((n for n in _ROUTERS if n in children), None)
            if router is None and isinstance(getattr(mod, "W_gate", None), nn.Parameter):
                router = "W_gate"
            if experts is not None and router is not None:
                n = _n_experts(model, experts)
                found[layer] = f"{type(mod).__name__} with router {router!r} and {n} experts"
                break
    return found


def _n_experts(model: HookedModel, experts: nn.Module) -> str:
    if isinstance(experts, nn.ModuleList):
        return str(len(experts))
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        n = getattr(experts, key, None) or getattr(model.cfg, key, None)
        if n:
            return str(n)
    return "several"


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "(not installed)"


def refuse_moe(model: HookedModel, hook: str) -> None:
    """Refuse a model with mixture-of-experts MLPs, before any forward.

    Raises:
        ModelError: naming the MoE layers, their structure and what is missing to support them.
    """
    layers = moe_layers(model)
    if not layers:
        return
    first = min(layers)
    names = ", ".join(str(layer) for layer in sorted(layers))
    raise ModelError(
        f"layers {names} of this model are mixture-of-experts blocks (layer {first}: {layers[first]}); "
        f"blocks.{first}.mlp.{hook} is not a set of neurons there, and tl_neuronllm does not score it. "
        f"Supporting (layer, expert, unit) neurons needs the experts' hidden activations, and with "
        f"transformer-lens {_version('transformer-lens')} and transformers {_version('transformers')}: "
        f"{MOE_MISSING}"
    )


#: Hugging Face config fields TransformerLens 4.3's config mapping ignores (it sets ``d_mlp = 4 * d_model``).
_IGNORED_WIDTHS = ("ffn_dim", "ffn_hidden_size")


def refuse_mapped_width(model: HookedModel) -> None:
    """Refuse, before any forward, a model whose Hugging Face config gives an MLP width (OPT's ``ffn_dim``,
    Falcon's ``ffn_hidden_size``) other than TransformerLens's ``cfg.d_mlp``.

    Raises:
        ModelError: naming TransformerLens's config mapping, the field and both widths.
    """
    hf_cfg = getattr(getattr(model, "original_model", None), "config", None)
    d_mlp = int(getattr(model.cfg, "d_mlp", 0) or 0)
    for field in _IGNORED_WIDTHS:
        value = getattr(hf_cfg, field, None)
        if isinstance(value, int) and value != d_mlp:
            raise ModelError(_mapping_message(model, "blocks.0.mlp", 0, value, d_mlp, field))


def _mapping_message(model: HookedModel, name: str, layer: int, width: int, d_mlp: int, field: str) -> str:
    hf_cfg = getattr(getattr(model, "original_model", None), "config", None)
    arch = getattr(model.cfg, "architecture", None) or type(hf_cfg).__name__
    return (
        f"{name!r} (layer {layer}) is {width} wide, but model.cfg.d_mlp = {d_mlp}: TransformerLens's config "
        f"mapping for {arch} (transformer-lens {_version('transformer-lens')}) ignores the Hugging Face config's "
        f"{field} = {width} and sets d_mlp = {d_mlp} (4 x d_model); the MLP holds {width} neurons per layer. "
        f"Set model.cfg.d_mlp = {width} after booting to use this model"
    )


def width_mismatch(model: HookedModel, name: str, layer: int, width: int, d_mlp: int) -> str:
    """The message for hook ``name`` firing with ``width`` instead of ``d_mlp``: TransformerLens's config
    mapping when the Hugging Face config holds the hook's real width, else that the hook is not neurons."""
    hf_cfg = getattr(getattr(model, "original_model", None), "config", None)
    for field in _WIDTH_FIELDS:
        value = getattr(hf_cfg, field, None)
        if isinstance(value, int) and value == width and value != d_mlp:
            return _mapping_message(model, f"hook {name}", layer, width, d_mlp, field)
    return (
        f"hook {name!r} (layer {layer}) has width {width}, expected d_mlp = {d_mlp}; "
        "this hook does not expose MLP neurons on this model"
    )


__all__ = ["MOE_MISSING", "moe_layers", "refuse_mapped_width", "refuse_moe", "width_mismatch"]
