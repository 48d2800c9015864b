"""Shortcuts over continuation rows: how they compute (the checks that decide whether to trust them live in
:mod:`tl_neuronllm.model.checks`).

Three exact savings sit on top of a backend's prefix (:mod:`tl_neuronllm.model.backends`), each used only
where the backend declares it (:class:`~tl_neuronllm.model.backends.Capabilities`):

* **packed rows**: on a ``TransformerBridge`` the rows are packed into one sequence after the prefix;
  row ``r`` sits at positions ``P .. P + len(r) - 1`` and attends to the prefix and causally to itself
  only (a 4D additive attention mask and explicit ``position_ids``; on ALiBi models the bias is built
  from the same packed positions), so it computes exactly what it would alone, with no per-row cache
  copies. Rows of one group (the options of one query under one scaling or condition) share their
  common first tokens: a prefix tree (:class:`PackedLayout`).
* **skipped layers**: copies of the rows that equal copy 0 below block ``g`` join the sequence there.
* **letter columns**: only the needed vocabulary columns of the unembedding are computed; they still run
  through the model's own head code, so a final logit soft-capping or scaling applies to them.

None of them, nor the backend's cache, is trusted on its word: each is checked once per model against a
plain full-sequence forward without any cache (:class:`~tl_neuronllm.model.checks.ShortcutChecks`). An
exception raised inside a check by a library (torch, transformers, TransformerLens, this package) counts as
"unsupported"; one raised by the user's own code (a hook) is re-raised.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.errors import ShortcutFallbackWarning
from tl_neuronllm.model.backends import PrefixState
from tl_neuronllm.model.backends.capabilities import unembed_linear
from tl_neuronllm.model.layout import JoinStates, PackedLayout, skip_hooks
from tl_neuronllm.model.protocol import HookedModel, HookFn, ShortcutHost

HooksArg = Sequence[tuple[str, "HookFn"]] | Callable[[Tensor], Sequence[tuple[str, "HookFn"]]]


# ------------------------------------------------------------------------------------------------
# failures: ours or the user's
# ------------------------------------------------------------------------------------------------
def _library_dirs() -> tuple[str, ...]:
    dirs = [os.path.dirname(os.path.abspath(__file__))]
    for name in ("torch", "transformers", "transformer_lens", "accelerate"):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)))
    return tuple(d + os.sep for d in dirs)


def own_failure(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside a library (a shortcut the model does not support) rather
    than by the user's own code, e.g. a hook of theirs (which must be re-raised)."""
    if not isinstance(exc, Exception):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return True
    return os.path.abspath(frames[-1].filename).startswith(_library_dirs())


def versions_line() -> str:
    """``torch X, transformers Y, transformer-lens Z`` as installed."""
    import importlib.metadata as md

    parts = []
    for dist in ("torch", "transformers", "transformer-lens"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def warn_fallback(what: str, reason: str, cost: str, stacklevel: int = 3) -> None:
    """The one warning a switched-off shortcut gives."""
    warnings.warn(
        f"tl_neuronllm: {what} does not reproduce the plain forward on this model ({reason}) with {versions_line()}; "
        f"running without it (exact, slower: {cost}).",
        ShortcutFallbackWarning,
        stacklevel=stacklevel,
    )


def close(a: Tensor, b: Tensor, dtype: torch.dtype) -> bool:
    """Equal to float tolerance, relative to ``b``'s scale (looser for 16-bit models). Non-finite values
    must sit at the same places with the same values (a model that makes nan makes it on every path; the
    run's own finiteness checks then name the item)."""
    if a.shape != b.shape:
        return False
    a, b = a.float(), b.float()
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb) or not torch.equal(a[~fa].nan_to_num(), b[~fb].nan_to_num()):
        return False
    if not fa.any():
        return True
    err = float((a[fa] - b[fb]).abs().max())
    tol = 1e-4 if torch.finfo(dtype).bits >= 32 else 3e-2
    return err <= tol * (1.0 + float(b[fb].abs().max()))


def max_err(a: Tensor | None, b: Tensor) -> str:
    """How far a shortcut's output ``a`` is from the reference ``b``, in words."""
    if a is None:
        return "no output"
    return "shapes differ" if a.shape != b.shape else f"max difference {float((a.float() - b.float()).abs().max()):.3g}"


