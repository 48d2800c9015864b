"""One preparation step for every stage that runs a model on a task: the model adapter, the
demonstration items, and the scored items' rendered and tokenized proxies.

:func:`prepare` is what ``identify``, ``identify_distributed``, ``evaluate``, the testbed and the
benchmarks share. It uses the tokenizer only, so malformed tasks, demos and prompts longer than the
model's context fail here, before any model time. The tokenized proxies are not kept: they are
rebuilt item by item when a stage reads them (:class:`LazyQueries`), so that memory does not grow with
the number of items.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from tl_neuronllm.data.tasks import Item, Task, TaskError
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt, make_queries
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.prompts.proxies import Renderer, demo_pool_size

if TYPE_CHECKING:
    from tl_neuronllm.config.identify import IdentifyConfig


class LazyQueries(Sequence[list[ProxyPrompt]]):
    """The tokenized proxies ``[item][proxy]`` of a task's items, rendered and tokenized when read.

    Reading is deterministic (permutations are seeded by the item id), so every read of an item gives
    the same prompts; only the items in ``indices`` (default all, in order) are in the sequence.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        task: Task,
        cfg: IdentifyConfig,
        demo_items: Sequence[Item],
        indices: range | None = None,
    ):
        self._adapter, self._task, self._cfg, self._demos = adapter, task, cfg, tuple(demo_items)
        self._renderer = Renderer(task, cfg.prompt, cfg.augment, demo_items)
        self._letters = cfg.token_format.letters if cfg.token_format is not None else None
        self._indices = range(len(task)) if indices is None else indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._build(j) for j in self._indices[i]]
        return self._build(self._indices[i])

    def subset(self, indices: range) -> LazyQueries:
        """The items at positions ``indices`` of this sequence (a shard)."""
        return LazyQueries(
            self._adapter,
            self._task,
            self._cfg,
            self._demos,
            self._indices[indices.start : indices.stop : indices.step],
        )

    def _build(self, i: int) -> list[ProxyPrompt]:
        item = self._task.items[i]
        try:
            return make_queries(self._adapter, self._renderer.render(i, item), self._cfg.mode, letters=self._letters)
        except ValueError as e:
            raise type(e)(f"item {item.id!r}: {e}") from None


def prefix_witnesses(prompts: Iterable[Sequence[int]]) -> list[Sequence[int]]:
    """At most three of ``prompts`` that share the same prefix as all of them do, for
    :meth:`ModelAdapter.share_prefix`: the first, the shortest, and the one that departs from the first
    soonest (the shared length is set by the shortest prompt and by the earliest departure)."""
    first: Sequence[int] | None = None
    shortest: Sequence[int] = ()
    departs: Sequence[int] | None = None
    depart_at = -1
    n = 0
    for p in prompts:
        n += 1
        if first is None:
            first, shortest = p, p
            continue
        if len(p) < len(shortest):
            shortest = p
        i, m = 0, min(len(p), len(first))
        while i < m and p[i] == first[i]:
            i += 1
        if departs is None or i < depart_at:
            departs, depart_at = p, i
    if first is None:
        return []
    if n < 2 or departs is None:
        return [first]
    return [first, shortest, departs]


@dataclass
class Prepared:
    """What :func:`prepare` returns.

    Attributes:
        adapter: The model adapter (hook and key/value cache of the config).
        task: The scored items (the task less the demonstrations drawn from it).
        demo_items: The demonstration items of the prompts.
        queries: Per scored item, its tokenized proxies ``[item][proxy]`` (built when read).
        prefix_prompts: Prompts that share the prefix all of them share (:func:`prefix_witnesses`).
    """

    adapter: ModelAdapter
    task: Task
    demo_items: list[Item]
    queries: Sequence[list[ProxyPrompt]]
    prefix_prompts: list[Sequence[int]] = field(default_factory=list)

    @property
    def item_ids(self) -> list[str]:
        return [it.id for it in self.task.items]


