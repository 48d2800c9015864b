"""Attribution of the target F to every MLP neuron at the site.

Methods (one interface, a method name each):

* ``"ig"`` (default): exact per-layer integrated gradients. For layer ``l`` with site activation
  ``a`` (``d_mlp`` values), scale the whole vector by ``alpha`` while every other layer runs
  normally: ``IG_l(i) = a_i * sum_k w_k dF(alpha_k a)/da_i``, zero baseline; ``alpha_k = k/m``,
  ``w_k = 1/m`` (``rule="riemann"``, the method's) or Gauss-Legendre nodes on [0, 1]
  (``rule="gauss"``). Computed with the **prefix-cache shortcut**: scaling happens at the last
  position only and attention is causal, so the prompt prefix is run once and all ``L x m``
  scaled variants run as one-token continuations of its key/value cache, with one hook per layer
  writing its rows' scaled activations and one ``torch.autograd.grad`` per chunk for all layers.
  Three more exact savings (:meth:`ModelAdapter.run_rows`, each checked once per model): the rows
  are packed into one sequence with a prefix-tree attention mask (no per-row cache copies; the cloze
  options of one scaled variant share its site token and common first tokens, and no option's last
  token is run, since it predicts nothing the score needs);
  the rows of layer ``l`` are identical to the clean run below block ``l``, so they join the
  sequence there (``m * L (L + 1) / 2`` block passes instead of ``m * L^2``), taking the clean run's
  state at that block, which the first forward records (later forwards run no clean rows); and in letter mode
  with an options-only target only the letter columns of the unembedding are computed.
  :func:`ig_naive` (full sequence, one layer and one step at a time, as knowledge neurons and
  QR-Neuron do it) is kept as the reference; the two agree to float tolerance.
* ``"grad_x_act"``: ``a * dF/da`` at ``alpha = 1`` for all layers at once (attribution patching
  with a zero baseline): one forward and one backward per batch of prompts.
* ``"activation"``: the site activation itself (no gradient).

Gradients are taken with ``torch.autograd.grad`` with respect to activation leaves, so no
parameter ``.grad`` is ever written. Sums are accumulated in float32 on CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import (
    ProxyPrompt,
    Target,
    batch_full_rows,
    full_rows,
    full_scores,
    suffix_scores_at,
    target_fn,
)
from tl_neuronllm.model.memory import auto_memory_budget_mb, row_bytes
from tl_neuronllm.model.shortcuts import JoinStates

METHODS = ("ig", "grad_x_act", "activation")
Rule = Literal["riemann", "gauss"]


def ig_points(steps: int, rule: Rule = "riemann") -> tuple[list[float], list[float]]:
    """Scaling factors ``alpha_k`` and weights ``w_k`` of the IG path integral over [0, 1]."""
    if steps < 1:
        raise ValueError(f"ig steps must be >= 1, got {steps}")
    if rule == "riemann":
        return [k / steps for k in range(1, steps + 1)], [1.0 / steps] * steps
    if rule == "gauss":
        x, w = np.polynomial.legendre.leggauss(steps)
        return [float(v) for v in (x + 1) / 2], [float(v) for v in w / 2]
    raise ValueError(f"ig rule must be 'riemann' or 'gauss', got {rule!r}")


def _layers(adapter: ModelAdapter, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(adapter.n_layers))
    bad = [layer for layer in layers if not 0 <= layer < adapter.n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} is out of range for a model with {adapter.n_layers} layers")
    return sorted({int(x) for x in layers})


def ig_fast(
    adapter: ModelAdapter,
    q: ProxyPrompt,
    *,
    steps: int = 16,
    rule: Rule = "riemann",
    target: Target = "ce",
    layers: Sequence[int] | None = None,
    chunk_rows: int | None = None,
    memory_budget_mb: float | None = None,
) -> tuple[Float[Tensor, "n_layers d_mlp"], Float[Tensor, " n_options"], Float[Tensor, "n_layers d_mlp"]]:
    """Exact per-layer IG of one query through the prefix key/value cache.

    The prompt prefix (all tokens before the site) is run once; the clean run and the ``L x m``
    scaled variants are continuation rows of it (:meth:`ModelAdapter.run_rows`: packed into one
    sequence on a ``TransformerBridge``, a batch over an expanded cache on a ``HookedTransformer``),
    chunked to ``chunk_rows`` rows per forward; each chunk has one backward for all its layers.

    Args:
        adapter: Model adapter.
        q: The tokenized proxy.
        steps: Number of IG steps m.
        rule: ``"riemann"`` (alpha_k = k/m) or ``"gauss"`` (Gauss-Legendre).
        target: ``"ce"``, ``"prob"`` or ``"vocab_prob"`` (see :mod:`tl_neuronllm.model.answers`).
        layers: Layers to attribute (default all); others get zeros.
        chunk_rows: Continuation rows per forward (default: from ``memory_budget_mb``).
        memory_budget_mb: Activation memory to aim for when sizing chunks (default
            :func:`auto_memory_budget_mb`: half the free memory of a CUDA device, 1024 MB on CPU).
            The estimate is conservative: on SmolLM2-135M a 1024 MB budget peaked at +327 MB.

    Returns:
        ``(ig, probs, acts)``: IG scores ``[n_layers, d_mlp]`` (float32, CPU), the clean option
        probabilities of the query and the clean site activations (zeros for skipped layers).

    Raises:
        RuntimeError: if even the plain path without any shortcut disagrees with :func:`ig_naive`
            on this model (nothing exact is left to run).
    """
    ensure_exact_ig(adapter, q, rule=rule, target=target)
    return _ig_fast(
        adapter,
        q,
        steps=steps,
        rule=rule,
        target=target,
        layers=layers,
        chunk_rows=chunk_rows,
        memory_budget_mb=memory_budget_mb,
    )


def ensure_exact_ig(adapter: ModelAdapter, q: ProxyPrompt, *, rule: Rule = "riemann", target: Target = "ce") -> None:
    """Check once per adapter, on this real query, that one layer's fast IG (every shortcut in use)
    equals :func:`ig_naive`; switch shortcuts off one by one (with a warning) until it does.

    The checked layer is the middle one (so rows joining at later blocks are exercised), with 2 steps.

    Raises:
        RuntimeError: if the plain path without shortcuts disagrees too.
    """
    if not adapter.checks.pending("exact_ig"):
        return
    layer = adapter.n_layers // 2
    while True:
        # one scaled group per forward: the second joins from the clean states the first recorded
        chunk = 2 * len(q.suffixes())
        fast, _, _ = _ig_fast(adapter, q, steps=2, rule=rule, target=target, layers=[layer], chunk_rows=chunk)
        naive = ig_naive(adapter, q, steps=2, rule=rule, target=target, layers=[layer])
        if not bool(torch.isfinite(naive).all()):
            return  # the model itself makes nan/inf: nothing to compare; the run's finiteness checks name it
        tol = 1e-3 if torch.finfo(adapter.float_dtype()).bits >= 32 else 5e-2
        err = float((fast[layer] - naive[layer]).abs().max())
        scale = float(naive[layer].abs().max())
        if bool(torch.isfinite(fast).all()) and err <= tol * scale + 1e-7:
            adapter.checks.record("exact_ig", True)
            return
        reason = f"layer {layer} IG differs from the naive loop by {err:.3g} (naive max {scale:.3g})"
        if not adapter.disable_shortcuts(reason):
            adapter.checks.record("exact_ig", False)
            if torch.finfo(adapter.float_dtype()).bits < 32:  # 16-bit rounding, not a wrong path
                warnings.warn(
                    f"tl_neuronllm: {reason} on a {adapter.float_dtype()} model even without shortcuts "
                    "(16-bit rounding); scores carry that much noise",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return
            raise RuntimeError(
                f"tl_neuronllm cannot compute exact IG on this model: {reason} even without any "
                "shortcut; please report this with the model and versions"
            )


def _ig_fast(
    adapter: ModelAdapter,
    q: ProxyPrompt,
    *,
    steps: int,
    rule: Rule,
    target: Target,
    layers: Sequence[int] | None,
    chunk_rows: int | None = None,
    memory_budget_mb: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`ig_fast` without the one-time exactness check."""
    lays = _layers(adapter, layers)
    alphas, weights = ig_points(steps, rule)
    state = adapter.prefix(q.prompt[:-1])
    suffix = q.suffixes()
    V = len(suffix)
    cols, q_cols = _letter_columns(q, target)
    adapter.check_fast_paths(state, max(suffix, key=len), cols)  # before sizing chunks by the path in use
    # (layer, alpha, weight), in layer order; the first chunk starts with the clean run (layer -1): it gives
    # the model's own prediction, and the groups join it at their layer
    pairs = [(layer, a, w) for layer in lays for a, w in zip(alphas, weights)]
    clean = (-1, 1.0, 0.0)
    if chunk_rows is None:
        per_chunk = max(1, adapter.groups_per_chunk(len(q.prompt) - 1, suffix, len(pairs) + 1, memory_budget_mb) - 1)
    else:
        per_chunk = max(1, chunk_rows // V - 1)
    n_chunks = max(1, -(-len(pairs) // per_chunk))
    per_chunk = -(-len(pairs) // n_chunks)  # balance the chunks
    gsum = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float32)
    acts = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float32)
    probs = None
    # the first chunk records the clean run's state at every block; later chunks leave the clean run out
    # and their groups join from the recorded states (where run_rows skips blocks: elsewhere nothing is
    # recorded and every chunk keeps the clean run)
    join = JoinStates()
    for c0 in range(0, max(len(pairs), 1), per_chunk):
        chunk = ([] if c0 and join.ready else [clean]) + pairs[c0 : c0 + per_chunk]
        row_layer = torch.tensor([p[0] for p in chunk for _ in range(V)])
        row_alpha = torch.tensor([p[1] for p in chunk for _ in range(V)])
        row_w = torch.tensor([p[2] for p in chunk for _ in range(V)], dtype=torch.float32)
        leaves: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        chunk_layers = sorted({p[0] for p in chunk if p[0] >= 0})
        hooks = _scaling_hooks(adapter, chunk_layers, row_layer, row_alpha, leaves)
        # group l needs blocks l.. only: below, it is the clean run
        starts = [max(p[0], 0) for p in chunk]
        logits, where = adapter.run_rows(
            state,
            suffix * len(chunk),
            fwd_hooks=hooks,
            group_start=starts,
            group_size=V,
            logit_cols=cols,
            flat=True,
            join=join,
        )
        z = suffix_scores_at(logits, where, q_cols, len(chunk), target == "vocab_prob")
        F = target_fn(z, q.gold, target)
        if probs is None:
            probs = torch.softmax(z[0].detach().float(), -1).cpu()  # softmax is shift-invariant
        if not leaves:
            continue
        grads = torch.autograd.grad(F.sum(), [leaves[layer][0] for layer in chunk_layers])
        for layer, g in zip(chunk_layers, grads):
            x, a, rows = leaves[layer]
            gsum[layer] += (row_w[rows][:, None] * g.float().cpu()).sum(0)
            acts[layer] = a[0].float().cpu()
        leaves.clear()
        del logits, grads, F, z
    assert probs is not None
    return acts * gsum, probs, acts


def _scaling_hooks(
    adapter: ModelAdapter,
    layers: Sequence[int],
    row_layer: Tensor,
    row_alpha: Tensor,
    leaves: dict[int, tuple[Tensor, Tensor, Tensor]],
) -> Any:
    """The hooks of one IG forward, as a function of the rows' sites: at each layer, its rows' site activation
    scaled by their alpha, a leaf recorded in ``leaves[layer]`` as ``(scaled leaf, clean activation, rows)``."""

    def make_hook(layer: int, rows: Tensor, site: Tensor) -> Any:
        def hook(act: Tensor, hook: Any) -> Tensor:
            flat = act.reshape(-1, act.shape[-1])
            a = flat[site].detach()
            x = (row_alpha[rows, None].to(a) * a).requires_grad_(True)
            leaves[layer] = (x, a, rows)
            return flat.index_copy(0, site, x).view(act.shape)

        return hook

    def hooks(sites: Tensor) -> list[tuple[str, Any]]:
        out = []
        for layer in layers:
            rows = (row_layer == layer).nonzero().squeeze(-1)
            # packed rows of one (layer, alpha) group share their site: one leaf per distinct site,
            # whose gradient sums the group's rows (what separate leaves of the rows would sum to)
            site, first = _first_of_each(sites[rows.to(sites.device)])
            out.append((adapter.hook_names[layer], make_hook(layer, rows[first.cpu()], site)))
        return out

    return hooks


def _first_of_each(sites: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct values of ``sites`` (in order of first appearance) and where each first appears."""
    uniq, inv = torch.unique(sites, return_inverse=True)
    first = torch.full((len(uniq),), len(sites), dtype=torch.long, device=sites.device)
    first = first.scatter_reduce(0, inv, torch.arange(len(sites), device=sites.device), reduce="amin")
    order = first.argsort()
    return uniq[order], first[order]


def _gxa_batches(
    adapter: ModelAdapter, queries: Sequence[ProxyPrompt], batch_size: int, memory_budget_mb: float | None
) -> list[tuple[int, int]]:
    """``[start, end)`` of consecutive query batches: at most ``batch_size`` queries, and full rows whose
    estimated activation memory (right-padded to the batch's longest row) fits ``memory_budget_mb``."""
    budget = (auto_memory_budget_mb(adapter.device) if memory_budget_mb is None else memory_budget_mb) * 2**20
    dtype = adapter.float_dtype()

    def row_cost(t: int) -> int:  # a full row of t tokens, no cache
        cfg, L, d_mlp, d_vocab = adapter.model.cfg, adapter.n_layers, adapter.d_mlp, adapter.d_vocab
        return row_bytes(
            cfg, n_layers=L, d_mlp=d_mlp, d_vocab=d_vocab, dtype=dtype, cached=False, prefix_len=0, suffix_len=t
        )

    out: list[tuple[int, int]] = []
    b0, n_rows, longest = 0, 0, 0
    for i, q in enumerate(queries):
        rows, _ = full_rows(q)
        r, t = n_rows + len(rows), max(longest, max(len(x) for x in rows))
        full = i > b0 and (i - b0 >= batch_size or r * row_cost(t) > budget)
        if full:
            out.append((b0, i))
            b0, r, t = i, len(rows), max(len(x) for x in rows)
        n_rows, longest = r, t
    if queries:
        out.append((b0, len(queries)))
    return out


def _letter_columns(q: ProxyPrompt, target: Target) -> tuple[list[int] | None, ProxyPrompt]:
    """The vocabulary columns F needs (letter mode, options-only targets) and the query with its
    letter ids renumbered into them; ``(None, q)`` when F needs the whole vocabulary."""
    if q.letter_ids is None or target == "vocab_prob":
        return None, q
    cols = sorted({t for ids in q.letter_ids for t in ids})
    where = {t: i for i, t in enumerate(cols)}
    return cols, replace(q, letter_ids=tuple(tuple(where[t] for t in ids) for ids in q.letter_ids))


def ig_naive(
    adapter: ModelAdapter,
    q: ProxyPrompt,
    *,
    steps: int = 16,
    rule: Rule = "riemann",
    target: Target = "ce",
    layers: Sequence[int] | None = None,
) -> Float[Tensor, "n_layers d_mlp"]:
    """Reference IG: full sequences, one layer and one step per forward+backward (no cache)."""
    lays = _layers(adapter, layers)
    alphas, weights = ig_points(steps, rule)
    rows, site = full_rows(q)
    toks, _ = adapter.pad_batch(rows)
    out = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float32)
    for layer in lays:
        total = torch.zeros(adapter.d_mlp, dtype=torch.float32)
        a_clean = None
        for alpha, w in zip(alphas, weights):
            box: dict[str, Tensor] = {}

            def hook(act: Tensor, hook: Any) -> Tensor:
                a = act[:, site].detach()
                x = (alpha * a).requires_grad_(True)
                box["x"], box["a"] = x, a
                act = act.clone()
                act[:, site] = x
                return act

            logits = adapter.forward(toks, fwd_hooks=[(adapter.hook_names[layer], hook)])
            F = target_fn(full_scores(logits, q, site, target == "vocab_prob"), q.gold, target)
            (g,) = torch.autograd.grad(F, [box["x"]])
            total += w * g.float().sum(0).cpu()
            a_clean = box["a"][0].float().cpu()
        assert a_clean is not None
        out[layer] = a_clean * total
    return out


def grad_x_act(
    adapter: ModelAdapter,
    queries: Sequence[ProxyPrompt],
    *,
    target: Target = "ce",
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    with_grad: bool = True,
    memory_budget_mb: float | None = None,
) -> tuple[
    Float[Tensor, "n_queries n_layers d_mlp"],
    list[Float[Tensor, " n_options"]],
    Float[Tensor, "n_queries n_layers d_mlp"],
]:
    """``a * dF/da`` at the site for all layers, batched over queries (right-padded full rows).

    With ``with_grad=False`` returns the site activations themselves (method ``"activation"``).
    A batch holds at most ``batch_size`` queries and, with gradients, only as many full rows as the
    activation memory model allows under ``memory_budget_mb`` (default :func:`auto_memory_budget_mb`; at
    least one query): long prompts (IMDB reviews, cloze rows of every option) keep every layer's attention
    scores for the backward pass, about 1.4 GB per 650-token row on SmolLM2.

    Returns:
        ``(scores, probs, acts)``: per-query scores ``[n_queries, n_layers, d_mlp]``, clean option
        probs and site activations.
    """
    lays = _layers(adapter, layers)
    out = torch.zeros(len(queries), adapter.n_layers, adapter.d_mlp, dtype=torch.float32)
    acts = torch.zeros_like(out)
    probs: list[Tensor] = []
    for b0, b1 in _gxa_batches(adapter, queries, batch_size, memory_budget_mb if with_grad else float("inf")):
        qs = queries[b0:b1]
        rows, sites, starts = batch_full_rows(qs)
        toks, _ = adapter.pad_batch(rows)
        site_t = torch.tensor(sites, device=toks.device)
        ar = torch.arange(len(rows), device=toks.device)
        leaves: dict[int, tuple[Tensor, Tensor]] = {}

        def make_hook(layer: int) -> Any:
            def hook(act: Tensor, hook: Any) -> Tensor:
                # an additive zero probe: its gradient is the total derivative dF/da, including
                # the paths through later layers' neurons (a detached leaf would cut them)
                a = act[ar, site_t].detach()
                probe = torch.zeros_like(a).requires_grad_(with_grad)
                leaves[layer] = (probe, a)
                if not with_grad:
                    return act
                act = act.clone()
                act[ar, site_t] = act[ar, site_t] + probe
                return act

            return hook

        with torch.set_grad_enabled(with_grad):
            logits = adapter.forward(toks, fwd_hooks=[(adapter.hook_names[layer], make_hook(layer)) for layer in lays])
            Fs = []
            for i, q in enumerate(qs):
                n = 1 if q.continuations is None else len(q.continuations)
                z = full_scores(logits[starts[i] : starts[i] + n], q, sites[starts[i]], target == "vocab_prob")
                probs.append(torch.softmax(z.detach().float(), -1).cpu())
                Fs.append(target_fn(z, q.gold, target))
            if with_grad:
                grads = torch.autograd.grad(torch.stack(Fs).sum(), [leaves[layer][0] for layer in lays])
            else:
                grads = [None] * len(lays)
        for layer, g in zip(lays, grads):
            a = leaves[layer][1].float().cpu()
            val = a * g.float().cpu() if g is not None else a
            for i, q in enumerate(qs):
                n = 1 if q.continuations is None else len(q.continuations)
                # the site activation is shared by a query's rows; its gradient sums over them
                out[b0 + i, layer] = val[starts[i] : starts[i] + n].sum(0) if g is not None else a[starts[i]]
                acts[b0 + i, layer] = a[starts[i]]
    return out, probs, acts
