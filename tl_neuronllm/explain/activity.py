"""What a neuron does on the task's questions: its site activation, right vs wrong, and per item.

:func:`site_activations` runs one forward pass per batch of questions (rendered as the identification
run rendered them) and records the chosen neurons' activations at the site and the option
probabilities. In cloze mode the activations come from the prompts alone (the site is the prompt's last
token and attention is causal, so the options after it cannot change them) and the option probabilities
from the evaluation's prefix engine (each prompt run once, the options as continuation rows), instead of
one full row per option. :class:`Activity` summarises them per neuron for
:func:`tl_neuronllm.explain.explainer`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_neuronllm.data.tasks import LETTERS, Item
from tl_neuronllm.evaluation.conditions import Condition
from tl_neuronllm.evaluation.engines import run_conditions
from tl_neuronllm.explain.direct_effect import token_str
from tl_neuronllm.explain.explanation import PromptTrace
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt, full_scores
from tl_neuronllm.model.memory import auto_memory_budget_mb


@torch.no_grad()
def site_activations(
    adapter: ModelAdapter,
    queries: Sequence[ProxyPrompt],
    neurons: Sequence[tuple[int, int]],
    batch_size: int,
    *,
    progress: bool = False,
) -> tuple[Float[Tensor, "questions neurons"], list[Tensor]]:
    """Site activations ``[questions, neurons]`` (float64, CPU) of the given neurons and the option probabilities
    (``progress``: a bar that moves per question)."""
    by_layer: dict[int, list[int]] = {}
    for j, (layer, _) in enumerate(neurons):
        by_layer.setdefault(layer, []).append(j)
    acts = torch.zeros(len(queries), len(neurons), dtype=torch.float64)
    probs: list[Tensor] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(queries), desc=f"explain ({len(neurons)} neurons)", unit="question")
    cloze = [q for q in queries if q.continuations is not None]
    cloze_probs: Iterator[Tensor] = iter(())  # in the order of the cloze questions
    if cloze:
        budget = auto_memory_budget_mb(adapter.device)
        cloze_probs = iter(
            run_conditions(
                adapter,
                cloze,
                [Condition("baseline")],
                engine="prefix",
                batch_size=batch_size,
                memory_budget_mb=budget,
                progress=False,
            )[0]
        )
    for b in range(0, len(queries), batch_size):
        qs = queries[b : b + batch_size]
        rows = [list(q.prompt) for q in qs]  # the prompt ends at the site
        toks, _ = adapter.pad_batch(rows)
        first = torch.arange(len(qs), device=toks.device)
        site_t = torch.tensor([q.site for q in qs], device=toks.device)
        got: dict[int, Tensor] = {}

        def make(layer: int) -> Any:
            cols = torch.tensor([neurons[j][1] for j in by_layer[layer]], device=toks.device)

            def hook(act: Tensor, hook: Any) -> None:
                got[layer] = act[first, site_t][:, cols].detach().to("cpu", torch.float64)

            return hook

        hooks = [(adapter.hook_names[layer], make(layer)) for layer in by_layer]
        logits = adapter.forward(toks, fwd_hooks=hooks)
        for layer, js in by_layer.items():
            acts[b : b + len(qs), js] = got[layer]
        for i, q in enumerate(qs):
            if q.continuations is not None:
                probs.append(next(cloze_probs))
            else:
                probs.append(torch.softmax(full_scores(logits[i : i + 1], q, q.site), dim=-1).cpu())
        if bar is not None:
            bar.update(len(qs))
    if bar is not None:
        bar.close()
    return acts, probs


@torch.no_grad()
def prompt_traces(
    adapter: ModelAdapter,
    queries: Sequence[ProxyPrompt],
    item_of: Sequence[str],
    correct: Sequence[bool],
    neurons: Sequence[tuple[int, int]],
    n_prompts: int = 3,
) -> list[PromptTrace]:
    """Where the neurons fire: their activation on every token, up to the answer position, of the first
    question of each of the first ``n_prompts`` items (one forward pass per prompt)."""
    first = {item: i for i, item in reversed(list(enumerate(item_of)))}  # each item's first question
    picks = sorted(first.values())[:n_prompts]
    cols_of: dict[int, list[int]] = {}
    for j, (layer, _) in enumerate(neurons):
        cols_of.setdefault(layer, []).append(j)
    out = []
    for i in picks:
        q = queries[i]
        row = list(q.prompt[: q.site + 1])
        toks, _ = adapter.pad_batch([row])
        acts = torch.zeros(len(row), len(neurons), dtype=torch.float32)

        def make(layer: int) -> Any:
            idx = torch.tensor([neurons[j][1] for j in cols_of[layer]], device=toks.device)

            def hook(act: Tensor, hook: Any) -> None:
                acts[:, cols_of[layer]] = act[0][:, idx].detach().to("cpu", torch.float32)

            return hook

        adapter.forward(toks, fwd_hooks=[(adapter.hook_names[layer], make(layer)) for layer in cols_of])
        tokens = [token_str(adapter.model, t) for t in row]
        out.append(PromptTrace(item_of[i], tokens, q.site, acts, bool(correct[i])))
    return out


def cohen_d(a: Tensor, b: Tensor) -> Tensor:
    """Cohen's d per column of ``a`` minus ``b`` (pooled sd); NaN when undefined."""
    na, nb = a.shape[0], b.shape[0]
    if na < 2 or nb < 2:
        return torch.full((a.shape[1],), float("nan"), dtype=torch.float64)
    va, vb = a.var(0, unbiased=True), b.var(0, unbiased=True)
    sd = (((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)).sqrt()
    d = (a.mean(0) - b.mean(0)) / sd
    return torch.where(sd > 0, d, torch.full_like(d, float("nan")))


def snippet(item: Item, n: int = 90) -> str:
    """The item's question on one line, cut to ``n`` characters."""
    q = item.question
    s = q if isinstance(q, str) else "tokens " + " ".join(map(str, q))
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


@dataclass
class Activity:
    """The site activations of the explained neurons on the questions, with what the rows need.

    Attributes:
        acts: ``[questions, neurons]`` activations (float64).
        correct: ``[questions]`` whether the model answered each question right.
        d: ``[neurons]`` Cohen's d of the activation, right minus wrong questions.
        gold_letter: ``[questions]`` position of the gold option.
        item_order: The item ids in order of first appearance.
        item_mean: ``[items, neurons]`` mean activation over each item's questions.
    """

    acts: Tensor
    correct: Tensor
    d: Tensor
    gold_letter: Tensor
    item_order: list[str]
    item_mean: Tensor

    @classmethod
    def of(
        cls, acts: Tensor, probs: Sequence[Tensor], queries: Sequence[ProxyPrompt], item_of: Sequence[str]
    ) -> Activity:
        """Summarise :func:`site_activations`' output; ``item_of``: the item id of each question."""
        correct = torch.tensor([int(p.argmax()) == q.gold for p, q in zip(probs, queries)])
        item_order = list(dict.fromkeys(item_of))
        item_idx = torch.tensor([item_order.index(i) for i in item_of])
        n_per_item = torch.bincount(item_idx, minlength=len(item_order)).double()
        item_mean = (
            torch.zeros(len(item_order), acts.shape[1], dtype=torch.float64).index_add_(0, item_idx, acts)
            / n_per_item[:, None]
        )
        d = cohen_d(acts[correct], acts[~correct])
        gold_letter = torch.tensor([q.gold for q in queries])
        return cls(acts, correct, d, gold_letter, item_order, item_mean)

    def fields(self, j: int, n_opt: int, top_items: int, items: dict[str, Item]) -> dict[str, Any]:
        """The behaviour fields of :class:`~tl_neuronllm.explain.explanation.NeuronExplanation` for neuron column ``j``."""
        acts, correct, gold_letter = self.acts, self.correct, self.gold_letter
        right, wrong = acts[correct], acts[~correct]
        nan = float("nan")
        order = self.item_mean[:, j].abs().argsort(descending=True)[:top_items]
        return {
            "n_right": int(correct.sum()),
            "n_wrong": int((~correct).sum()),
            "act_mean": float(acts[:, j].mean()),
            "act_right": float(right[:, j].mean()) if len(right) else nan,
            "act_wrong": float(wrong[:, j].mean()) if len(wrong) else nan,
            "act_effect_size": float(self.d[j]),
            "act_by_gold_letter": {
                LETTERS[o]: float(acts[gold_letter == o, j].mean())
                for o in range(n_opt)
                if bool((gold_letter == o).any())
            },
            "top_items": [
                (self.item_order[int(i)], float(self.item_mean[int(i), j]), snippet(items[self.item_order[int(i)]]))
                for i in order
            ],
        }


__all__ = ["Activity", "cohen_d", "prompt_traces", "site_activations", "snippet"]
