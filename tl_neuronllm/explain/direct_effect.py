"""The direct effect of a neuron on the logits: the logit lens of its output direction.

A neuron ``i`` of layer ``l`` writes ``a * W_out[l, i]`` into the residual stream. Its direct effect
on the logits per unit of activation is ``v @ W_U`` with ``v = W_out[l, i]``, centred for LayerNorm
models and multiplied by the final norm's weight (see :mod:`tl_neuronllm.explain.explainer` for what is left
out). :func:`option_effects` reads these effects on the options of each question.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tl_neuronllm.errors import ModelError
from tl_neuronllm.model.answers import ProxyPrompt
from tl_neuronllm.model.head import logit_factor, norm_weight
from tl_neuronllm.model.protocol import HookedModel


def _w_out(model: HookedModel, layer: int) -> Tensor:
    """``[d_mlp, d_model]`` output weights of a layer (the down-projection for gated MLPs)."""
    blocks = getattr(model, "blocks", None)
    w = None
    if blocks is not None and layer < len(blocks):
        w = getattr(blocks[layer].mlp, "W_out", None)
    if w is None:
        stacked = getattr(model, "W_out", None)
        w = None if stacked is None else stacked[layer]
    if w is None:
        raise ModelError(f"layer {layer}: the model exposes no MLP output weights (blocks[{layer}].mlp.W_out)")
    return w


def final_norm(model: HookedModel) -> tuple[bool, Tensor | None]:
    """How the final norm acts on a direction: ``(centre, weight)``.

    ``centre`` is True for LayerNorm models (``cfg.normalization_type`` ``"LN"`` / ``"LNPre"``, or a
    ``ln_final`` with a bias when the config does not say); ``weight`` is the norm's effective weight
    (:func:`tl_neuronllm.model.head.norm_weight`: Gemma's ``1 + ln_final.w``, else ``ln_final.w``; ``None``
    when the norm has no weight: ``LNPre`` / ``RMSPre``, OLMo's LayerNorm, folded weights, or no final norm).
    """
    ln = getattr(model, "ln_final", None)
    kind = getattr(model.cfg, "normalization_type", None)
    w = None
    if ln is not None:
        for name in ("w", "weight"):
            try:
                w = getattr(ln, name)
            except AttributeError:
                w = None
            if isinstance(w, Tensor):
                break
            w = None
    if kind is None:
        has_bias = ln is not None and isinstance(getattr(ln, "b", None), Tensor)
        centre = has_bias
    else:
        centre = str(kind).upper().startswith("LN")
    return centre, norm_weight(model, w)


@torch.no_grad()
def direct_logit_effects(model: HookedModel, neurons: Sequence[tuple[int, int]]) -> Float[Tensor, "n_neurons d_vocab"]:
    """Logit-lens effect of each neuron's output direction on every vocabulary token.

    For neuron ``(l, i)``: ``v = W_out[l, i]``; for LayerNorm models ``v -= v.mean()``; ``v *=
    ln_final.w`` (if the final norm has a weight); returns ``v @ W_U`` (the direct path only; the
    norm's per-input scale and the biases are left out, see :mod:`tl_neuronllm.explain.explainer`). Computed in
    float64, returned as float32 on the CPU.

    Args:
        model: A ``TransformerBridge`` or ``HookedTransformer`` (``W_U``, ``blocks[l].mlp.W_out``,
            ``ln_final``).
        neurons: ``(layer, index)`` pairs.

    Returns:
        ``[len(neurons), d_vocab]`` effects.

    Raises:
        ModelError: if the model lacks ``W_U`` or MLP output weights, or a neuron is out of range.
    """
    W_U = getattr(model, "W_U", None)
    if W_U is None:
        raise ModelError(f"{type(model).__name__} exposes no unembedding W_U")
    W_U = W_U.detach().to("cpu", torch.float64)
    n_layers, d_mlp = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    centre, w = final_norm(model)
    rows = []
    cache: dict[int, Tensor] = {}
    for layer, idx in neurons:
        if not (0 <= layer < n_layers and 0 <= idx < d_mlp):
            raise ModelError(f"neuron L{layer}N{idx} is outside this model ({n_layers} layers x {d_mlp} neurons)")
        if layer not in cache:
            cache[layer] = _w_out(model, layer).detach().to("cpu", torch.float64)
        rows.append(cache[layer][idx])
    if not rows:
        return torch.zeros(0, W_U.shape[1])
    v = torch.stack(rows)
    if v.shape[1] != W_U.shape[0]:
        raise ModelError(f"W_out rows have {v.shape[1]} entries but W_U has {W_U.shape[0]} rows (d_model)")
    if centre:
        v = v - v.mean(-1, keepdim=True)
    if w is not None:
        v = v * w.detach().to("cpu", torch.float64)
    return (v @ W_U * logit_factor(model)).float()


def option_effects(
    effects: Float[Tensor, "n_neurons d_vocab"], queries: Sequence[ProxyPrompt]
) -> tuple[Float[Tensor, "n_neurons questions"], Float[Tensor, "n_neurons questions"], Tensor | None]:
    """The direct effects on the options of each question.

    In letter mode the effect on an option is the mean over its letter's single-token forms; in cloze
    mode the effect on the first token of its text.

    Returns:
        ``(gold, distractors, letters)``: ``[neurons, questions]`` effects on the gold option and the
        mean over the distractors, and (letter mode, else ``None``) ``[neurons, options]`` effects on
        each letter of the question with the most options.
    """
    opt_eff: list[Tensor] = []
    for q in queries:
        if q.letter_ids is not None:
            cols = [effects[:, list(ids)].mean(1) for ids in q.letter_ids]
        else:
            assert q.continuations is not None
            cols = [effects[:, c[0]] for c in q.continuations]
        opt_eff.append(torch.stack(cols, 1))
    gold = torch.stack([e[:, q.gold] for e, q in zip(opt_eff, queries)], 1)
    distr = torch.stack([(e.sum(1) - e[:, q.gold]) / max(q.n_options - 1, 1) for e, q in zip(opt_eff, queries)], 1)
    letter_eff = None
    if queries[0].letter_ids is not None:
        ids = queries[max(range(len(queries)), key=lambda i: queries[i].n_options)].letter_ids
        if ids is None:
            raise ValueError("a task mixes letter-mode and cloze-mode questions")
        letter_eff = torch.stack([effects[:, list(f)].mean(1) for f in ids], 1)
    return gold, distr, letter_eff


def token_str(model: HookedModel, t: int) -> str:
    """The text of token ``t`` (``#t`` when the model has no tokenizer or cannot decode it)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return f"#{t}"
    try:
        return tok.decode([int(t)])
    except Exception:
        return f"#{t}"


__all__ = ["direct_logit_effects", "final_norm", "option_effects", "token_str"]