# ------------------------------------------------------------------------------------------------
# the plain reference
# ------------------------------------------------------------------------------------------------
def plain_rows(
    adapter: ShortcutHost, prefix: Sequence[int], rows: Sequence[Sequence[int]], fwd_hooks: HooksArg = ()
) -> Float[Tensor, "rows pos d_vocab"]:
    """Logits at the row positions of ``prefix + row`` for each row: right-padded full sequences, no
    cache, no packing; rows shorter than the longest repeat their last position (as packed rows do)."""
    P, T = len(prefix), max(len(r) for r in rows)
    toks, _ = adapter.pad_batch([[*prefix, *r] for r in rows])
    sites = torch.arange(len(rows), device=toks.device) * toks.shape[1] + P
    hooks = fwd_hooks(sites) if callable(fwd_hooks) else fwd_hooks
    out = adapter.forward(toks, fwd_hooks=hooks)
    idx = torch.stack([torch.clamp(torch.arange(P, P + T), max=P + len(r) - 1) for r in rows]).to(out.device)
    return out.gather(1, idx[..., None].expand(-1, -1, out.shape[-1]))


# ------------------------------------------------------------------------------------------------
# packed rows and skipped layers (the layout and the block hooks: tl_neuronllm.model.layout)
# ------------------------------------------------------------------------------------------------
def packed_forward(adapter: ShortcutHost, state: PrefixState, rows: Sequence[Sequence[int]], **kw: Any) -> Tensor:
    """Right-padded logits ``[rows, T_max, vocab]`` of :func:`packed_logits` (a row shorter than ``T_max``
    repeats its last position)."""
    out, where = packed_logits(adapter, state, rows, **kw)
    return out[where]


def packed_logits(
    adapter: ShortcutHost,
    state: PrefixState,
    rows: Sequence[Sequence[int]],
    *,
    fwd_hooks: HooksArg = (),
    group_start: Sequence[int] | None = None,
    group_size: int | Sequence[int] | None = None,
    logit_cols: Sequence[int] | None = None,
    skip: bool = False,
    cols_direct: bool = False,
    tags: Sequence[tuple[int, int]] | None = None,
    site_at: Sequence[int] | None = None,
    layout: PackedLayout | None = None,
    join: JoinStates | None = None,
    logits_from: Sequence[int] | None = None,
) -> tuple[Float[Tensor, "positions vocab"], Int[Tensor, "rows pos"]]:
    """Rows packed into one sequence after the prefix (see the module docstring): ``(logits, where)``, the
    logits of each computed position (``vocab = len(logit_cols)`` with ``logit_cols``) and the index of
    row ``r``'s position ``i`` in them (a position that rows share is computed and stored once).

    ``group_size``: rows come in consecutive groups of this many, and rows of one group share their
    common first tokens (:class:`PackedLayout`; the hooks' ``sites`` then repeat within a group, so a hook
    must treat all rows of a group alike). Default: ``len(rows) // len(group_start)`` with
    ``group_start``, else 1 (nothing shared). ``skip``: group ``g`` joins at block ``group_start[g]``;
    ``cols_direct``: unembed only ``logit_cols`` (else the full logits are computed and indexed).
    ``tags``: see :meth:`PackedLayout.of`. ``site_at``: each row's site position within the row (default 0),
    which the hooks' ``sites`` point at. ``layout``: the caller's ``PackedLayout.of(rows, group_size, tags)``,
    if it already built it. ``join`` (with ``skip``): record copy 0's states at every block, or let the
    rows (then without copy 0) join from recorded ones (:class:`JoinStates`). ``logits_from``: per row, its first
    position whose logits the caller reads; only those positions (and no prefix position) are unembedded, and
    ``where`` is ``-1`` before them (default: every packed position, the prefix's too when it is in the sequence).
    """
    lengths = [len(r) for r in rows]
    T = max(lengths)
    dev = adapter.device
    if group_size is None:
        group_size = len(rows) // len(group_start) if group_start else 1
    lay = PackedLayout.of(rows, group_size, tags) if layout is None else layout
    tokens, keys, off, kwargs = _packed_inputs(adapter, state, lay)
    where = torch.tensor([[n[min(i, len(n) - 1)] for i in range(T)] for n in lay.row_nodes], device=dev)
    where = where + off  # a row shorter than T repeats its last position
    if callable(fwd_hooks):
        at = (
            torch.zeros(len(rows), dtype=torch.long, device=dev)
            if site_at is None
            else torch.tensor(site_at, device=dev)
        )
        hooks = list(fwd_hooks(where.gather(1, at[:, None])[:, 0]))
    else:
        hooks = list(fwd_hooks)
    handles = skip_hooks(adapter, group_start, lay, off, join) if skip else []
    cols = None if logit_cols is None else torch.as_tensor(list(logit_cols), dtype=torch.long, device=dev)
    need = _needed_positions(lay, logits_from, off, len(tokens), dev)
    direct_rows = need is not None and unembed_linear(adapter.model) is not None
    try:
        with ExitStack() as stack:
            stack.enter_context(adapter.backend.calling())
            alibi = adapter.backend.capabilities().alibi_module
            if alibi is not None:
                stack.enter_context(alibi_at(alibi, keys))
            if (cols is not None and cols_direct) or direct_rows:
                stack.enter_context(
                    head_slice(adapter.model, cols if cols_direct else None, need if direct_rows else None)
                )
            stack.enter_context(adapter.model.hooks(fwd_hooks=hooks))
            out = adapter.model(tokens[None], **kwargs).squeeze(0)  # a view: no copy in the backward
    finally:
        for h in handles:
            h.remove()
    if need is not None:
        if not direct_rows:
            out = out[need]
        at = torch.full((len(tokens),), -1, dtype=torch.long, device=dev)
        at[need] = torch.arange(len(need), device=dev)
        where = at[where]
    if cols is not None and not cols_direct:
        out = out[..., cols]
    return out, where


