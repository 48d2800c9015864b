"""``rescore``: re-form a result's scores from its kept per-item attributions, without the model
(other candidate sets, ambiguity filter, proxy subset or item subset), with the reducer that formed it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor

from tl_neuronllm.attribution.methods import get_method
from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.config.result import ResultConfig
from tl_neuronllm.errors import ConfigError
from tl_neuronllm.result.neuron_result import NeuronResult, build_result
from tl_neuronllm.scoring.ace import ScoringConfig
from tl_neuronllm.scoring.reducers import reducer_class
from tl_neuronllm.validate import check_count_or_fraction, check_int

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
    task_cfg: dict[str, Any] | None = None
    if items is not None:
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise ValueError(f"items must be a list of item indices, got {items!r}")
        sel = [cast(int, check_int(f"items[{j}]", x)) for j, x in enumerate(items)]
        bad = [x for x in sel if not 0 <= x < attr.shape[0]]
        if not sel or bad:
            raise ValueError(
                f"items must be indices in [0, {attr.shape[0]}) of the result's scored items (at least "
                f"one), got {bad[0] if bad else 'none'}"
            )
        attr, mask = attr[sel], mask[sel]
        recorded = result.config.get("task")
        if isinstance(recorded, dict):
            task_cfg = dict(recorded, n_scored=len(sel))
            for key in ("item_ids", "item_keys"):
                if key in task_cfg and len(task_cfg[key]) == result.attributions.shape[0]:
                    task_cfg[key] = [task_cfg[key][x] for x in sel]
    return attr, mask, n_proxies, task_cfg


def _check_same_attribution(old: str, new: str) -> None:
    """Refuse re-forming a result of method ``old`` with method ``new`` unless both compute the same
    attributions (the same ``attribute`` and ``options``)."""
    a, b = type(get_method(old)), type(get_method(new))
    if a.attribute is not b.attribute or a.options is not b.options:
        raise ConfigError(
            f"rescore(method={new!r}): {new!r} attributes differently from the result's method {old!r}; "
            "run identify with it instead"
        )


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
    method: str | None = None,
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
    :func:`tl_neuronllm.evaluation.evaluate` accepts the other items as held-out ones (cross-validation,
    :mod:`tl_neuronllm.studies.selection`). A baseline's result is re-formed by its own reducer (the ACE options
    ``z``, ``ambiguity``, ``candidates`` and ``tau`` do not apply to it). ``method`` re-forms the scores with
    another registered method's reducer when that method computes the same attributions (e.g. ``"ig"`` to
    ``"mean_ig"``: plain IG from the same run).

    Raises:
        ValueError: if the result has no kept attributions, or for out-of-range options, proxies or items.
        ConfigError: a ``method`` whose attributions differ from the result's method's.
    """
    if result.attributions is None:
        raise ValueError("this result has no per-item attributions; run identify(..., keep_attributions=True)")
    if k is not None:
        k = check_count_or_fraction("k", k, min_count=1)
    c = ResultConfig.from_dict(result.config)
    ident = c.identify
    scoring = ScoringConfig(
        candidates=candidates if candidates is not None else ident.candidates,
        z=z if z is not None else ident.z,
        tau=tau if tau is not None else ident.tau,
        ambiguity=ident.ambiguity if ambiguity is _KEEP else ambiguity,
    )
    attr, mask, n_proxies, task_cfg = _subset(result, proxies, items)
    if method is not None and method != ident.method:
        _check_same_attribution(ident.method, method)
        ident = IdentifyConfig.from_dict({**ident.to_dict(), "method": method, "method_options": None})
        c = c.replace(reducer=get_method(method).reducer)
    reducer = reducer_class(c.reducer).create(result.n_layers, result.d_mlp, scoring)
    reducer.update(attr, mask)
    changed = dict(candidates=scoring.candidates, z=scoring.z, tau=scoring.tau, ambiguity=scoring.ambiguity)
    c = c.replace(
        identify=IdentifyConfig.from_dict(
            {**ident.to_dict(), **changed, "n_proxies": n_proxies or ident.n_proxies}, strict=False
        ),
        rescored=True,
        **({} if task_cfg is None else {"task": task_cfg}),
    )
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


__all__ = ["rescore"]
