"""Where packed rows sit in one sequence (:class:`PackedLayout`), and the block pre-hooks that let copies of a row
group join the sequence at a later block (:func:`skip_hooks`, :class:`JoinStates`); used by
:mod:`tl_neuronllm.model.shortcuts`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tl_neuronllm.model.protocol import ShortcutHost


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


@dataclass
class JoinStates:
    """Copy 0's hidden state at every block's input, kept from one packed forward so that later forwards of
    the same rows can leave copy 0 out (:func:`skip_hooks`).

    Pass an empty one with the first forward (copy 0 in the rows, ``group_start[0] == 0``): it records the
    states. Pass the filled one with a later forward whose rows hold only the joining copies: each joins at
    its block with the kept state, and no block runs below the first copy's start (one placeholder token
    holds the sequence there). The kept states are detached: copy 0 must not depend on the caller's leaves.
    """

    states: dict[int, Tensor] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Whether the states are recorded (a later forward then joins from them)."""
        return bool(self.states)


def skip_hooks(
    adapter: ShortcutHost,
    group_start: Sequence[int] | None,
    lay: PackedLayout,
    off: int,
    join: JoinStates | None = None,
) -> list[Any]:
    """Forward pre-hooks on the blocks that hold only the started row groups in the sequence (with ``join``:
    record copy 0's states, or join from recorded ones; see :class:`JoinStates`)."""
    if group_start is None or (join is None and max(group_start) == 0):
        return []
    G = len(group_start)
    S_g = lay.group_sizes[0] if lay.group_sizes else 0
    rel = [p - (i // S_g) * S_g if p >= 0 else -1 for i, p in enumerate(lay.parent)] if S_g else []
    if len(lay.group_sizes) != G or lay.tokens != lay.tokens[:S_g] * G or rel != rel[:S_g] * G:
        raise ValueError("group_start needs the rows to be equal groups")
    starts = [int(x) for x in group_start]
    inject = join is not None and join.ready
    if (
        (not inject and starts[0] != 0)
        or starts[0] < 0
        or any(b < a for a, b in zip(starts, starts[1:]))
        or starts[-1] >= adapter.n_layers
    ):
        raise ValueError(f"group_start must start at 0, not decrease and stay below n_layers, got {starts}")
    if inject and join is not None and any(s not in join.states for s in starts):
        raise ValueError(f"no kept state for block {next(s for s in starts if s not in join.states)}")
    full_q = off + G * S_g
    blocks = getattr(adapter.model, "blocks", None)
    if blocks is None or len(blocks) != adapter.n_layers:
        return []

    def cut(v: Any, n_q: int) -> Any:
        if isinstance(v, (tuple, list)):
            return type(v)(cut(x, n_q) for x in v)
        if not isinstance(v, Tensor) or v.ndim == 0:
            return v
        if v.ndim == 4 and v.shape[-2] == full_q and v.shape[-1] >= full_q:  # attention mask (kv: cached + new)
            return v[..., :n_q, : v.shape[-1] - full_q + n_q]
        if not v.is_floating_point() and v.shape[-1] == full_q:  # position ids, cache positions
            return v[..., :n_q]
        if v.is_floating_point() and v.ndim == 3 and v.shape[1] == full_q:  # rotary cos / sin
            return v[:, :n_q]
        return v

    def make(layer: int) -> Any:
        n_started = sum(1 for s in starts if s <= layer)
        n_before = sum(1 for s in starts if s < layer)
        n_q = off + S_g * n_started

        def pre(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            positional = bool(args)
            h = args[0] if positional else kwargs["hidden_states"]
            if inject and join is not None:
                if n_started > n_before:  # copies join here with copy 0's kept state
                    ref = join.states[layer].to(h)
                    h = torch.cat([h[:, : off + S_g * n_before], ref.repeat(1, n_started - n_before, 1)], dim=1)
                else:  # before the first copy starts, one placeholder token holds the sequence
                    h = h[:, : max(n_q, off + 1)]
            elif h.shape[1] > n_q:
                h = h[:, :n_q]
            elif h.shape[1] < n_q:  # started copies join with copy 0's hidden state
                ref = h[:, off : off + S_g].detach()
                h = torch.cat([h, ref.repeat(1, (n_q - h.shape[1]) // S_g, 1)], dim=1)
            if join is not None and not inject:
                join.states[layer] = h[:, off : off + S_g].detach()
            rest = tuple(cut(a, h.shape[1]) for a in args[1:])
            kw = {k: cut(v, h.shape[1]) for k, v in kwargs.items() if k != "hidden_states"}
            return ((h, *rest), kw) if positional else (rest, {**kw, "hidden_states": h})

        return pre

    return [blocks[j].register_forward_pre_hook(make(j), with_kwargs=True) for j in range(adapter.n_layers)]