def _packed_inputs(
    adapter: ShortcutHost, state: PrefixState, lay: PackedLayout
) -> tuple[Tensor, Tensor, int, dict[str, Any]]:
    """The packed sequence's tokens, key positions, offset of the first packed token (the prefix's length when the
    prefix runs in the sequence, else 0) and the model's keywords (mask, position ids, cache)."""
    dev, P, S = adapter.device, len(state.tokens), len(lay.tokens)
    seq = torch.tensor(lay.tokens, dtype=torch.long, device=dev)
    depth = torch.tensor(lay.depth, dtype=torch.long, device=dev)
    # new tokens see the whole prefix, and their own row up to themselves
    allowed = torch.cat([torch.ones(S, P, dtype=torch.bool, device=dev), lay.visible(dev)], dim=1)
    kwargs: dict[str, Any] = {}
    if state.cache is None:  # the prefix runs in the same sequence, causal among itself
        pre = torch.ones(P, P + S, dtype=torch.bool, device=dev).tril()
        allowed = torch.cat([pre, allowed], dim=0)
        tokens = torch.cat([torch.tensor(state.tokens, dtype=torch.long, device=dev), seq])
        positions = torch.cat([torch.arange(P, device=dev), P + depth])
        off = P
    else:
        tokens, positions, off = seq, P + depth, 0
        kwargs.update(adapter.backend.cache_kwargs(state))
    keys = positions if state.cache is None else torch.cat([torch.arange(P, device=dev), positions])
    kwargs.update(attention_mask=packed_mask(adapter, state, allowed, positions, keys), position_ids=positions[None])
    return tokens, keys, off, kwargs


def _needed_positions(
    lay: PackedLayout, logits_from: Sequence[int] | None, off: int, n: int, dev: torch.device | str
) -> Tensor | None:
    """The sequence positions whose logits rows read from ``logits_from`` on (``None``: all ``n`` of them)."""
    if logits_from is None:
        return None
    if len(logits_from) != len(lay.row_nodes):
        raise ValueError(f"logits_from needs one position per row: {len(logits_from)} for {len(lay.row_nodes)} rows")
    if off == 0 and not any(logits_from):  # every packed token is some row's, read from its first on
        return None
    mask = torch.zeros(n, dtype=torch.bool)
    for nodes, first in zip(lay.row_nodes, logits_from):
        mask[[off + j for j in nodes[int(first) :]]] = True
    return None if bool(mask.all()) else mask.nonzero().squeeze(-1).to(dev)


