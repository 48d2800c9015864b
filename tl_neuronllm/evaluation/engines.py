"""The two inference engines of the evaluation: option probabilities of every question under every condition.

Interventions act at the site only, so every position before the site is the same in all conditions.
``engine="prefix"`` (the default for site interventions) runs each proxy's prompt prefix once and all
conditions as rows of one batched continuation over its key/value cache (the same shortcut as exact IG; on
models without a cache the prefix is re-run per row, still exact). ``engine="full"`` runs each condition over
right-padded full prompts with :func:`tl_neuronllm.model.answers.predict` (required for ``positions="all"``). The two
agree to float tolerance (tested). Either way the hooks are :func:`tl_neuronllm.result.interventions.make_hooks`, the
same ones :meth:`NeuronResult.hooks` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.evaluation.conditions import Condition
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt, predict, suffix_scores_at
from tl_neuronllm.model.shortcuts import PackedLayout, close, max_err, packed_logits
from tl_neuronllm.result.interventions import make_hooks

Engine = Literal["prefix", "full"]


def _site_hooks(
    hook_names: Sequence[str], conditions: Sequence[Condition], sites_of: Sequence[Int[Tensor, " rows"]]
) -> list[tuple[str, Any]]:
    """One hook per layer applying condition ``c``'s :func:`make_hooks` hooks at ``sites_of[c]``, flat
    indices into ``act.reshape(-1, d_mlp)`` (packed or batched rows; repeats allowed)."""
    per_layer: dict[str, list[tuple[Tensor, Any]]] = {}
    for cond, rows in zip(conditions, sites_of):
        first = torch.zeros(len(rows), dtype=torch.long)  # each site becomes a one-position row of its own
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
            fwd_hooks=lambda sites, chunk=chunk: _site_hooks(
                adapter.hook_names, chunk, [sites[c * V : (c + 1) * V] for c in range(len(chunk))]
            ),
            group_size=V,
            flat=True,
        )
        z = suffix_scores_at(logits, where, q, len(chunk))
        out.append(torch.softmax(z.float(), dim=-1).cpu())
        del logits
    return torch.cat(out)


#: Most tokens :func:`probs_packed` puts in one forward: attention over the packed tokens grows with the
#: square of their number while each question's rows see only their own branch; at 512 tokens it stays a few
#: percent of a SmolLM2 forward's multiply-adds.
MAX_PACKED_TOKENS = 512


def _packed_tokens(adapter: ModelAdapter, q: ProxyPrompt) -> tuple[int, int]:
    """Tokens one question adds to a packed forward: its own prompt tokens, and each condition's option tree."""
    shared = adapter.shared_state
    own = len(q.prompt) - 1 - (len(shared.tokens) if shared is not None else 0)
    suffix = q.suffixes()
    return own, len(PackedLayout.of(suffix, len(suffix)).tokens)


@torch.no_grad()
def probs_packed(
    adapter: ModelAdapter, queries: Sequence[ProxyPrompt], conditions: Sequence[Condition]
) -> list[Float[Tensor, "conditions n_options"]]:
    """:func:`probs_prefix` of several questions in **one** forward: after the run's shared prefix (its
    key/value cache), each question's own prompt tokens run once, and each condition's option rows branch
    off at the site (a :class:`PackedLayout` tree), so the questions and conditions never see each other.

    Needs the shared prefix and packed rows verified (:attr:`ModelAdapter.shared_state`); the first use
    in a run is compared with :func:`probs_prefix` by :func:`run_conditions`.
    """
    shared = adapter.shared_state
    assert shared is not None
    P, C = len(shared.tokens), len(conditions)
    rows: list[list[int]] = []
    tags: list[tuple[int, int]] = []
    sizes: list[int] = []
    spans: list[tuple[int, int, int]] = []  # first row, own length, options
    for q in queries:
        if list(q.prompt[:P]) != shared.tokens or len(q.prompt) < P + 1:
            raise ValueError("probs_packed: a prompt does not continue the run's shared prefix")
        own, suffix = list(q.prompt[P:-1]), q.suffixes()
        spans.append((len(rows), len(own), len(suffix)))
        for c in range(C):
            for r in suffix:
                rows.append(own + r)
                tags.append((len(own), c))
        sizes.append(C * len(suffix))

    def hooks(sites: Tensor) -> list[tuple[str, Any]]:
        of = [torch.cat([sites[s + c * V : s + (c + 1) * V] for s, _, V in spans]) for c in range(C)]
        return _site_hooks(adapter.hook_names, conditions, of)

    at = [t[0] for t in tags]  # each row's site: the first position whose logits are read
    logits, where = packed_logits(
        adapter, shared, rows, fwd_hooks=hooks, group_size=sizes, tags=tags, site_at=at, logits_from=at
    )
    out = []
    for q, (s, d, V) in zip(queries, spans):
        z = suffix_scores_at(logits, where[s : s + C * V, d:], q, C)
        out.append(torch.softmax(z.float(), dim=-1).cpu())
    return out


