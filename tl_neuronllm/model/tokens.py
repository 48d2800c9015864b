"""Checks of a model before any model time: weights in memory, and prompts tokenized without truncation."""

from __future__ import annotations

import string
from typing import Any

import torch

from tl_neuronllm.errors import ContextLengthError, ModelError

__all__ = ["check_materialized", "letter_token_ids", "tokenize_untruncated", "untruncated_count"]


def check_materialized(model: Any) -> None:
    """Refuse a model whose weights are not in memory (on the ``meta`` device, e.g. built under
    ``torch.device("meta")`` or loaded with ``low_cpu_mem_usage`` and never materialized).

    Raises:
        ModelError: naming the first such parameter.
    """
    if not isinstance(model, torch.nn.Module):
        return
    for name, p in model.named_parameters():
        if getattr(p, "is_meta", False):
            raise ModelError(
                f"the model's parameter {name!r} is on the meta device (no weights in memory); load the "
                "weights (e.g. model.to_empty(device=...) and load_state_dict, or load without device='meta')"
            )


def untruncated_count(tokenizer: Any, text: str, bos: bool) -> int | None:
    """The number of tokens of ``text`` without truncation (plus one for BOS), from a Hugging Face style
    tokenizer; ``None`` when it cannot tell."""
    try:
        ids = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
    except Exception:  # not a Hugging Face tokenizer
        return None
    return len(ids) + int(bool(bos))


def tokenize_untruncated(model: Any, prompt: str, bos: bool) -> list[int]:
    """``model.to_tokens(prompt)`` without truncation to the context: ``truncate=False`` where ``to_tokens``
    takes it; otherwise its tokens, checked against the tokenizer's untruncated count.

    Raises:
        ContextLengthError: when ``to_tokens`` cannot be asked not to truncate and it cut the prompt.
    """
    try:
        toks = model.to_tokens(prompt, prepend_bos=bos, truncate=False)
    except TypeError:  # a to_tokens without ``truncate``
        toks = None
    if toks is not None:
        return [int(t) for t in toks[0].tolist()]
    out = [int(t) for t in model.to_tokens(prompt, prepend_bos=bos)[0].tolist()]
    full = untruncated_count(getattr(model, "tokenizer", None), prompt, bos)
    if full is not None and full > len(out):
        raise ContextLengthError(
            f"the prompt is {full} tokens, but the model's to_tokens cut it to {len(out)}: longer than the "
            "model's context; shorten the item or use fewer demonstrations (n_shots)"
        )
    return out


def letter_token_ids(tok: Any, n: int) -> list[list[int]]:
    """Token ids of the option letters A.. (forms "A" and " A" that are single tokens) in tokenizer ``tok``.

    Raises:
        ModelError: without a tokenizer, or if a letter has no single-token form.
    """
    if tok is None:
        raise ModelError("this model has no tokenizer; give TokenFormat(letters=...) for the option letters")
    out = []
    for letter in string.ascii_uppercase[:n]:
        forms: list[int] = []
        for form in (letter, " " + letter):
            ids = tok.encode(form, add_special_tokens=False)
            # a single token that decodes back to the letter (not e.g. an unknown-token id)
            if len(ids) == 1 and ids[0] not in forms and tok.decode([ids[0]]).strip() == letter:
                forms.append(int(ids[0]))
        if not forms:
            raise ModelError(
                f"option letter {letter!r} is not a single token in this tokenizer (neither {letter!r} nor "
                f"{' ' + letter!r}); use mode='cloze'"
            )
        out.append(forms)
    return out
