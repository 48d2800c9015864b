"""One preparation step for every stage that runs a model on a task: the model adapter, the
demonstration items, and the scored items' rendered and tokenized proxies.

:func:`prepare` is what ``identify``, ``identify_distributed``, ``evaluate``, the testbed and the
benchmarks share. It uses the tokenizer only, so malformed tasks, demos and prompts longer than the
model's context fail here, before any model time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .adapter import ModelAdapter
from .answers import ProxyPrompt, make_queries
from .proxies import Renderer
from .tasks import Item, Task, TaskError

if TYPE_CHECKING:
    from .config import IdentifyConfig


@dataclass
class Prepared:
    """What :func:`prepare` returns.

    Attributes:
        adapter: The model adapter (hook and key/value cache of the config).
        task: The scored items (the task less the demonstrations drawn from it).
        demo_items: The demonstration items of the prompts.
        queries: Per scored item, its tokenized proxies ``[item][proxy]``.
    """

    adapter: ModelAdapter
    task: Task
    demo_items: list[Item]
    queries: list[list[ProxyPrompt]]

    @property
    def item_ids(self) -> list[str]:
        return [it.id for it in self.task.items]


def prepare(
    model: Any,
    task: Task,
    cfg: IdentifyConfig,
    *,
    demos: Task | Sequence[Item] | None = None,
    adapter: ModelAdapter | None = None,
) -> Prepared:
    """The adapter, demonstrations and tokenized proxies of ``task`` under ``cfg`` (tokenizer only).

    Args:
        model: A TransformerLens model.
        task: The items; ``cfg.n_shots`` of them become demonstrations unless ``demos`` are given.
        cfg: The :class:`~tl_neuronllm.config.IdentifyConfig` (prompt, augmentation, hook, layers).
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
    scored, demo_items = choose_demos(task, cfg.n_shots, cfg.seed, demos)
    return Prepared(adapter, scored, demo_items, build_queries(adapter, scored, cfg, demo_items))


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


def choose_demos(task: Task, n_shots: int, seed: int, demos: Task | Sequence[Item] | None) -> tuple[Task, list[Item]]:
    """Split off the demonstration items: given ones must not be scored; otherwise draw
    ``n_shots`` items (seeded) from the task and score the rest.

    Raises:
        TaskError: too few demos or items, or a demo that is also a scored item.
    """
    if n_shots == 0:
        return task, []
    if demos is not None:
        demo_items = list(demos)[:n_shots]
        if len(demo_items) < n_shots:
            raise TaskError(f"n_shots={n_shots} but only {len(demo_items)} demo item(s) were given")
        keys = {(d.question, d.options) for d in demo_items}
        clash = [it.id for it in task.items if (it.question, it.options) in keys]
        if clash:
            raise TaskError(f"item {clash[0]!r} is both a demo and a scored item; demos must come from other items")
        return task, demo_items
    if len(task) <= n_shots:
        raise TaskError(
            f"task {task.name!r} has {len(task)} item(s): too few to take {n_shots} demo(s) and score the rest"
        )
    idx = random.Random(f"demos:{seed}").sample(range(len(task)), n_shots)
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


__all__ = ["Prepared", "build_queries", "check_layers", "choose_demos", "prepare", "require_autograd"]
