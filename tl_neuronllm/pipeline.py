"""``identify``: the whole method in one call, and ``rescore``.

task -> augmented proxies -> tokenized prompts (:func:`~tl_neuronllm.prepare.prepare`) -> per-proxy
attributions (an :class:`~tl_neuronllm.methods.AttributionMethod`) -> a streaming reducer (the ACE score,
or a baseline's, :mod:`tl_neuronllm.reducers`) -> ranked good/bad neurons. The user's model leaves the
call exactly as it came in (hooks, ``requires_grad``, ``.grad``, train/eval mode), also when the call
raises or is interrupted.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from . import __version__
from .adapter import ModelAdapter, ModelError, preserved_model_state
from .answers import ProxyPrompt
from .baselines import reducer_class, resolve
from .checkpoint import Checkpoint, model_fingerprint
from .config import IdentifyConfig, ResultConfig, config_from_options
from .methods import AttributionOptions, correct_mask
from .methods import attribute_items as attribute_item_batch
from .prepare import Prepared, build_queries, check_layers, choose_demos, prepare, require_autograd
from .reducers import ACEReducer, Reducer
from .result import NeuronResult, build_result
from .scoring import ACEState, ScoringConfig
from .tasks import Item, Task, TaskError
from .validate import check_bool, check_count_or_fraction, check_int

# re-exported: these lived here before (IdentifyConfig, the preparation step, checkpoints)
__all__ = [
    "ACEState",
    "Checkpoint",
    "IdentifyConfig",
    "attribute_item_batch",
    "build_queries",
    "check_layers",
    "choose_demos",
    "config_from_options",
    "identify",
    "model_fingerprint",
    "prepare",
    "require_autograd",
    "rescore",
    "run_scoring",
]


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


def check_finite_probs(probs: Sequence[Sequence[Tensor]], item_ids: Sequence[str], what: str) -> None:
    """Refuse ``nan``/``inf`` option probabilities, naming the item.

    Raises:
        ModelError: for a non-finite probability.
    """
    for i, ps in enumerate(probs):
        for p, pr in enumerate(ps):
            if not bool(torch.isfinite(pr).all()):
                name = repr(item_ids[i]) if i < len(item_ids) else f"#{i}"
                raise ModelError(
                    f"{what}: the model's option probabilities are non-finite ({pr.tolist()}) for item "
                    f"{name} (proxy {p}); the model produces nan/inf logits (check its weights and dtype)"
                )


def _progress(it: Iterable[Any], total: int, enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="batch")


def identification_stats(
    queries: Sequence[Sequence[ProxyPrompt]], probs: Sequence[Sequence[Tensor]]
) -> dict[str, float]:
    """Accuracy, consistent accuracy and mean gold probability of the model on the scored items."""
    correct, gold_p, consistent = [], [], []
    for qs, ps in zip(queries, probs):
        ok = [int(p.argmax()) == q.gold for q, p in zip(qs, ps)]
        correct += ok
        gold_p += [float(p[q.gold]) for q, p in zip(qs, ps)]
        consistent.append(all(ok))
    n = max(len(correct), 1)
    return {
        "accuracy": sum(correct) / n,
        "gold_prob": sum(gold_p) / n,
        "consistent_accuracy": sum(consistent) / max(len(consistent), 1),
    }


def run_scoring(
    adapter: ModelAdapter,
    queries: Sequence[Sequence[ProxyPrompt]],
    cfg: IdentifyConfig,
    *,
    reducer: Reducer | None = None,
    act_sum: Tensor | None = None,
    start: int = 0,
    progress: bool = True,
    on_batch: Callable[[int, Reducer, Tensor, list[list[Tensor]]], None] | None = None,
    kept: list[tuple[Tensor, Tensor]] | None = None,
    item_ids: Sequence[str] | None = None,
) -> tuple[Reducer, Tensor, list[list[Tensor]]]:
    """Stream items ``start..`` through ``cfg.method``'s attribution into its reducer (a new one if not given).

    ``on_batch(next_item, reducer, act_sum, probs)`` is called after each batch (checkpointing);
    each batch's ``(attributions, proxy_mask)`` is appended to ``kept`` when it is given.
    ``item_ids`` name the items in errors.

    Returns:
        ``(reducer, act_sum, probs)``.

    Raises:
        ModelError: if an attribution is ``nan`` or ``inf`` (naming the layer and the item).
    """
    method, reducer_cls = resolve(cfg.method)
    reducer = reducer or reducer_cls.create(adapter.n_layers, adapter.d_mlp, cfg.scoring)
    act_sum = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float64) if act_sum is None else act_sum
    options = AttributionOptions.from_config(cfg)
    all_probs: list[list[Tensor]] = []
    starts = range(start, len(queries), cfg.batch_size)
    for b in _progress(starts, len(starts), progress, f"identify ({cfg.method}, {len(queries)} items)"):
        batch = queries[b : b + cfg.batch_size]
        ig, mask, probs, a = attribute_item_batch(method, adapter, batch, options)
        check_finite_attributions(ig, mask, b, item_ids)
        reducer.update(ig, mask, correct_mask(batch, probs, ig.shape[1]) if reducer.needs_correct else None)
        if kept is not None:
            kept.append((ig, mask))
        act_sum += a
        all_probs += probs
        if on_batch is not None:
            on_batch(b + len(batch), reducer, act_sum, all_probs)
    return reducer, act_sum, all_probs


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
) -> tuple[Reducer, Tensor, list[list[Tensor]]]:
    """:func:`run_scoring`, snapshotting to ``checkpoint`` (if given) and resuming from it.

    ``fingerprint`` (with the config, the model's shape and a hash of its weights, see
    :func:`model_fingerprint`) identifies the run's arguments and model.

    Raises:
        ValueError: for a checkpoint of another run or model; ``ResultFileError`` for an unreadable one.
    """
    start, reducer, act_sum, done_probs = 0, None, None, []
    on_batch = None
    if checkpoint is not None:
        meta = {"config": cfg.to_dict(), "model": adapter.describe(), "weights": model_fingerprint(adapter.model)}
        ckpt = Checkpoint(checkpoint, {**meta, **fingerprint}, checkpoint_every)
        loaded = ckpt.load()
        if loaded is not None:
            start, state, act_sum, done_probs = loaded
            reducer = resolve(cfg.method)[1].from_tensors(state, cfg.scoring)

        def on_batch(next_item: int, r: Reducer, a: Tensor, probs: list[list[Tensor]]) -> None:
            ckpt.save(next_item, r.tensors(), a, done_probs + probs, force=next_item >= len(queries))

    reducer, act_sum, probs = run_scoring(
        adapter,
        queries,
        cfg,
        reducer=reducer,
        act_sum=act_sum,
        start=start,
        progress=progress,
        on_batch=on_batch,
        kept=kept,
        item_ids=item_ids,
    )
    return reducer, act_sum, done_probs + probs


def stack_kept(kept: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate per-batch ``(attributions, proxy_mask)``, padding the proxy axis to the widest batch."""
    P = max(ig.shape[1] for ig, _ in kept)
    pad = lambda t: (
        torch.nn.functional.pad(t, (0, 0, 0, 0, 0, P - t.shape[1]))
        if t.ndim == 4
        else torch.nn.functional.pad(t, (0, P - t.shape[1]))
    )
    return torch.cat([pad(ig) for ig, _ in kept]), torch.cat([pad(m) for _, m in kept])


