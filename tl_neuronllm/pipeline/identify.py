"""``identify``: the whole method in one call, and ``rescore``.

task -> augmented proxies -> tokenized prompts (:func:`~tl_neuronllm.pipeline.prepare.prepare`) -> per-proxy
attributions (an :class:`~tl_neuronllm.attribution.methods.AttributionMethod`) -> a streaming reducer (the ACE score,
or a baseline's, :mod:`tl_neuronllm.scoring.reducers`) -> ranked good/bad neurons. The user's model leaves the
call exactly as it came in (hooks, ``requires_grad``, ``.grad``, train/eval mode), also when the call
raises or is interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_neuronllm.attribution.methods import AttributionOptions, code_fingerprint, correct_mask
from tl_neuronllm.attribution.methods import attribute_items as attribute_item_batch
from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.config.result import ResultConfig
from tl_neuronllm.data.tasks import Item, Task, TaskError
from tl_neuronllm.errors import ModelError
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import AnswerTally, ProxyPrompt, check_finite_probs
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.model.state import preserved_model_state
from tl_neuronllm.pipeline.checkpoint import Checkpoint, model_fingerprint
from tl_neuronllm.pipeline.prepare import (
    Prepared,
    prefix_witnesses,
    prepare,
    require_autograd,
)
from tl_neuronllm.pipeline.progress import ItemBar
from tl_neuronllm.pipeline.resolve import resolve
from tl_neuronllm.provenance import versions
from tl_neuronllm.result.neuron_result import NeuronResult, build_result
from tl_neuronllm.scoring.reducers import ACEReducer, Reducer
from tl_neuronllm.validate import check_bool, check_count_or_fraction, check_int

__all__ = ["identify", "run_scoring"]


def check_finite_attributions(ig: Tensor, mask: Tensor, start: int, item_ids: Sequence[str] | None = None) -> None:
    """Refuse ``nan``/``inf`` attributions of the proxies in ``mask``, naming the first layer and item.

    Raises:
        ModelError: for a non-finite attribution.
    """
    bad = ~torch.isfinite(ig) & (mask[:, :, None, None] > 0)
    if not bool(bad.any()):
        return
    i, p, layer, n = (int(x) for x in bad.nonzero()[0])
    idx = start + i
    name = repr(item_ids[idx]) if item_ids is not None and idx < len(item_ids) else f"#{idx}"
    layers = sorted({int(x) for x in bad.nonzero()[:, 2]})
    raise ModelError(
        f"non-finite attribution ({float(ig[i, p, layer, n])}) at layer {layer} (neuron {n}) for item {name} "
        f"(proxy {p}); layers with non-finite values in this batch: {layers}. The model produces nan/inf "
        "activations or gradients on this prompt (check its weights and dtype); no scores were formed"
    )


def run_scoring(
    adapter: ModelAdapter,
    queries: Sequence[Sequence[ProxyPrompt]],
    cfg: IdentifyConfig,
    *,
    reducer: Reducer | None = None,
    act_sum: Tensor | None = None,
    start: int = 0,
    progress: bool = True,
    tally: AnswerTally | None = None,
    on_batch: Callable[[int, Reducer, Tensor, AnswerTally], None] | None = None,
    kept: list[tuple[Tensor, Tensor]] | None = None,
    item_ids: Sequence[str] | None = None,
) -> tuple[Reducer, Tensor, AnswerTally]:
    """Stream items ``start..`` through ``cfg.method``'s attribution into its reducer (a new one if not given),
    the activation sum and the tally of the model's answers (running sums: nothing is kept per item).

    ``on_batch(next_item, reducer, act_sum, tally)`` is called after each batch (checkpointing);
    each batch's ``(attributions, proxy_mask)`` is appended to ``kept`` when it is given.
    ``item_ids`` name the items in errors.

    Returns:
        ``(reducer, act_sum, tally)``.

    Raises:
        ModelError: if an attribution or an option probability is ``nan`` or ``inf`` (naming the item).
    """
    method, reducer_cls = resolve(cfg.method, cfg.method_kwargs)
    reducer = reducer or reducer_cls.create(adapter.n_layers, adapter.d_mlp, cfg.scoring)
    act_sum = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float64) if act_sum is None else act_sum
    options = AttributionOptions.from_config(cfg)
    tally = tally or AnswerTally()
    bar = ItemBar(progress, len(queries), start, f"identify ({cfg.method})")
    try:
        _score_batches(
            method, adapter, queries, cfg, reducer, act_sum, tally, start, options, on_batch, kept, item_ids, bar
        )
    finally:
        bar.close()
    return reducer, act_sum, tally


def _score_batches(
    method: Any,
    adapter: ModelAdapter,
    queries: Sequence[Sequence[ProxyPrompt]],
    cfg: IdentifyConfig,
    reducer: Reducer,
    act_sum: Tensor,
    tally: AnswerTally,
    start: int,
    options: AttributionOptions,
    on_batch: Callable[[int, Reducer, Tensor, AnswerTally], None] | None,
    kept: list[tuple[Tensor, Tensor]] | None,
    item_ids: Sequence[str] | None,
    bar: ItemBar,
) -> None:
    """The batches of :func:`run_scoring`, streamed into the reducer. With the bar on and the model on the CPU,
    the items of a batch are attributed one at a time (the bar moves per item; on the CPU the attributions are
    the same bit for bit, which tests/test_display.py checks) and joined before the reducer sees the batch."""
    per_item = bar.bar is not None and adapter.device.type == "cpu"
    for b in range(start, len(queries), cfg.batch_size):
        batch = queries[b : b + cfg.batch_size]
        if per_item:
            ig, mask, probs, a = _attribute_per_item(method, adapter, batch, options, bar)
        else:
            ig, mask, probs, a = attribute_item_batch(method, adapter, batch, options)
            bar.update(len(batch))
        check_finite_attributions(ig, mask, b, item_ids)
        ids = item_ids[b : b + len(batch)] if item_ids is not None else [f"#{b + i}" for i in range(len(batch))]
        check_finite_probs(probs, ids, "identify")
        reducer.update(ig, mask, correct_mask(batch, probs, ig.shape[1]) if reducer.needs_correct else None)
        if kept is not None:
            kept.append((ig, mask))
        act_sum += a
        tally.add(batch, probs)
        if on_batch is not None:
            on_batch(b + len(batch), reducer, act_sum, tally)


def _attribute_per_item(
    method: Any, adapter: ModelAdapter, batch: Sequence[Sequence[ProxyPrompt]], options: Any, bar: ItemBar
) -> tuple[Tensor, Tensor, list[list[Tensor]], Tensor]:
    """:func:`attribute_item_batch` of a batch, one item at a time, joined (proxy axis padded to the widest)."""
    parts = []
    for qs in batch:
        parts.append(attribute_item_batch(method, adapter, [qs], options))
        bar.update(1)
    ig, mask = stack_kept([(p[0], p[1]) for p in parts])
    probs = [pr for p in parts for pr in p[2]]
    act_sum = torch.stack([p[3] for p in parts]).sum(0)
    return ig, mask, probs, act_sum


def score_resumable(
    adapter: ModelAdapter,
    queries: Sequence[Sequence[ProxyPrompt]],
    cfg: IdentifyConfig,
    *,
    checkpoint: str | Path | None,
    checkpoint_every: int,
    fingerprint: dict[str, Any],
    progress: bool,
    kept: list[tuple[Tensor, Tensor]] | None = None,
    item_ids: Sequence[str] | None = None,
) -> tuple[Reducer, Tensor, AnswerTally]:
    """:func:`run_scoring`, snapshotting to ``checkpoint`` (if given) and resuming from it.

    ``fingerprint`` (with the config, the model's shape and a hash of its weights, see
    :func:`model_fingerprint`) identifies the run's arguments and model.

    Raises:
        ValueError: for a checkpoint of another run or model; ``ResultFileError`` for an unreadable one.
    """
    start, reducer, act_sum, tally = 0, None, None, None
    on_batch: Callable[[int, Reducer, Tensor, AnswerTally], None] | None = None
    if checkpoint is not None:
        method = resolve(cfg.method, cfg.method_kwargs)[0]
        meta = {
            "config": cfg.to_dict(),
            "model": adapter.describe(),
            "weights": model_fingerprint(adapter.model),
            "method_code": code_fingerprint(type(method)),  # the same name re-registered with other code differs
        }
        ckpt = Checkpoint(checkpoint, {**meta, **fingerprint}, checkpoint_every)
        loaded = ckpt.load()
        if loaded is not None:
            start, state, act_sum, tally = loaded
            reducer = resolve(cfg.method, cfg.method_kwargs)[1].from_tensors(state, cfg.scoring)

        def snapshot(next_item: int, r: Reducer, a: Tensor, t: AnswerTally) -> None:
            ckpt.save(next_item, r.tensors(), a, t, force=next_item >= len(queries))

        on_batch = snapshot

    return run_scoring(
        adapter,
        queries,
        cfg,
        reducer=reducer,
        act_sum=act_sum,
        tally=tally,
        start=start,
        progress=progress,
        on_batch=on_batch,
        kept=kept,
        item_ids=item_ids,
    )


def stack_kept(kept: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate per-batch ``(attributions, proxy_mask)``, padding the proxy axis to the widest batch."""
    P = max(ig.shape[1] for ig, _ in kept)
    pad = lambda t: (
        torch.nn.functional.pad(t, (0, 0, 0, 0, 0, P - t.shape[1]))
        if t.ndim == 4
        else torch.nn.functional.pad(t, (0, P - t.shape[1]))
    )
    return torch.cat([pad(ig) for ig, _ in kept]), torch.cat([pad(m) for _, m in kept])


