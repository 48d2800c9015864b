"""The :class:`Testbed`: a trained model with the task it knows (splits, rendered queries, accuracy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from tl_neuronllm.data.tasks import Item, Task
from tl_neuronllm.evaluation import stats
from tl_neuronllm.prompts.proxies import TokenFormat
from tl_neuronllm.studies.testbed.config import TestbedConfig
from tl_neuronllm.studies.testbed.data import Vocab

__all__ = ["Testbed", "accuracy_stats"]


def accuracy_stats(queries: Sequence[Sequence[Any]], probs: Sequence[Tensor]) -> dict[str, float]:
    """:func:`tl_neuronllm.evaluation.stats.accuracy_stats` of the queries (item by item, flattened in ``probs``),
    with ``n_items``."""
    item_of = [i for i, item in enumerate(queries) for _ in item]
    gold = [q.gold for item in queries for q in item]
    return {**stats.accuracy_stats(probs, gold, item_of, len(queries)), "n_items": len(queries)}


@dataclass
class Testbed:
    """A trained model with the task it knows.

    Attributes:
        config: The :class:`TestbedConfig`.
        model: The trained ``TransformerBridge`` (eval mode).
        task: All items of the task (true answers).
        token_format: Pass as ``identify(..., token_format=tb.token_format)``.
        vocab: Token ids (:meth:`Vocab.names` for readable prompts).
        stats: Training facts: ``train_accuracy`` (fresh training-format prompts, against the trained
            answers), ``heldout_accuracy`` / ``heldout_consistent_accuracy`` / ``heldout_gold_prob``
            (held-out items of ``splits(0)`` rendered as identify renders them, 3 proxies, against the
            true answers), ``train_seconds``, ``final_loss``, ``n_params``.
        biased: Ids of the items with a trained bias (letter or popular value).
        corrupted: Ids of the items trained on a wrong value.
        path: The cache file of the weights (``None`` if not cached).
    """

    __test__ = False  # not a pytest test class despite the name

    config: TestbedConfig
    model: Any
    task: Task
    token_format: TokenFormat
    vocab: Vocab
    stats: dict[str, Any] = field(default_factory=dict)
    biased: frozenset[str] = frozenset()
    corrupted: frozenset[str] = frozenset()
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def train_accuracy(self) -> float:
        return float(self.stats["train_accuracy"])

    @property
    def heldout_accuracy(self) -> float:
        return float(self.stats["heldout_accuracy"])

    @property
    def train_seconds(self) -> float:
        return float(self.stats["train_seconds"])

    def splits(
        self, seed: int = 0, *, n_identify: int | float = 0.4, n_heldout: int | float | None = None, n_demo: int = 4
    ) -> tuple[Task, Task | None, Task | None]:
        """Disjoint ``(identify, heldout, demo)`` tasks (seeded; see :meth:`Task.split`).

        Raises:
            TaskError: when the counts do not fit the task.
        """
        return self.task.split(n_identify, n_heldout, n_demo=n_demo, seed=seed)

    def subset(self, task: Task, which: Literal["biased", "unbiased", "corrupted", "clean"]) -> Task:
        """The items of ``task`` that are (or are not) biased / corrupted.

        Raises:
            ValueError: when ``task`` has no such items.
        """
        ids = self.biased if which in ("biased", "unbiased") else self.corrupted
        keep = which in ("biased", "corrupted")
        idx = [i for i, it in enumerate(task.items) if (it.id in ids) == keep]
        if not idx:
            raise ValueError(f"task {task.name!r} has no {which} items")
        return task.subset(idx, name=f"{task.name}:{which}")

    def queries(
        self,
        task: Task,
        demos: Task | Sequence[Item] | None = None,
        *,
        n_proxies: int = 3,
        n_shots: int = 1,
        seed: int = 0,
        **options: Any,
    ) -> list[list[Any]]:
        """Tokenized proxies ``[item][proxy]`` of ``task``, rendered exactly as :func:`identify` does.

        ``demos`` default to the demo split of ``splits(seed)``; ``options`` are other
        :class:`~tl_neuronllm.pipeline.identify.IdentifyConfig` fields (``permutation``, ...).
        """
        from tl_neuronllm.config.identify import IdentifyConfig
        from tl_neuronllm.model.adapter import ModelAdapter
        from tl_neuronllm.pipeline.prepare import build_queries, choose_demos

        cfg = IdentifyConfig(token_format=self.token_format, n_proxies=n_proxies, n_shots=n_shots, seed=seed, **options)
        if demos is None and n_shots > 0:
            demos = self.splits(seed)[2]
        scored, demo_items = choose_demos(task, n_shots, seed, demos)
        return build_queries(ModelAdapter(self.model), scored, cfg, demo_items)

    def accuracy(
        self,
        task: Task | None = None,
        demos: Task | Sequence[Item] | None = None,
        *,
        fwd_hooks: Any = (),
        n_proxies: int = 3,
        n_shots: int = 1,
        seed: int = 0,
        batch_size: int = 64,
    ) -> dict[str, float]:
        """Accuracy of the model on ``task`` (default: held-out split of ``splits(seed)``).

        Args:
            task: Items to evaluate.
            demos: Demonstration items (default: the demo split of ``splits(seed)``).
            fwd_hooks: Forward hooks, or a function of the per-row site positions returning them
                (as :func:`tl_neuronllm.model.answers.predict` takes), e.g.
                ``lambda site: result.hooks("good", site=site)``.
            n_proxies, n_shots, seed: Rendering, as in :func:`identify`.
            batch_size: Prompts per forward.

        Returns:
            ``accuracy`` (argmax over the options, per proxy), ``consistent_accuracy`` (items right
            on all proxies), ``gold_prob`` (mean softmax-over-options probability of the gold),
            ``n_items``.

        Raises:
            ValueError: when ``task`` is not given and the held-out split is empty.
        """
        from tl_neuronllm.model.adapter import ModelAdapter
        from tl_neuronllm.model.answers import predict
        from tl_neuronllm.model.state import preserved_model_state

        if task is None:
            task = self.splits(seed)[1]
            if task is None:
                raise ValueError(f"testbed {self.name!r}: the held-out split of splits({seed}) is empty; pass task=")
        qs = self.queries(task, demos, n_proxies=n_proxies, n_shots=n_shots, seed=seed)
        flat = [q for item in qs for q in item]
        with preserved_model_state(self.model):
            probs = predict(ModelAdapter(self.model), flat, fwd_hooks=fwd_hooks, batch_size=batch_size)
        return accuracy_stats(qs, probs)

    def render(self, tokens: Sequence[int]) -> str:
        """A readable string of a token-id prompt."""
        names = self.vocab.names()
        return " ".join(names[int(t)] if 0 <= int(t) < len(names) else f"<{int(t)}>" for t in tokens)
