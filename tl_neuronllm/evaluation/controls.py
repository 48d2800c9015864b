"""Off-task controls of a held-out evaluation: does switching the neurons off hurt the task, or everything?

``evaluate(..., control=<Task>)`` runs the baseline and every intervention on the identified neurons over an
unrelated task's held-out items too (rendered with the result's prompt options and their own demonstrations,
drawn from the control task); ``control_text=`` (plain passages) scores each condition's language-model loss
per token, with the neurons acted on at **every** position of the passage (plain text has no answer site).

**Specificity** of a condition (on-task against off-task effect, both changes of the mean gold probability
against the baseline)::

    specificity = |Δgold_on| / (|Δgold_on| + |Δgold_off|)

1 means the condition moves only the task's answers, 0.5 that it moves the unrelated task's as much, 0 only
the unrelated task's; ``nan`` when neither moves. Its interval resamples the task's and the control task's
items independently (the same number of resamples as the evaluation). The loss on ``control_text`` is
reported beside it (``Δloss`` in nats per token, with a paired bootstrap interval over passages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.data.tasks import Item, Task, TaskError
from tl_neuronllm.evaluation.conditions import Condition
from tl_neuronllm.evaluation.engines import Engine, run_conditions
from tl_neuronllm.evaluation.stats import Scored, bootstrap_ci, bootstrap_indices, score_predictions
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.pipeline.prepare import Prepared, prepare
from tl_neuronllm.result.interventions import Intervention, make_hooks


@dataclass
class Controls:
    """The prepared controls (tokenized before any model time).

    Attributes:
        task: The control task's prepared questions, or ``None``.
        texts: The control passages' token ids (each cut to ``max_tokens``).
    """

    task: Prepared | None = None
    texts: list[list[int]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.task is None and not self.texts


def _check_control_task(control: Any, scored: Task, adapter: ModelAdapter) -> Task:
    if not isinstance(control, Task):
        raise TaskError(f"control must be a tl_neuronllm.Task, got {type(control).__name__}")
    if control.is_tokens != scored.is_tokens:
        kind = lambda t: "token ids" if t.is_tokens else "text"
        raise TaskError(
            f"control task {control.name!r} holds {kind(control)} but the held-out task holds {kind(scored)}: it "
            "is for another model or tokenizer"
        )
    if control.is_tokens:
        for it in control.items:
            parts = [it.question, *it.options, *([it.context] if it.context else [])]
            big = [int(t) for p in parts for t in p if int(t) >= adapter.d_vocab]  # type: ignore[union-attr]
            if big:
                raise TaskError(
                    f"control item {it.id!r}: token id {big[0]} is outside this model's vocabulary "
                    f"({adapter.d_vocab}); the control task is for another model or tokenizer"
                )
    return control


def prepare_controls(
    model: HookedModel,
    adapter: ModelAdapter,
    icfg: IdentifyConfig,
    scored: Task,
    *,
    control: Task | None,
    control_demos: Task | Sequence[Item] | None,
    control_text: str | Sequence[str] | None,
    max_tokens: int,
) -> Controls:
    """Tokenize the controls (no model time).

    Raises:
        TaskError: a control task that is not a Task, holds another kind of items than the held-out task, or
            token ids outside the model's vocabulary; a passage that is empty or not text.
        ModelError: ``control_text`` for a model without a tokenizer.
    """
    prep = None
    if control is not None:
        ctask = _check_control_task(control, scored, adapter)
        prep = prepare(model, ctask, icfg, demos=control_demos, adapter=adapter)
    texts: list[list[int]] = []
    if control_text is not None:
        passages = [control_text] if isinstance(control_text, str) else list(control_text)
        for j, p in enumerate(passages):
            if not isinstance(p, str) or not p.strip():
                raise TaskError(f"control_text[{j}] must be a non-empty string, got {p!r:.60}")
            toks = adapter.tokenize(p)[:max_tokens]
            if len(toks) < 2:
                raise TaskError(f"control_text[{j}] is shorter than two tokens; it has no loss to score")
            texts.append(list(toks))
    return Controls(prep, texts)


def _all_positions(cond: Condition) -> list[Intervention]:
    return [Intervention(iv.neurons, iv.mode, iv.factor, None, "all") for iv in cond.interventions]


@torch.no_grad()
def text_losses(adapter: ModelAdapter, texts: Sequence[Sequence[int]], conditions: Sequence[Condition]) -> np.ndarray:
    """``[conditions, passages]`` summed next-token negative log-likelihoods (nats), each condition's
    interventions applied at every position."""
    out = np.zeros((len(conditions), len(texts)))
    for c, cond in enumerate(conditions):
        hooks = [h for iv in _all_positions(cond) for h in make_hooks(adapter.hook_names, iv)]
        for j, toks in enumerate(texts):
            t = torch.tensor([list(toks)], device=adapter.device)
            logits = adapter.forward(t, fwd_hooks=hooks).float()
            logp = torch.log_softmax(logits[0, :-1], dim=-1)
            out[c, j] = float(-logp.gather(-1, t[0, 1:, None]).sum())
    return out


def _gold_item_vector(sc: Scored, base: Scored) -> tuple[np.ndarray, np.ndarray]:
    v, w = sc.item_vectors()["gold_prob"]
    return v - base.item_vectors()["gold_prob"][0], w


def specificity(on: float, off: float) -> float:
    """``|on| / (|on| + |off|)`` (``nan`` when both are 0); see the module docstring."""
    den = abs(on) + abs(off)
    return abs(on) / den if den > 0 else float("nan")


def _specificity_ci(
    on: tuple[np.ndarray, np.ndarray],
    off: tuple[np.ndarray, np.ndarray],
    on_idx: np.ndarray,
    off_idx: np.ndarray,
    ci: float,
) -> list[float]:
    a = on[0][on_idx].sum(1) / np.maximum(on[1][on_idx].sum(1), 1e-12)
    b = off[0][off_idx].sum(1) / np.maximum(off[1][off_idx].sum(1), 1e-12)
    den = np.abs(a) + np.abs(b)
    s = np.where(den > 0, np.abs(a) / np.maximum(den, 1e-300), np.nan)
    if np.isnan(s).all():
        return [float("nan"), float("nan")]
    lo, hi = np.nanquantile(s, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return [float(lo), float(hi)]


def run_controls(
    adapter: ModelAdapter,
    controls: Controls,
    conditions: Sequence[Condition],
    *,
    engine: Engine,
    batch_size: int,
    memory_budget_mb: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Run the baseline (``conditions[0]``) and the identified conditions over the controls.

    Returns:
        ``{"task": {"name", "n_items", "scored": [Scored per condition], "boot"}, "text": {"loss": [conditions,
        passages] summed nats, "tokens": [passages]}}`` (each part only when given).
    """
    out: dict[str, Any] = {}
    if controls.task is not None:
        prep = controls.task
        queries = [q for qs in prep.queries for q in qs]
        item_of = np.array([i for i, qs in enumerate(prep.queries) for _ in qs])
        gold = np.array([q.gold for q in queries])
        probs = run_conditions(
            adapter,
            queries,
            conditions,
            engine=engine,
            batch_size=batch_size,
            memory_budget_mb=memory_budget_mb,
            progress=False,
        )
        n = len(prep.queries)
        base = score_predictions(probs[0], gold, item_of, n)
        scored = [base] + [score_predictions(p, gold, item_of, n, base=base) for p in probs[1:]]
        out["task"] = {
            "name": prep.task.name,
            "n_items": n,
            "item_ids": [it.id for it in prep.task.items],
            "scored": scored,
            "boot": bootstrap_indices(n, n_boot, seed + 7919),
        }
    if controls.texts:
        out["text"] = {
            "loss": text_losses(adapter, controls.texts, conditions),
            "tokens": np.array([len(t) - 1 for t in controls.texts], dtype=np.float64),
        }
    return out