def prepare(
    model: HookedModel,
    task: Task,
    cfg: IdentifyConfig,
    *,
    demos: Task | Sequence[Item] | None = None,
    adapter: ModelAdapter | None = None,
) -> Prepared:
    """The adapter, demonstrations and tokenized proxies of ``task`` under ``cfg`` (tokenizer only: every
    prompt is tokenized once here, to refuse bad ones, and again when ``queries`` are read).

    Args:
        model: A TransformerLens model.
        task: The items; ``cfg.n_shots`` of them become demonstrations unless ``demos`` are given.
        cfg: The :class:`~tl_neuronllm.config.identify.IdentifyConfig` (prompt, augmentation, hook, layers).
        demos: Demonstration items (they must not be among the scored ones).
        adapter: An existing adapter of ``model`` to reuse.

    Raises:
        TaskError: for a task that is not a :class:`Task`, or malformed demos.
        ValueError: for layers the model does not have; ``ContextLengthError`` for a prompt longer
            than the model's context.
        ModelError: for letters that are not single tokens or empty prompts.
    """
    if not isinstance(task, Task):
        raise TaskError(f"task must be a tl_neuronllm.Task, got {type(task).__name__}; use Task.from_records(...)")
    adapter = adapter or ModelAdapter(model, hook=cfg.hook, kv_cache=cfg.kv_cache)
    check_layers(cfg.layers, adapter.n_layers)
    pool = demo_pool_size(cfg.prompt, cfg.augment)
    scored, demo_items = choose_demos(task, cfg.n_shots, cfg.seed, demos, pool)
    queries = LazyQueries(adapter, scored, cfg, demo_items)
    witnesses = prefix_witnesses(q.prompt for qs in queries for q in qs)  # reads (and checks) every prompt
    return Prepared(adapter, scored, demo_items, queries, witnesses)


def check_layers(layers: Sequence[int] | None, n_layers: int) -> None:
    """Refuse layer indices the model does not have.

    Raises:
        ValueError: naming the first out-of-range layer.
    """
    bad = [x for x in layers or () if not 0 <= x < n_layers]
    if bad:
        raise ValueError(
            f"layers: layer {bad[0]} is out of range for a model with {n_layers} layers (0..{n_layers - 1})"
        )


