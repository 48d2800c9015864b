"""Gold labels and label-balanced held-out splits.

A *classification* task is one whose items all share one set of options (BoolQ's yes / no, IMDB's positive /
negative): the label of an item is then its gold option's text. In any other task the label is the gold
option's position. Balanced accuracy (mean per-label recall) and label-balanced held-out splits use these
labels, so that a model that flips one habitual answer to the other cannot score by the label balance of the
held-out set.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from tl_neuronllm.data.tasks.items import Item, TaskError
from tl_neuronllm.data.tasks.task import Task


def _option_set(item: Item) -> tuple[Any, ...]:
    return tuple(sorted(str(o) for o in item.options))


def is_classification(task: Task) -> bool:
    """Whether every item of ``task`` has the same set of options (a classification task)."""
    return len({_option_set(it) for it in task.items}) == 1


def item_labels(task: Task) -> list[str]:
    """Per item its gold label: the gold option's text in a classification task, else its gold position
    (``"#0"``, ``"#1"``, ...)."""
    if is_classification(task):
        return [str(it.options[it.answer]) for it in task.items]
    return [f"#{it.answer}" for it in task.items]


def balanced_heldout(task: Task, n: int, *, seed: int = 0, exclude: Iterable[str] = ()) -> Task:
    """``n`` items of ``task``, as many of each gold label as possible (:func:`item_labels`; equal shares,
    the remainder to the labels with the most items, ties by label), drawn seeded; items whose id is in
    ``exclude`` (the identification and demonstration items) are left out.

    Raises:
        TaskError: ``n < 1``, or a label with too few items for its share (naming the label and the counts).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TaskError(f"n must be a positive number of held-out items, got {n!r}")
    skip = set(map(str, exclude))
    by_label: dict[str, list[int]] = {}
    for i, (it, lab) in enumerate(zip(task.items, item_labels(task))):
        if it.id not in skip:
            by_label.setdefault(lab, []).append(i)
    labels = sorted(by_label, key=lambda lab: (-len(by_label[lab]), lab))
    if not labels:
        raise TaskError(f"task {task.name!r} has no items left to hold out")
    share, extra = divmod(n, len(labels))
    rng = random.Random(f"balanced:{seed}")
    chosen: list[int] = []
    for j, lab in enumerate(labels):
        want = share + (1 if j < extra else 0)
        have = by_label[lab]
        if len(have) < want:
            raise TaskError(
                f"task {task.name!r}: label {lab!r} has {len(have)} free item(s) but a balanced held-out set of "
                f"{n} needs {want}; ask for fewer items"
            )
        chosen += rng.sample(have, want)
    return task.subset(sorted(chosen), name=f"{task.name}:heldout-balanced")


__all__ = ["balanced_heldout", "is_classification", "item_labels"]