def control_row(ran: dict[str, Any], c: int, on: Scored, base: Scored, boot: np.ndarray, ci: float) -> dict[str, Any]:
    """The ``row.control`` record of condition ``c`` (index into the conditions :func:`run_controls` ran)."""
    rec: dict[str, Any] = {}
    if "task" in ran:
        t = ran["task"]
        sc, cb = t["scored"][c], t["scored"][0]
        keys = ("accuracy", "gold_prob", "balanced_accuracy")
        delta = {k: sc.metrics[k] - cb.metrics[k] for k in keys}
        dci = sc.intervals(t["boot"], ci, minus=cb)
        on_v = _gold_item_vector(on, base)
        on_delta = on.metrics["gold_prob"] - base.metrics["gold_prob"]
        rec["task"] = {
            "name": t["name"],
            "n_items": t["n_items"],
            "delta": delta,
            "delta_ci": {k: dci[k] for k in keys},
        }
        rec["specificity"] = specificity(on_delta, delta["gold_prob"])
        rec["specificity_ci"] = _specificity_ci(on_v, _gold_item_vector(sc, cb), boot, t["boot"], ci)
    if "text" in ran:
        loss, tok = ran["text"]["loss"], ran["text"]["tokens"]
        base_l = float(loss[0].sum() / tok.sum())
        diff = loss[c] - loss[0]
        rec["text"] = {
            "n_passages": int(len(tok)),
            "n_tokens": int(tok.sum()),
            "loss_base": base_l,
            "loss": float(loss[c].sum() / tok.sum()),
            "delta_loss": float(diff.sum() / tok.sum()),
            "delta_loss_ci": list(bootstrap_ci(diff, tok, n_boot=len(boot), ci=ci, seed=11)),
        }
    return rec


def control_per_item(ran: dict[str, Any], names: Mapping[str, int]) -> dict[str, Any]:
    """Per-item values of the controls for ``evaluation.json["per_item"]``: the control task's per-item mean
    gold probability and share correct per condition, and each passage's loss per token per condition
    (``names``: condition name -> its index among the conditions :func:`run_controls` ran)."""
    out: dict[str, Any] = {}
    if "task" in ran:
        t = ran["task"]
        out["task"] = {
            "item_ids": t["item_ids"],
            "conditions": {n: item_values(t["scored"][c]) for n, c in names.items()},
        }
    if "text" in ran:
        loss, tok = ran["text"]["loss"], ran["text"]["tokens"]
        out["text"] = {"tokens": tok.tolist(), "loss": {n: (loss[c] / tok).tolist() for n, c in names.items()}}
    return out


def item_values(sc: Scored) -> dict[str, list[float]]:
    """Per item: mean gold probability and share of correct answers over its proxies, and consistency."""
    vec = sc.item_vectors()
    n_q = np.maximum(vec["accuracy"][1], 1)
    return {
        "gold_prob": (vec["gold_prob"][0] / n_q).tolist(),
        "correct": (vec["accuracy"][0] / n_q).tolist(),
        "consistent": sc.consistent.tolist(),
    }


__all__ = [
    "Controls",
    "control_per_item",
    "control_row",
    "item_values",
    "prepare_controls",
    "run_controls",
    "specificity",
    "text_losses",
]
