"""Leaving the user's model as it came in: hooks, ``requires_grad`` flags, ``.grad`` tensors and mode.

:func:`preserved_model_state` wraps every run of the package against a user's model, also one that fails
or is interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from tl_neuronllm.model.protocol import HookedModel

__all__ = ["hook_snapshot", "hooks_restored", "preserved_model_state"]


def hook_snapshot(model: HookedModel | torch.nn.Module) -> list[tuple[torch.nn.Module, dict[str, Any]]]:
    snap = []
    for mod in model.modules():
        s: dict[str, Any] = {}
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            d = getattr(mod, attr, None)
            if d is not None:
                s[attr] = set(d.keys())
        for attr in ("fwd_hooks", "bwd_hooks"):  # TL HookPoint handle lists
            lst = getattr(mod, attr, None)
            if isinstance(lst, list):
                s[attr] = list(lst)
        snap.append((mod, s))
    return snap


def _hook_restore(snap: list[tuple[torch.nn.Module, dict[str, Any]]]) -> None:
    for mod, s in snap:
        for attr, val in s.items():
            if attr.startswith("_"):
                d = getattr(mod, attr)
                for k in [k for k in d.keys() if k not in val]:
                    del d[k]
            else:
                setattr(mod, attr, list(val))


@contextmanager
def hooks_restored(model: HookedModel) -> Iterator[None]:
    """Remove, on exit, every hook added to ``model``'s modules inside the block (even on error)."""
    snap = hook_snapshot(model) if isinstance(model, torch.nn.Module) else []
    try:
        yield
    finally:
        _hook_restore(snap)


@contextmanager
def preserved_model_state(model: HookedModel, *, eval_mode: bool = True) -> Iterator[None]:
    """Run a block against ``model`` and restore its hooks, ``requires_grad``, ``.grad`` and mode.

    Inside the block the model is in eval mode (dropout off) and autograd is enabled. On exit,
    normal or by exception, every hook added inside is removed, parameters get back their
    ``requires_grad`` flags and ``.grad`` tensors, and the model its
    train/eval mode.
    """
    if not isinstance(model, torch.nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]  # each module's flag, not only the root's
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        if eval_mode:
            model.eval()
        with torch.enable_grad(), hooks_restored(model):
            yield
    finally:
        # gradients are only ever taken with torch.autograd.grad w.r.t. activations, so .grad
        # values are never written; identities and flags are restored in case a hook changed them
        for p, f, g in zip(params, flags, grads):
            if p.requires_grad != f:
                p.requires_grad_(f)
            if p.grad is not g:
                p.grad = g
        for m, training in modes:
            m.training = training
