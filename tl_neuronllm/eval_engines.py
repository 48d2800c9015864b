"""The two inference engines of the evaluation: option probabilities of every question under every condition.

Interventions act at the site only, so every position before the site is the same in all conditions.
``engine="prefix"`` (the default for site interventions) runs each proxy's prompt prefix once and all
conditions as rows of one batched continuation over its key/value cache (the same shortcut as exact IG; on
models without a cache the prefix is re-run per row, still exact). ``engine="full"`` runs each condition over
right-padded full prompts with :func:`tl_neuronllm.answers.predict` (required for ``positions="all"``). The two
agree to float tolerance (tested). Either way the hooks are :func:`tl_neuronllm.interventions.make_hooks`, the
same ones :meth:`NeuronResult.hooks` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .adapter import ModelAdapter
from .answers import ProxyPrompt, predict, suffix_scores_at
from .eval_conditions import Condition
from .interventions import make_hooks

Engine = Literal["prefix", "full"]


def _site_hooks(
    hook_names: Sequence[str], conditions: Sequence[Condition], V: int, sites: Int[Tensor, " rows"]
) -> list[tuple[str, Any]]:
    """One hook per layer applying condition ``c``'s :func:`make_hooks` hooks at the sites of rows
    ``c*V..(c+1)*V``, given as flat indices into ``act.reshape(-1, d_mlp)`` (packed or batched rows)."""
    per_layer: dict[str, list[tuple[Tensor, Any]]] = {}
    first = torch.zeros(V, dtype=torch.long)  # each site becomes a one-position row of its own
    for c, cond in enumerate(conditions):
        rows = sites[c * V : (c + 1) * V]
        for iv in cond.interventions:
            for name, fn in make_hooks(hook_names, iv, first):
                per_layer.setdefault(name, []).append((rows, fn))

    def make(entries: list[tuple[Tensor, Any]]) -> Any:
        def hook(act: Tensor, hook: Any) -> Tensor:
            flat = act.reshape(-1, act.shape[-1]).clone()
            for rows, fn in entries:
                r = rows.to(flat.device)
                flat[r] = fn(flat[r][:, None], hook)[:, 0]
            return flat.view(act.shape)

        return hook

    return [(name, make(entries)) for name, entries in per_layer.items()]


@torch.no_grad()
def probs_prefix(
    adapter: ModelAdapter, q: ProxyPrompt, conditions: Sequence[Condition], memory_budget_mb: float
) -> Float[Tensor, "conditions n_options"]:
    """Option probabilities ``[n_conditions, n_options]`` of one query, all conditions as continuation rows
    of one prefix (:meth:`ModelAdapter.run_rows`: packed into one sequence where verified)."""
    state = adapter.prefix(q.prompt[:-1])
    suffix = q.suffixes()
    V = len(suffix)
    adapter.check_fast_paths(state, max(suffix, key=len))  # before sizing chunks by the path in use
    per_chunk = adapter.groups_per_chunk(len(q.prompt) - 1, suffix, len(conditions), memory_budget_mb)
    out = []
    for c0 in range(0, len(conditions), per_chunk):
        chunk = conditions[c0 : c0 + per_chunk]
        logits, where = adapter.run_rows(
            state,
            suffix * len(chunk),
            fwd_hooks=lambda sites, chunk=chunk: _site_hooks(adapter.hook_names, chunk, V, sites),
            group_size=V,
            flat=True,
        )
        z = suffix_scores_at(logits, where, q, len(chunk))
        out.append(torch.softmax(z.float(), dim=-1).cpu())
        del logits
    return torch.cat(out)


def probs_full(
    adapter: ModelAdapter, queries: Sequence[ProxyPrompt], cond: Condition, batch_size: int
) -> list[Float[Tensor, " n_options"]]:
    """Option probabilities of every query under one condition, over right-padded full prompts."""
    ivs = cond.interventions

    def hooks_at(site: Tensor) -> list[tuple[str, Any]]:
        return [h for iv in ivs for h in make_hooks(adapter.hook_names, iv, site)]

    return predict(adapter, queries, fwd_hooks=hooks_at if ivs else (), batch_size=batch_size)


def _bar(it: Iterable[Any], progress: bool, desc: str, unit: str) -> Iterable[Any]:
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit=unit)


def run_conditions(
    adapter: ModelAdapter,
    queries: Sequence[ProxyPrompt],
    conditions: Sequence[Condition],
    *,
    engine: Engine,
    batch_size: int,
    memory_budget_mb: float,
    progress: bool = True,
) -> list[list[Float[Tensor, " n_options"]]]:
    """Option probabilities ``[condition][query]`` of every query under every condition.

    Call it under ``torch.no_grad()`` with the model state preserved (the hooks are removed afterwards either
    way).

    Raises:
        ValueError: for an unknown engine.
    """
    probs: list[list[Tensor]] = [[] for _ in conditions]
    if engine == "prefix":
        adapter.share_prefix([q.prompt for q in queries])
        for q in _bar(queries, progress, f"evaluate ({len(conditions)} conditions)", "question"):
            p = probs_prefix(adapter, q, conditions, memory_budget_mb)
            for c in range(len(conditions)):
                probs[c].append(p[c])
    elif engine == "full":
        for c in _bar(range(len(conditions)), progress, f"evaluate ({len(queries)} questions)", "condition"):
            probs[c] = probs_full(adapter, queries, conditions[c], batch_size)
    else:
        raise ValueError(f"engine must be 'prefix' or 'full', got {engine!r}")
    return probs


__all__ = ["Engine", "probs_full", "probs_prefix", "run_conditions"]
