"""The memory cost model: how many continuation rows fit an activation budget.

One place for the estimates that size chunks of continuation rows (:func:`ig_chunk_rows`: IG steps,
and evaluation conditions). Estimates are deliberately conservative (activations kept for the
backward pass, attention scores, logits); ``chunk_rows`` / ``memory_budget_mb`` override them.
"""

from __future__ import annotations

from typing import Any

import torch


def auto_memory_budget_mb(device: torch.device) -> float:
    """Default activation budget of one chunk: half the free memory of a CUDA device, else 1024 MB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(256.0, 0.5 * free / 2**20)
    return 1024.0


def row_bytes(
    cfg: Any,
    *,
    n_layers: int,
    d_mlp: int,
    d_vocab: int,
    dtype: torch.dtype,
    cached: bool,
    prefix_len: int,
    suffix_len: int,
    packed_rows: int = 0,
) -> int:
    """Rough activation memory of one continuation row.

    Args:
        cfg: The model's TL config (``d_model``, ``n_heads``, ``d_head``, ``n_key_value_heads``).
        cached: Whether the prefix comes from a cache (else every row re-runs it).
        packed_rows: Rows packed into the same sequence (their attention width grows with it);
            0 for a right-padded batch.
    """
    d_model = int(getattr(cfg, "d_model", 512) or 512)
    n_heads = int(getattr(cfg, "n_heads", 8) or 8)
    d_head = int(getattr(cfg, "d_head", d_model // n_heads) or d_model // n_heads)
    kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    elem = torch.finfo(dtype).bits // 8
    if packed_rows:
        width = prefix_len + packed_rows * suffix_len
        per_layer = suffix_len * (16 * d_model + 6 * d_mlp + 4 * n_heads * width)
        return int(n_layers * per_layer * elem + suffix_len * d_vocab * (elem + 8))
    total = prefix_len + suffix_len
    q_len = suffix_len if cached else total
    per_layer = 2 * total * kv * d_head + q_len * (16 * d_model + 6 * d_mlp + 3 * n_heads * total)
    return int(n_layers * per_layer * elem + suffix_len * d_vocab * 8)


def ig_chunk_rows(
    adapter: Any, prefix_len: int, suffix_len: int, n_rows: int, memory_budget_mb: float | None = None
) -> int:
    """Continuation rows per IG forward so that a chunk's activations fit ``memory_budget_mb``.

    Packed rows widen every row's attention by the chunk's other rows, so the size is a fixed point
    of ``rows = budget / row_bytes(rows)``.
    """
    if memory_budget_mb is None:
        memory_budget_mb = auto_memory_budget_mb(adapter.device)
    budget = memory_budget_mb * 2**20
    packable = adapter.packs_rows_for(prefix_len, suffix_len)
    if packable < 2:
        return max(1, min(n_rows, int(budget // max(adapter.row_bytes(prefix_len, suffix_len), 1))))
    n_rows = min(n_rows, packable)
    rows = n_rows
    for _ in range(8):
        per_row = adapter.row_bytes(prefix_len, suffix_len, packed_rows=rows)
        new = max(1, min(n_rows, int(budget // max(per_row, 1))))
        if new >= rows:
            break
        rows = new
    return rows