def ready_adapter(prep: Prepared, cfg: IdentifyConfig, queries: Sequence[Sequence[ProxyPrompt]]) -> None:
    """Check the model's neuron widths, and let a method that continues prompt prefixes share theirs.

    Raises:
        ModelError: for hooks whose width is not ``d_mlp``.
    """
    prep.adapter.check_widths()
    if resolve(cfg.method, cfg.method_kwargs)[0].continues_prefixes:
        same = queries is prep.queries and bool(prep.prefix_prompts)
        prep.adapter.share_prefix(
            prep.prefix_prompts if same else prefix_witnesses(q.prompt for qs in queries for q in qs)
        )


def run_fingerprint(prep: Prepared, items: Iterable[int], **extra: Any) -> dict[str, Any]:
    """What ties a checkpoint to its run besides the config and the model: the scored items and the demos."""
    return {
        "items": [prep.task.items[i].to_record() for i in items],
        "demos": [d.to_record() for d in prep.demo_items],
        **extra,
    }


def check_run_options(
    cfg: IdentifyConfig, task: Any, *, progress: Any, keep_attributions: Any, checkpoint: Any, checkpoint_every: Any
) -> None:
    """Refuse ``identify`` options of the wrong type, and combinations that cannot work together.

    Raises:
        ValueError: a wrong type or range; ``keep_attributions`` with a checkpoint, or with a reducer that
            cannot be rescored. TaskError: a task that is not a :class:`Task`.
    """
    check_bool("progress", progress)
    check_bool("keep_attributions", keep_attributions)
    check_int("checkpoint_every", checkpoint_every, min_value=1)
    if not isinstance(task, Task):
        raise TaskError(f"task must be a tl_neuronllm.Task, got {type(task).__name__}; use Task.from_records(...)")
    require_autograd("identify")
    if keep_attributions and checkpoint is not None:
        raise ValueError(
            "keep_attributions=True cannot resume from a checkpoint (snapshots hold only the streaming "
            "sums); drop one of the two"
        )
    if keep_attributions and resolve(cfg.method, cfg.method_kwargs)[1].needs_correct:
        raise ValueError(
            f"keep_attributions=True cannot be used with method {cfg.method!r}: its reducer needs whether each "
            "proxy was answered right, which kept attributions do not hold, so its result could not be rescored"
        )