def check_run_options(cfg: IdentifyConfig, *, keep_attributions: bool, checkpoint: Any) -> None:
    """Refuse combinations of ``identify`` options that cannot work together.

    Raises:
        ValueError: ``keep_attributions`` with a checkpoint, or with a reducer that cannot be rescored.
    """
    if keep_attributions and checkpoint is not None:
        raise ValueError(
            "keep_attributions=True cannot resume from a checkpoint (snapshots hold only the streaming "
            "sums); drop one of the two"
        )
    if keep_attributions and resolve(cfg.method)[1].needs_correct:
        raise ValueError(
            f"keep_attributions=True cannot be used with method {cfg.method!r}: its reducer needs whether each "
            "proxy was answered right, which kept attributions do not hold, so its result could not be rescored"
        )


def identify(
    model: Any,
    task: Task,
    *,
    k: int | float = 100,
    demos: Task | Sequence[Item] | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    keep_attributions: bool = False,
    config: IdentifyConfig | None = None,
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
        ValueError: for an option of the wrong type or range (``k``, ``z``, ``steps``, ...), checked
            before any model time, or a checkpoint written by another run or model.
        RuntimeError: inside ``torch.inference_mode()``.
        TypeError: for unknown options.
    """
    cfg = IdentifyConfig.from_options(config, **options)
    k = check_count_or_fraction("k", k)
    check_bool("progress", progress)
    check_bool("keep_attributions", keep_attributions)
    check_int("checkpoint_every", checkpoint_every, min_value=1)
    if not isinstance(task, Task):
        raise TaskError(f"task must be a tl_neuronllm.Task, got {type(task).__name__}; use Task.from_records(...)")
    require_autograd("identify")
    check_run_options(cfg, keep_attributions=keep_attributions, checkpoint=checkpoint)
    t0 = time.perf_counter()
    prep = prepare(model, task, cfg, demos=demos)  # tokenizer only: errors before any model time
    with preserved_model_state(model):
        prep.adapter.check_widths()
        if resolve(cfg.method)[0].continues_prefixes:
            prep.adapter.share_prefix([q.prompt for qs in prep.queries for q in qs])
        fingerprint = {
            "items": [it.to_record() for it in prep.task.items],
            "demos": [d.to_record() for d in prep.demo_items],
        }
        kept: list[tuple[Tensor, Tensor]] | None = [] if keep_attributions else None
        reducer, act_sum, probs = score_resumable(
            prep.adapter,
            prep.queries,
            cfg,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            fingerprint=fingerprint,
            progress=progress,
            kept=kept,
            item_ids=prep.item_ids,
        )
    attributions, proxy_mask = stack_kept(kept) if kept else (None, None)
    seconds = time.perf_counter() - t0
    return finish_result(
        prep, cfg, k, reducer, act_sum, probs, seconds, attributions=attributions, proxy_mask=proxy_mask
    )


def finish_result(
    prep: Prepared,
    cfg: IdentifyConfig,
    k: int | float,
    reducer: Reducer,
    act_sum: Tensor,
    probs: Sequence[Sequence[Tensor]] | None,
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
    n_queries = sum(len(qs) for qs in queries)
    out = reducer.result()
    scores = out.scores
    if not bool(torch.isfinite(scores).all()):
        layer = int((~torch.isfinite(scores)).nonzero()[0, 0])
        raise ModelError(
            f"non-finite neuron scores at layer {layer} ({cfg.method}); the model produces nan/inf "
            "activations or gradients (check its weights and dtype)"
        )
    if probs:
        check_finite_probs(probs, [it.id for it in scored.items], "identify")
    stats: dict[str, Any] = {
        "seconds": seconds,
        "n_queries": n_queries,
        "kv_backend": adapter.kv_backend,
        "fast_paths": adapter.fast.to_dict(),
    }
    if not isinstance(reducer, ACEReducer):  # a baseline
        stats.update(positive_only=out.positive_only, **out.info, baseline_seconds=seconds)
    stats.update(extra or {})
    if probs:
        stats.update(identification_stats(queries, probs))
    config = ResultConfig(
        identify=cfg,
        model=adapter.describe(),
        task={
            "name": scored.name,
            "n_scored": len(scored),
            "kind": "tokens" if scored.is_tokens else "text",
            "demo_ids": [d.id for d in prep.demo_items],
            "item_ids": [it.id for it in scored.items],
            "item_keys": [it.content_key() for it in scored.items],
        },
        versions=_versions(),
        site=next((q.site_rule for qs in queries for q in qs), "last"),
        reducer=reducer.name,
    )
    config = ResultConfig.from_dict(json.loads(json.dumps(config.to_dict(), default=str)))  # plain JSON values
    return build_result(
        scores,
        reducer.state,
        k,
        act_mean=(act_sum / max(n_queries, 1)).float(),
        config=config,
        stats=stats,
        attributions=attributions,
        proxy_mask=proxy_mask,
    )


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"tl_neuronllm": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for key, dist in (("transformer_lens", "transformer-lens"), ("transformers", "transformers"), ("numpy", "numpy")):
        try:
            out[key] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


_KEEP = object()


def _subset(
    result: NeuronResult, proxies: Sequence[int] | None, items: Sequence[int] | None
) -> tuple[Tensor, Tensor, int | None, dict[str, Any] | None]:
    """The kept attributions and proxy mask of ``proxies`` and ``items``, the new proxy count and task record.

    Raises:
        ValueError: for out-of-range or repeated proxies, or out-of-range items.
    """
    assert result.attributions is not None
    attr = result.attributions
    mask = result.proxy_mask if result.proxy_mask is not None else torch.ones(attr.shape[:2])
    n_proxies = None
    if proxies is not None:
        idx = [int(p) for p in proxies]
        bad = [p for p in idx if not 0 <= p < attr.shape[1]]
        if not idx or bad or len(set(idx)) != len(idx):
            raise ValueError(f"proxies must be distinct indices in [0, {attr.shape[1]}), got {list(proxies)}")
        attr, mask, n_proxies = attr[:, idx], mask[:, idx], len(idx)
    task_cfg = None
    if items is not None:
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise ValueError(f"items must be a list of item indices, got {items!r}")
        sel = [check_int(f"items[{j}]", x) for j, x in enumerate(items)]
        bad = [x for x in sel if not 0 <= x < attr.shape[0]]
        if not sel or bad:
            raise ValueError(
                f"items must be indices in [0, {attr.shape[0]}) of the result's scored items (at least "
                f"one), got {bad[0] if bad else 'none'}"
            )
        attr, mask = attr[sel], mask[sel]
        task_cfg = result.config.get("task")
        if isinstance(task_cfg, dict):
            task_cfg = dict(task_cfg, n_scored=len(sel))
            for key in ("item_ids", "item_keys"):
                if key in task_cfg and len(task_cfg[key]) == result.attributions.shape[0]:
                    task_cfg[key] = [task_cfg[key][x] for x in sel]
    return attr, mask, n_proxies, task_cfg


def rescore(
    result: NeuronResult,
    *,
    k: int | float | None = None,
    z: float | None = None,
    ambiguity: Any = _KEEP,
    candidates: Literal["topk", "threshold"] | None = None,
    tau: float | None = None,
    proxies: Sequence[int] | None = None,
    items: Sequence[int] | None = None,
) -> NeuronResult:
    """Re-form the candidate sets, ambiguity filter, proxy subset and item subset of a result, without the model.

    Needs a result from ``identify(..., keep_attributions=True)``. Options left out keep the result's
    values (``ambiguity=None`` switches the filter off). ``proxies=[0]`` keeps only the first proxy
    (the original option order when ``include_original``), which is exactly ``n_proxies=1``.
    The returned scores and sets equal the ones ``identify`` would return with those options
    (``act_mean`` and ``stats`` stay those of the whole run, over all its proxies).
    ``items`` (indices into the scored items, in the order of ``result.config["task"]["item_ids"]``; they may
    repeat, as in a bootstrap resample) re-forms the scores from those items only, which is exactly
    ``identify`` on that subset; the returned config's ``task`` then lists only those items, so
    :func:`tl_neuronllm.evaluate` accepts the other items as held-out ones (cross-validation,
    :mod:`tl_neuronllm.selection`). A baseline's result is re-formed by its own reducer (the ACE options
    ``z``, ``ambiguity``, ``candidates`` and ``tau`` do not apply to it).

    Raises:
        ValueError: if the result has no kept attributions, or for out-of-range options, proxies or items.
    """
    if result.attributions is None:
        raise ValueError("this result has no per-item attributions; run identify(..., keep_attributions=True)")
    if k is not None:
        k = check_count_or_fraction("k", k)
    c = ResultConfig.from_dict(result.config)
    ident = c.identify
    scoring = ScoringConfig(
        candidates=candidates if candidates is not None else ident.candidates,
        z=z if z is not None else ident.z,
        tau=tau if tau is not None else ident.tau,
        ambiguity=ident.ambiguity if ambiguity is _KEEP else ambiguity,
    )
    attr, mask, n_proxies, task_cfg = _subset(result, proxies, items)
    reducer = reducer_class(ident.method).create(result.n_layers, result.d_mlp, scoring)
    reducer.update(attr, mask)
    changed = dict(candidates=scoring.candidates, z=scoring.z, tau=scoring.tau, ambiguity=scoring.ambiguity)
    c.identify = IdentifyConfig.from_dict(
        {**ident.to_dict(), **changed, "n_proxies": n_proxies or ident.n_proxies}, strict=False
    )
    c["rescored"] = True
    if task_cfg is not None:
        c.task = task_cfg
    return build_result(
        reducer.result().scores,
        reducer.state,
        (c.k if c.k is not None else 100) if k is None else k,
        act_mean=result.act_mean,
        config=c,
        stats=dict(result.stats),
        attributions=attr,
        proxy_mask=mask,
    )
