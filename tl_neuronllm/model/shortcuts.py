"""Shortcuts over continuation rows, and the run-time checks that decide whether to trust them.

Three exact savings sit on top of a backend's prefix (:mod:`tl_neuronllm.model.backends`):

* **packed rows**: on a ``TransformerBridge`` the rows are packed into one sequence after the prefix;
  row ``r`` sits at positions ``P .. P + len(r) - 1`` and attends to the prefix and causally to itself
  only (a 4D additive attention mask and explicit ``position_ids``), so it computes exactly what it
  would alone, with no per-row cache copies. Rows of one group (the options of one query under one
  scaling or condition) share their common first tokens: a prefix tree (:class:`PackedLayout`).
* **skipped layers**: copies of the rows that equal copy 0 below block ``g`` join the sequence there.
* **letter columns**: only the needed vocabulary columns of the unembedding are computed.

None of them, nor the backend's cache, is trusted on its word. Each is checked once per model, on a
real query of the run, against a **plain full-sequence forward without any cache** (logits; and in
:mod:`tl_neuronllm.attribution.kernels`, one layer's IG against the naive per-step loop). A shortcut that
disagrees is switched off and the run goes on with the exact slower path, announced in one warning
that names the installed torch / transformers / transformer-lens versions and the expected slowdown.
An exception raised inside a check by a library (torch, transformers, TransformerLens, this package)
counts as "unsupported"; one raised by the user's own code (a hook) is re-raised.

:class:`FastPaths` records what was verified; ``adapter.fast_paths`` shows it and results store it.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.errors import ShortcutFallbackWarning
from tl_neuronllm.model.backends import Backend, PrefixState
from tl_neuronllm.model.protocol import HookedModel, HookFn, ShortcutHost

HooksArg = Sequence[tuple[str, "HookFn"]] | Callable[[Tensor], Sequence[tuple[str, "HookFn"]]]


@dataclass
class FastPaths:
    """What was verified against the plain computation on this model (``None``: not checked yet).

    Attributes:
        backend: The prefix backend in use (``"hf"``, ``"tl"``, ``"rerun"``; ``None`` before the first prefix).
        prefix_cache: The backend's continuation equals the plain forward.
        packed_rows: Packed rows equal the plain forward.
        skip_layers: Rows joining at later blocks equal the plain forward with the same scaling.
        letter_columns: Unembedding only some columns equals those columns of the full logits.
        shared_prefix: Continuing the run's shared prefix (instruction and demonstrations) with a
            query's own tokens equals computing the query's prefix from scratch.
        exact_ig: One layer's fast IG equals the naive per-step IG (checked by attribution).
        packed_queries: Several questions' evaluation rows packed into one forward after the shared
            prefix equal each question run on its own (checked by the evaluation).
        fallbacks: One line per shortcut switched off, with the reason.
    """

    backend: str | None = None
    prefix_cache: bool | None = None
    packed_rows: bool | None = None
    skip_layers: bool | None = None
    letter_columns: bool | None = None
    shared_prefix: bool | None = None
    exact_ig: bool | None = None
    packed_queries: bool | None = None
    fallbacks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
# packed rows and skipped layers
# ------------------------------------------------------------------------------------------------
@dataclass
class PackedLayout:
    """Where each row's tokens sit in one packed sequence. Rows come in consecutive groups of
    ``group_size``; within a group, rows that start with the same tokens share those positions (a
    prefix tree: the cloze options of one query share the site token, and any common first tokens).

    Attributes:
        tokens: The packed tokens, group after group.
        depth: Each packed token's position within its row(s).
        parent: Each packed token's predecessor in its row (``-1`` for a row's first token).
        row_nodes: For each row, the packed index of each of its tokens.
        group_sizes: Packed tokens per group.
    """

    tokens: list[int]
    depth: list[int]
    parent: list[int]
    row_nodes: list[list[int]]
    group_sizes: list[int]

    @classmethod
    def of(
        cls,
        rows: Sequence[Sequence[int]],
        group_size: int | Sequence[int] = 1,
        tags: Sequence[tuple[int, int]] | None = None,
    ) -> PackedLayout:
        """The layout of ``rows``; ``group_size=1`` shares nothing (each row packed on its own).

        ``group_size``: rows per group, one number for equal groups or one per group. ``tags``: per row
        ``(depth, tag)``: from that depth on, the row shares tokens only with rows of the same tag (the
        tokens before it, e.g. a question's own tokens, are shared by the whole group; from the site on,
        rows of different evaluation conditions stay apart).
        """
        if isinstance(group_size, int):
            if group_size < 1 or len(rows) % group_size:
                raise ValueError(f"group_size must divide the {len(rows)} rows, got {group_size}")
            sizes = [group_size] * (len(rows) // group_size)
        else:
            sizes = [int(n) for n in group_size]
            if min(sizes, default=1) < 1 or sum(sizes) != len(rows):
                raise ValueError(f"group sizes {sizes} must be positive and add up to the {len(rows)} rows")
        if tags is not None and len(tags) != len(rows):
            raise ValueError(f"tags needs one (depth, tag) per row: {len(tags)} for {len(rows)} rows")
        lay = cls([], [], [], [], [])
        g0 = 0
        for size in sizes:
            first = len(lay.tokens)
            nodes: dict[tuple[int, int, int], int] = {}  # (parent, token, tag) -> packed index
            for r in range(g0, g0 + size):
                row = rows[r]
                from_depth, tag = tags[r] if tags is not None else (len(row), 0)
                par, mine = -1, []
                for t in row:
                    key = (par, int(t), tag if len(mine) >= from_depth else -1)
                    node = nodes.get(key)
                    if node is None:
                        node = nodes[key] = len(lay.tokens)
                        lay.tokens.append(int(t))
                        lay.depth.append(len(mine))
                        lay.parent.append(par)
                    mine.append(node)
                    par = node
                lay.row_nodes.append(mine)
            lay.group_sizes.append(len(lay.tokens) - first)
            g0 += size
        return lay

    def visible(self, device: torch.device | str) -> Tensor:
        """``[S, S]`` bool: packed token ``j`` sees ``k`` iff ``k`` is ``j`` or precedes it in its row."""
        S = len(self.tokens)
        parent = torch.tensor(self.parent, dtype=torch.long, device=device)
        seen = torch.eye(S, dtype=torch.bool, device=device)
        j = torch.arange(S, device=device)
        cur = parent.clone()
        while bool((cur >= 0).any()):
            ok = cur >= 0
            seen[j[ok], cur[ok]] = True
            cur = torch.where(ok, parent[cur.clamp(min=0)], cur)
        return seen


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
    if it already built it.
    """
    lengths = [len(r) for r in rows]
    T, P = max(lengths), len(state.tokens)
    dev = adapter.device
    if group_size is None:
        group_size = len(rows) // len(group_start) if group_start else 1
    lay = PackedLayout.of(rows, group_size, tags) if layout is None else layout
    S = len(lay.tokens)
    seq = torch.tensor(lay.tokens, dtype=torch.long, device=dev)
    depth = torch.tensor(lay.depth, dtype=torch.long, device=dev)
    dtype = adapter.float_dtype()
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
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill_(~allowed, torch.finfo(dtype).min)
    kwargs.update(attention_mask=mask[None, None], position_ids=positions[None])
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
    handles = skip_hooks(adapter, group_start, lay, off, P if state.cache is not None else 0) if skip else []
    cols = None if logit_cols is None else torch.as_tensor(list(logit_cols), dtype=torch.long, device=dev)
    unembed = unembed_linear(adapter.model) if cols is not None and cols_direct else None
    taken: list[Tensor] = []
    if unembed is not None:

        def take(module: Any, args: tuple) -> tuple:  # keep the input, unembed nothing
            taken.append(args[0])
            return (args[0][..., :0, :], *args[1:])

        handles.append(unembed.register_forward_pre_hook(take))
    try:
        with adapter.backend.calling(), adapter.model.hooks(fwd_hooks=hooks):
            out = adapter.model(tokens[None], **kwargs)[0]
    finally:
        for h in handles:
            h.remove()
    if unembed is not None:
        bias = unembed.bias[cols] if unembed.bias is not None else None
        out = torch.nn.functional.linear(taken[0][0], unembed.weight[cols], bias)
    elif cols is not None:
        out = out[..., cols]
    return out, where