def packed_mask(
    adapter: ShortcutHost, state: PrefixState, allowed: Tensor, queries: Tensor, keys: Tensor
) -> Tensor | dict[str, Tensor]:
    """The additive 4D attention mask of a packed sequence: ``allowed`` (``[queries, keys]``); on a model with a
    sliding window, also no key ``window`` or more positions before its query, addressing only the prefix keys
    that a sliding cache layer keeps; a ``{"full_attention", "sliding_attention"}`` mapping where layers mix."""
    dtype = adapter.float_dtype()

    def additive(ok: Tensor) -> Tensor:
        return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill_(~ok, torch.finfo(dtype).min)[
            None, None
        ]

    caps = adapter.backend.capabilities()
    if caps.sliding_window is None:
        return additive(allowed)
    near = allowed & ((queries[:, None] - keys[None, :]) < caps.sliding_window)
    kept = sliding_cache_len(state.cache)
    if state.cache is not None and kept is not None:
        near = near[:, len(state.tokens) - kept :]
    if not caps.mixed_layers:
        return additive(near)
    return {"full_attention": additive(allowed), "sliding_attention": additive(near)}


def sliding_cache_len(cache: Any) -> int | None:
    """How many prefix keys a sliding layer of a Hugging Face cache keeps (``None``: no sliding layer)."""
    for layer in getattr(cache, "layers", None) or []:
        if "Sliding" in type(layer).__name__ and getattr(layer, "keys", None) is not None:
            return int(layer.keys.shape[-2])
    return None


@contextmanager
def head_slice(model: HookedModel, cols: Tensor | None, rows: Tensor | None = None) -> Iterator[None]:
    """While inside, the unembedding computes only the vocabulary columns ``cols`` (all with ``None``), and with
    ``rows`` only at those sequence positions (of a batch of one); its output still runs through the rest of
    the model's head (a final soft-capping or logit scale applies, elementwise)."""
    lin = unembed_linear(model)
    if lin is None:
        raise ValueError("the unembedding is not a plain nn.Linear")
    weight, bias = lin.weight, lin.bias
    if cols is not None:
        weight, bias = weight[cols], None if bias is None else bias[cols]

    def forward(input: Tensor) -> Tensor:
        if rows is not None:
            input = input[..., rows.to(input.device), :]
        return torch.nn.functional.linear(input, weight, bias)

    lin.forward = forward  # an instance attribute: nn.Module.__call__ finds it first
    try:
        yield
    finally:
        del lin.forward


@contextmanager
def alibi_at(module: Any, keys: Tensor) -> Iterator[None]:
    """While inside, the modelling ``module``'s ``build_alibi_tensor`` gives the ALiBi bias of the key
    positions ``keys`` (packed rows restart their positions after the prefix): the bias the model builds for
    an unpadded sequence, taken at those positions, so the values are exactly the plain forward's."""
    build = module.build_alibi_tensor
    n = int(keys.max()) + 1

    def at_keys(attention_mask: Tensor, num_heads: int, dtype: torch.dtype) -> Tensor:
        full = build(torch.ones((1, n), dtype=torch.long, device=attention_mask.device), num_heads, dtype)
        return full[..., keys.to(full.device)].repeat(attention_mask.shape[0], 1, 1)

    module.build_alibi_tensor = at_keys
    try:
        yield
    finally:
        module.build_alibi_tensor = build


def scale_rows_hook(sites: Tensor) -> HookFn:
    """A hook halving the activation at flat positions ``sites`` (the checks' probe)."""

    def hook(act: Tensor, hook: Any) -> Tensor:
        flat = act.reshape(-1, act.shape[-1])
        at = sites.to(flat.device).unique()  # rows of a packed group share their site
        return flat.index_copy(0, at, 0.5 * flat[at]).view(act.shape)

    return hook


# ------------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------------
def try_shortcut(fn: Callable[[], Tensor]) -> tuple[Tensor | None, str]:
    """``(value, "")``, or ``(None, reason)`` when a library raised; the user's own errors propagate."""
    try:
        return fn(), ""
    except Exception as e:
        if not own_failure(e):
            raise
        return None, f"raised {type(e).__name__}: {e}"