def require_autograd(what: str) -> None:
    """Refuse to run inside ``torch.inference_mode()``, where no gradient can be taken.

    Raises:
        RuntimeError: naming the call, inside ``torch.inference_mode()``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{what} cannot run inside torch.inference_mode(): attributions need autograd (taken "
            "with respect to activations, never into your parameters); call it outside that block"
        )


def as_shown(item: Item) -> tuple[Any, ...]:
    """What a prompt shows of an item: context (classification items differ only there), question, options."""
    return (item.context, item.question, item.options)


def choose_demos(
    task: Task, n_shots: int, seed: int, demos: Task | Sequence[Item] | None, pool: int | None = None
) -> tuple[Task, list[Item]]:
    """Split off the demonstration items: given ones must not be scored; otherwise draw
    ``pool`` items (default ``n_shots``; more for cloze proxies, :func:`demo_pool_size`) seeded from the
    task and score the rest. Of given demos, the first ``pool`` are used (at least ``n_shots`` needed).

    Raises:
        TaskError: too few demos or items, or a demo that is also a scored item.
    """
    if n_shots == 0:
        return task, []
    pool = max(n_shots, pool or n_shots)
    if demos is not None:
        demo_items = list(demos)[:pool]
        if len(demo_items) < n_shots:
            raise TaskError(f"n_shots={n_shots} but only {len(demo_items)} demo item(s) were given")
        keys = {as_shown(d): d.id for d in demo_items}
        clash = [(it.id, keys[as_shown(it)]) for it in task.items if as_shown(it) in keys]
        if clash:
            item_id, demo_id = clash[0]
            if item_id == demo_id:
                raise TaskError(f"item {item_id!r} is both a demo and a scored item; demos must come from other items")
            raise TaskError(
                f"scored item {item_id!r} has the same context, question and options as demonstration {demo_id!r}; "
                "demos must come from other items"
            )
        return task, demo_items
    if len(task) <= pool:
        raise TaskError(
            f"task {task.name!r} has {len(task)} item(s): too few to take {pool} demo(s) and score the rest"
        )
    idx = random.Random(f"demos:{seed}").sample(range(len(task)), pool)
    rest = [i for i in range(len(task)) if i not in idx]
    return task.subset(rest), [task.items[i] for i in idx]


def build_queries(
    adapter: ModelAdapter, task: Task, cfg: IdentifyConfig, demo_items: Sequence[Item]
) -> list[list[ProxyPrompt]]:
    """Render and tokenize every item's proxies: ``[item][proxy]``.

    Raises:
        ValueError: (``ContextLengthError``, ``ModelError``) naming the item.
    """
    renderer = Renderer(task, cfg.prompt, cfg.augment, demo_items)
    letters = cfg.token_format.letters if cfg.token_format is not None else None
    out = []
    for i, item in enumerate(task.items):
        try:
            out.append(make_queries(adapter, renderer.render(i, item), cfg.mode, letters=letters))
        except ValueError as e:
            raise type(e)(f"item {item.id!r}: {e}") from None
    return out


def identification_items(
    record: Mapping[str, Any],
    task: Task,
    demos: Task | Sequence[Item] | None,
    items: Literal["identified", "all"],
    n_shots: int,
    seed: int,
) -> tuple[Task, list[Item]]:
    """The items a result was identified on (``items="identified"``) or every item that is not a
    demonstration (``"all"``), and the demonstrations the identification run used, from the result's
    recorded config (``record``: ``NeuronResult.config``).

    Raises:
        TaskError: not a Task, or a task without the recorded demonstration / identification items.
        ValueError: ``items`` other than ``"identified"`` / ``"all"``.
    """
    if not isinstance(task, Task):
        raise TaskError(f"task must be a tl_neuronllm.Task, got {type(task).__name__}")
    rec = record.get("task", {})
    by_id = {it.id: it for it in task.items}
    demo_ids = [str(x) for x in rec.get("demo_ids", [])]
    if demos is not None:
        demo_items = list(demos)[:n_shots]
    elif "demo_ids" in rec:
        missing = [d for d in demo_ids if d not in by_id]
        if missing and n_shots:
            raise TaskError(
                f"the identification run's demonstration item {missing[0]!r} is not in task "
                f"{task.name!r}; pass demos= (the identification run's demos)"
            )
        demo_items = [by_id[d] for d in demo_ids]
    else:  # an old result without recorded ids: draw the demos as identify did
        return choose_demos(task, n_shots, seed, None)
    demo_keys = {as_shown(d) for d in demo_items}
    if items == "all":
        chosen = [it for it in task.items if as_shown(it) not in demo_keys]
    elif items == "identified":
        ids = [str(x) for x in rec.get("item_ids", [])]
        if not ids:
            chosen = [it for it in task.items if as_shown(it) not in demo_keys]
        else:
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise TaskError(
                    f"identification item {missing[0]!r} ({len(missing)} of {len(ids)}) is not in task "
                    f"{task.name!r}; pass the task the result was identified on, or items='all'"
                )
            chosen = [by_id[i] for i in ids]
    else:
        raise ValueError(f"items must be 'identified' or 'all', got {items!r}")
    if not chosen:
        raise TaskError(f"task {task.name!r} has no items to explain the neurons on")
    return Task(tuple(chosen), name=task.name, instruction=task.instruction), demo_items


__all__ = [
    "as_shown",
    "identification_items",
    "LazyQueries",
    "Prepared",
    "build_queries",
    "prefix_witnesses",
    "check_layers",
    "choose_demos",
    "prepare",
    "require_autograd",
]