def unembed_linear(model: HookedModel) -> torch.nn.Linear | None:
    """The Bridge's unembedding as a plain ``nn.Linear`` (for computing only some columns), or ``None``."""
    lin = getattr(getattr(model, "unembed", None), "original_component", None)
    return lin if isinstance(lin, torch.nn.Linear) else None


def skip_hooks(
    adapter: ShortcutHost, group_start: Sequence[int] | None, lay: PackedLayout, off: int, kv_off: int
) -> list[Any]:
    """Forward pre-hooks on the blocks that hold only the started row groups in the sequence."""
    if group_start is None or max(group_start) == 0:
        return []
    G = len(group_start)
    S_g = lay.group_sizes[0] if lay.group_sizes else 0
    rel = [p - (i // S_g) * S_g if p >= 0 else -1 for i, p in enumerate(lay.parent)] if S_g else []
    if len(lay.group_sizes) != G or lay.tokens != lay.tokens[:S_g] * G or rel != rel[:S_g] * G:
        raise ValueError("group_start needs the rows to be equal groups")
    starts = [int(x) for x in group_start]
    if starts[0] != 0 or any(b < a for a, b in zip(starts, starts[1:])) or starts[-1] >= adapter.n_layers:
        raise ValueError(f"group_start must start at 0, not decrease and stay below n_layers, got {starts}")
    full_q = off + G * S_g
    blocks = getattr(adapter.model, "blocks", None)
    if blocks is None or len(blocks) != adapter.n_layers:
        return []

    def cut(v: Any, n_q: int) -> Any:
        if isinstance(v, (tuple, list)):
            return type(v)(cut(x, n_q) for x in v)
        if not isinstance(v, Tensor) or v.ndim == 0:
            return v
        if v.ndim == 4 and v.shape[-2] == full_q and v.shape[-1] == kv_off + full_q:  # attention mask
            return v[..., :n_q, : kv_off + n_q]
        if not v.is_floating_point() and v.shape[-1] == full_q:  # position ids, cache positions
            return v[..., :n_q]
        if v.is_floating_point() and v.ndim == 3 and v.shape[1] == full_q:  # rotary cos / sin
            return v[:, :n_q]
        return v

    def make(layer: int) -> Any:
        n_q = off + S_g * sum(1 for s in starts if s <= layer)

        def pre(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            positional = bool(args)
            h = args[0] if positional else kwargs["hidden_states"]
            if h.shape[1] > n_q:
                h = h[:, :n_q]
            elif h.shape[1] < n_q:  # started copies join with copy 0's hidden state
                ref = h[:, off : off + S_g].detach()
                h = torch.cat([h, ref.repeat(1, (n_q - h.shape[1]) // S_g, 1)], dim=1)
            rest = tuple(cut(a, n_q) for a in args[1:])
            kw = {k: cut(v, n_q) for k, v in kwargs.items() if k != "hidden_states"}
            return ((h, *rest), kw) if positional else (rest, {**kw, "hidden_states": h})

        return pre

    return [blocks[j].register_forward_pre_hook(make(j), with_kwargs=True) for j in range(adapter.n_layers)]


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


def check_row_paths(
    adapter: ShortcutHost, state: PrefixState, row: Sequence[int], logit_cols: Sequence[int] | None = None
) -> None:
    """Check packing, skipping and (with ``logit_cols``) the partial unembedding against the plain
    forward of ``state.tokens + row``, each once per adapter; switch off and warn on disagreement."""
    fp = adapter.fast
    if fp.packed_rows is None and adapter.packs_rows_for(len(state.tokens), max(len(row), 2)) >= 6:
        _check_packing(adapter, state, row)
    if logit_cols is not None and fp.letter_columns is None and fp.packed_rows:
        _check_cols(adapter, state, row, logit_cols)


def branching_pair(adapter: ShortcutHost, row: Sequence[int]) -> list[list[int]]:
    """``row`` and a second row that shares its first token and then differs (a packed group's
    rows share that token): what the packing and skipping checks run."""
    row = [int(t) for t in row]
    alt = [row[0], (row[1] + 1) % adapter.d_vocab, *row[2:]] if len(row) > 1 else [row[0], row[0]]
    return [row, alt]


def _check_packing(adapter: ShortcutHost, state: PrefixState, row: Sequence[int]) -> None:
    fp, dtype = adapter.fast, adapter.float_dtype()
    pair = branching_pair(adapter, row)
    with torch.no_grad():
        ref = plain_rows(adapter, state.tokens, pair * 2)
        packed, why = try_shortcut(lambda: packed_forward(adapter, state, pair * 2, group_size=2))
        fp.packed_rows = packed is not None and close(packed, ref, dtype)
        if not fp.packed_rows:
            adapter.note_fallback("packed rows", why or max_err(packed, ref), "each row becomes its own batch entry")
            fp.skip_layers = False
            return
        if adapter.n_layers < 2 or fp.skip_layers is not None:
            return
        starts = [0, 1, adapter.n_layers - 1]

        def hooks(first: Tensor) -> list[tuple[str, Any]]:  # scale copy g at its start block, at its sites
            return [
                (adapter.hook_names[s], scale_rows_hook(first[2 * g : 2 * g + 2])) for g, s in enumerate(starts) if g
            ]

        skipped, why = try_shortcut(
            lambda: packed_forward(adapter, state, pair * 3, fwd_hooks=hooks, group_start=starts, skip=True)
        )
        full = plain_rows(adapter, state.tokens, pair * 3, fwd_hooks=hooks)
        fp.skip_layers = skipped is not None and close(skipped, full, dtype)
        if not fp.skip_layers:
            adapter.note_fallback(
                "skipping blocks for continuation rows",
                why or max_err(skipped, full),
                f"every IG row runs all {adapter.n_layers} blocks, about 2x the block passes",
            )


def _check_cols(adapter: ShortcutHost, state: PrefixState, row: Sequence[int], cols: Sequence[int]) -> None:
    fp = adapter.fast
    if unembed_linear(adapter.model) is None:
        fp.letter_columns = False
        return
    with torch.no_grad():
        ref = plain_rows(adapter, state.tokens, [row, row])[..., torch.as_tensor(list(cols), device=adapter.device)]
        part, why = try_shortcut(lambda: packed_forward(adapter, state, [row, row], logit_cols=cols, cols_direct=True))
        fp.letter_columns = part is not None and close(part, ref, adapter.float_dtype())
        if not fp.letter_columns:
            adapter.note_fallback(
                "unembedding only the letter columns", why or max_err(part, ref), "the full unembedding is computed"
            )


# ------------------------------------------------------------------------------------------------
# the cache backend and the shared prefix, checked against the plain forward
# ------------------------------------------------------------------------------------------------
def choose_backend(adapter: ShortcutHost, candidates: Sequence[type[Backend]], tokens: list[int]) -> Backend:
    """The first of ``candidates`` whose cached continuation of ``tokens`` equals the plain forward (the
    last one, the re-run backend, when none does; the reasons go to a :class:`ShortcutFallbackWarning`)."""
    tail = min(3, len(tokens) - 1)
    head, rows = tokens[:-tail], [tokens[-tail:]] * 2
    with torch.no_grad():
        ref = plain_rows(adapter, head, rows)
    reasons = []
    for cls in candidates:
        backend = cls(adapter.model)
        if not backend.cached:
            break

        def attempt(backend: Backend = backend) -> Tensor:
            state = backend.prefix(head)
            with torch.no_grad():
                return backend.run_suffix(state, torch.tensor(rows, device=adapter.device))

        out, why = try_shortcut(attempt)
        if out is not None and close(out, ref, adapter.float_dtype()):
            adapter.fast.backend, adapter.fast.prefix_cache = cls.name, True
            return backend
        reasons.append(f"{cls.name} cache: {why or max_err(out, ref)}")
    backend = candidates[-1](adapter.model)
    adapter.fast.backend = backend.name
    if reasons:
        adapter.fast.prefix_cache = False
        adapter.note_fallback(
            "the key/value cache",
            "; ".join(reasons),
            "every continuation re-runs the prompt prefix, about (prefix + suffix) / suffix "
            f"times the cached cost ({len(tokens)}-token prompt here)",
        )
    return backend


def check_shared_prefix(adapter: ShortcutHost, shared: PrefixState, tokens: list[int]) -> None:
    """Set ``fast.shared_prefix``: whether continuing ``shared`` to ``tokens`` equals the plain forward."""
    tail = min(3, len(tokens) - len(shared.tokens))
    head, rows = tokens[:-tail], [tokens[-tail:]] * 2
    with torch.no_grad():
        ref = plain_rows(adapter, head, rows)

        def attempt() -> Tensor:
            extra = head[len(shared.tokens) :]
            state = adapter.backend.extend(shared, extra) if extra else shared
            return adapter.backend.run_suffix(state, torch.tensor(rows, device=adapter.device))

        out, why = try_shortcut(attempt)
    adapter.fast.shared_prefix = out is not None and close(out, ref, adapter.float_dtype())
    if not adapter.fast.shared_prefix:
        adapter.note_fallback(
            "continuing the shared prefix",
            why or max_err(out, ref),
            "each prompt's prefix is computed from its first token",
        )