def identify(
    model: HookedModel,
    task: Task,
    *,
    k: int | float = 100,
    demos: Task | Sequence[Item] | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    keep_attributions: bool = False,
    config: IdentifyConfig | None = None,
    preset: str | None = None,
    **options: Any,
) -> NeuronResult:
    """Find the good and bad MLP neurons of ``model`` for a multiple-choice ``task``.

    Args:
        model: A TransformerLens ``TransformerBridge`` (TL 4.x) or ``HookedTransformer`` (TL 2.x/3.x).
        task: The items to score (see :class:`Task`).
        k: Size of the good and bad sets: a count, or a fraction (< 1) of all neurons.
        demos: Demonstration items for the k-shot prompts; default: ``n_shots`` items drawn from
            ``task`` (and then not scored).
        progress: Show a progress bar.
        checkpoint: A directory for periodic snapshots of the streaming state; rerunning with the
            same arguments resumes after the last snapshot and ends with the same result.
        checkpoint_every: Snapshot every this many item batches.
        keep_attributions: Keep every item's per-proxy attributions in the result
            (``result.attributions``, ``items x proxies x n_layers x d_mlp`` float32: 4 bytes each)
            so that :func:`rescore` can sweep ``z``, the filter and the proxies without the model.
            Not with ``checkpoint`` (snapshots hold only the streaming sums), ``identify_distributed``
            or ``method="activation_contrast"``.
        config: A base :class:`IdentifyConfig`; ``options`` override its fields.
        preset: A named base config instead of ``config`` (:data:`tl_neuronllm.config.identify.PRESETS`):
            ``"paper"`` for the method's fixed values (z = 1%, strict ambiguity filter, 16 Riemann steps);
            the default is z = 10% with no filter, the setting cross-validation chose wherever the model has
            the skill.
        **options: Any :class:`IdentifyConfig` field, e.g. ``method="grad_x_act"``, ``steps=8``,
            ``mode="cloze"``, ``n_proxies=4``, ``z=0.005``.

    Returns:
        A :class:`NeuronResult` with signed ACE ``scores`` ``[n_layers, d_mlp]`` and ranked ``good``
        and ``bad`` neurons.

    Raises:
        TaskError: for malformed tasks or demos; ``ContextLengthError`` (a ``ValueError``) for a prompt
            longer than the model's context (naming the item, its length and the limit).
        ModelError: if the model lacks the neuron hooks or single-token letters, or produces non-finite
            attributions (naming the layer and the item).
        ValueError: for an option of the wrong type or range (``k``, ``z``, ``steps``, ...) or an unknown
            ``preset``, checked before any model time, or a checkpoint written by another run or model.
        RuntimeError: inside ``torch.inference_mode()``.
        TypeError: for unknown options.
    """
    cfg = IdentifyConfig.from_options(config, preset=preset, **options)
    k = check_count_or_fraction("k", k, min_count=1)  # before any model time: k=0 would give empty sets
    check_run_options(
        cfg,
        task,
        progress=progress,
        keep_attributions=keep_attributions,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    t0 = time.perf_counter()
    prep = prepare(model, task, cfg, demos=demos)  # tokenizer only: errors before any model time
    kept: list[tuple[Tensor, Tensor]] | None = [] if keep_attributions else None
    reducer, act_sum, tally = _score_prepared(
        model, prep, cfg, checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress, kept=kept
    )
    attributions, proxy_mask = stack_kept(kept) if kept else (None, None)
    seconds = time.perf_counter() - t0
    return finish_result(
        prep, cfg, k, reducer, act_sum, tally, seconds, attributions=attributions, proxy_mask=proxy_mask
    )


def _score_prepared(
    model: HookedModel,
    prep: Prepared,
    cfg: IdentifyConfig,
    *,
    checkpoint: str | Path | None,
    checkpoint_every: int,
    progress: bool,
    kept: list[tuple[Tensor, Tensor]] | None,
) -> tuple[Reducer, Tensor, AnswerTally]:
    """:func:`score_resumable` of the prepared questions, the model left as it came in."""
    with preserved_model_state(model):
        ready_adapter(prep, cfg, prep.queries)
        return score_resumable(
            prep.adapter,
            prep.queries,
            cfg,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            fingerprint={} if checkpoint is None else run_fingerprint(prep, range(len(prep.queries))),
            progress=progress,
            kept=kept,
            item_ids=prep.item_ids,
        )


def finish_result(
    prep: Prepared,
    cfg: IdentifyConfig,
    k: int | float,
    reducer: Reducer,
    act_sum: Tensor,
    tally: AnswerTally,
    seconds: float,
    *,
    extra: dict[str, Any] | None = None,
    attributions: Tensor | None = None,
    proxy_mask: Tensor | None = None,
) -> NeuronResult:
    """Turn the final reducer into a :class:`NeuronResult`.

    Raises:
        ModelError: for non-finite scores or option probabilities.
    """
    adapter, scored, queries = prep.adapter, prep.task, prep.queries
    out = reducer.result()
    scores = out.scores
    if not bool(torch.isfinite(scores).all()):
        layer = int((~torch.isfinite(scores)).nonzero()[0, 0])
        raise ModelError(
            f"non-finite neuron scores at layer {layer} ({cfg.method}); the model produces nan/inf "
            "activations or gradients (check its weights and dtype)"
        )
    stats: dict[str, Any] = {
        "seconds": seconds,
        "n_queries": tally.n_proxies,
        "kv_backend": adapter.kv_backend,
        "fast_paths": adapter.fast.to_dict(),
    }
    if not isinstance(reducer, ACEReducer):  # a baseline
        stats.update(positive_only=out.positive_only, **out.info, baseline_seconds=seconds)
    stats.update(extra or {})
    if tally.n_items:
        stats.update(tally.stats())
    config = ResultConfig(
        identify=cfg,
        model={**adapter.describe(), "weights": model_fingerprint(adapter.model)},  # compare / explain check it
        task={
            "name": scored.name,
            "n_scored": len(scored),
            "kind": "tokens" if scored.is_tokens else "text",
            "demo_ids": [d.id for d in prep.demo_items],
            "item_ids": [it.id for it in scored.items],
            "item_keys": [it.content_key() for it in scored.items],
        },
        versions=versions(),
        site=queries[0][0].site_rule if len(queries) and queries[0] else "last",
        reducer=reducer.name,
    )
    config = ResultConfig.from_dict(json.loads(json.dumps(config.to_dict(), default=str)))  # plain JSON values
    return build_result(
        scores,
        reducer.state,
        k,
        act_mean=(act_sum / max(tally.n_proxies, 1)).float(),
        config=config,
        stats=stats,
        attributions=attributions,
        proxy_mask=proxy_mask,
    )