#: One packed forward's share of a question: ``(query index, first condition, end condition)``.
Unit = tuple[int, int, int]


def _packed_batches(
    adapter: ModelAdapter, queries: Sequence[ProxyPrompt], n_conditions: int, memory_budget_mb: float
) -> list[list[Unit]]:
    """The packed forwards: consecutive questions with all their conditions in batches of at most
    :data:`MAX_PACKED_TOKENS` packed tokens (and the model's context and ``memory_budget_mb``); a question
    that alone exceeds them runs its conditions in consecutive parts, one forward each (its own prompt
    tokens again in each), so no forward's attention grows with the square of all its conditions' tokens."""
    shared = adapter.shared_state
    P = len(shared.tokens) if shared is not None else 0
    per_token = 12 * adapter.d_vocab + 64 * adapter.d_mlp  # no grad: logits, a float32 copy, MLP activations
    cap = min(MAX_PACKED_TOKENS, adapter.packs_rows_for(P, 1), int(memory_budget_mb * 2**20 // per_token))
    batches: list[list[Unit]] = []
    used = cap + 1
    for i, q in enumerate(queries):
        own, tree = _packed_tokens(adapter, q)
        n = own + n_conditions * tree
        if n > cap:
            per = max(1, (cap - own) // tree)
            batches += [[(i, c0, min(c0 + per, n_conditions))] for c0 in range(0, n_conditions, per)]
            used = cap + 1
            continue
        if used + n > cap:
            batches.append([])
            used = 0
        batches[-1].append((i, 0, n_conditions))
        used += n
    return batches


def _run_packed(
    adapter: ModelAdapter,
    queries: Sequence[ProxyPrompt],
    conditions: Sequence[Condition],
    memory_budget_mb: float,
    progress: bool,
    first: Tensor,
) -> list[Tensor] | None:
    """Every question's probabilities through :func:`probs_packed` (``first``: the first question's by
    :func:`probs_prefix`, which ran the path checks), or ``None`` when it does not apply or its one-time check
    against ``first`` fails (then with one warning)."""
    fp = adapter.fast
    if fp.packed_queries is False or adapter.shared_state is None or not fp.packed_rows or len(queries) < 2:
        return None
    batches = _packed_batches(adapter, queries, len(conditions), memory_budget_mb)
    out: list[Tensor] = [first]
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(queries), initial=1, desc=f"evaluate ({len(conditions)} conditions)", unit="question")
    try:
        return _packed_loop(adapter, queries, conditions, batches, first, out, bar)
    finally:
        if bar is not None:
            bar.close()


def _packed_loop(
    adapter: ModelAdapter,
    queries: Sequence[ProxyPrompt],
    conditions: Sequence[Condition],
    batches: list[list[Unit]],
    first: Tensor,
    out: list[Tensor],
    bar: Any,
) -> list[Tensor] | None:
    """The packed forwards of :func:`_run_packed` (``bar``: a question-count bar or None): the first question
    again, compared once with ``first``, then every other question in order."""
    parts: list[Tensor] = []  # the condition parts of a question split over several forwards
    for units in batches:
        if len(units) == 1 and units[0][1:] != (0, len(conditions)):
            i, c0, c1 = units[0]
            parts += probs_packed(adapter, [queries[i]], conditions[c0:c1])
            if c1 < len(conditions):
                continue
            got, parts = [torch.cat(parts)], []
        else:
            i = units[0][0]
            got = probs_packed(adapter, [queries[u[0]] for u in units], conditions)
        if i == 0:
            if adapter.checks.pending("packed_queries") and not adapter.checks.record(
                "packed_queries",
                close(got[0], first, adapter.float_dtype()),
                what="packing several questions into one forward",
                reason=max_err(got[0], first),
                cost="one forward per question",
            ):
                return None
            got = got[1:]
        out += got
        if bar is not None:
            bar.update(len(got))
    return out


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
        packed: list[Tensor] = []
        if queries:
            first = probs_prefix(adapter, queries[0], conditions, memory_budget_mb)  # runs the path checks
            packed = _run_packed(adapter, queries, conditions, memory_budget_mb, progress, first) or [first]
        if len(packed) < len(queries):
            each = _bar(queries[1:], progress, f"evaluate ({len(conditions)} conditions)", "question")
            packed += [probs_prefix(adapter, q, conditions, memory_budget_mb) for q in each]
        for p in packed:
            for c in range(len(conditions)):
                probs[c].append(p[c])
    elif engine == "full":
        for c in _bar(range(len(conditions)), progress, f"evaluate ({len(queries)} questions)", "condition"):
            probs[c] = probs_full(adapter, queries, conditions[c], batch_size)
    else:
        raise ValueError(f"engine must be 'prefix' or 'full', got {engine!r}")
    return probs


__all__ = ["Engine", "probs_full", "probs_packed", "probs_prefix", "run_conditions"]
