"""What do the good and bad neurons do? Per-neuron explanations of a :class:`NeuronResult`.

:func:`explain` returns one row per good and bad neuron:

* **Identity**: role, layer, index, ACE score, rank within its role, *membership* (share of the
  scored items for which the neuron was a per-item candidate of its sign) and, when the result kept
  its per-item attributions, *stability*: the share of bootstrap resamples of the identification
  items (re-scored exactly as :func:`tl_neuronllm.rescore` does) in which the neuron is selected in
  the same role again.
* **Direct effect on the answer** (logit lens / direct logit attribution of one neuron). A neuron
  ``i`` of layer ``l`` writes ``a * W_out[l, i]`` into the residual stream (``a``: its activation at
  ``hook_post``; for gated MLPs ``hook_post = act(gate) * up`` and ``W_out`` is the
  down-projection). Its direct effect on the logits is computed as::

      v = W_out[l, i]                           # [d_model], the neuron's output direction
      v = v - mean(v)                           # LayerNorm models only (LN / LNPre): centring
      v = v * w_final                           # the final norm's effective weight, if it has one
                                                # (Gemma's offset norm: 1 + ln_final.w)
      effect = (v @ W_U) * c                    # [d_vocab]: logit change per unit of activation; c: the
                                                # final logit transform's slope at 0 (Granite 1/logits_scaling,
                                                # Cohere logit_scale, soft-capping 1)

  This is TransformerLens's logit lens for a *direction* with a folded final norm: the per-input
  normalisation scale (``1 / rms`` or ``1 / std`` of the whole residual stream) and the norm's bias
  and ``b_U`` are left out, so the numbers are exact up to that positive, input-dependent factor,
  and they are the **direct path only**: what the neuron does through later layers (attention,
  MLPs) is not in them. For the answer: in letter mode the effect on an option letter is the mean of
  the effects on its single-token forms ("A", " A"); in cloze mode the effect on an option is the
  effect on the first token of its text (the only one predicted at the site). ``gold_effect`` and
  ``distractor_effect`` average these over the questions (proxies) of the task: the gold option's,
  and the mean over the distractors'. ``top_promoted`` / ``top_suppressed`` are the vocabulary
  tokens with the largest / smallest effect (token ids as ``#id`` when the model has no tokenizer).
* **Behaviour on the task**: the neuron's activation at the site on every question, rendered
  exactly as the identification run rendered it (same instruction, demonstrations, proxies), split
  by whether the model answers the question right (argmax over the options): the two means and
  Cohen's d (right minus wrong, pooled standard deviation; NaN when a group has fewer than two
  questions or there is no spread). ``act_by_gold_letter``: the mean activation when the gold option
  sits under each letter. ``dla_gold`` / ``dla_distractors``: the mean of activation times effect on
  the gold option / on the distractors (the neuron's actual direct contribution to the option
  logits on these questions); ``dla_margin`` is their difference (positive: pushes toward gold).
  ``letter_dla`` (letter mode): mean activation times the effect on each letter, the direct push on
  each letter's logit. Read the direct effects with the activation's sign: a neuron whose site
  activation is mostly negative (common with gated MLPs) pushes *down* what its direction promotes.
  ``top_items``: the items on which the neuron fires most (largest mean ``|activation|`` over the
  item's proxies; the signed mean is shown), with a snippet of the question.

With ``hook="hook_pre"`` / ``"hook_pre_linear"`` results the activation is measured at that hook, which is
not the coefficient of ``W_out[l, i]`` (the activation function or the gate comes in between): the
direct effects then describe the neuron's output direction, and ``dla_*`` are only indicative.

How it fails: the direct path can be small for neurons whose effect runs through later layers
(look at ``dla_margin`` beside the ACE score); activations are measured on the identification items,
so ``act_*`` describe the items the neurons were selected on, not held-out ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor

from tl_neuronllm.data.tasks import LETTERS, Item, Task
from tl_neuronllm.errors import MismatchError, ModelError
from tl_neuronllm.explain.activity import Activity, prompt_traces, site_activations
from tl_neuronllm.explain.direct_effect import direct_logit_effects, final_norm, option_effects, token_str
from tl_neuronllm.explain.explanation import Explanation, NeuronExplanation
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.answers import ProxyPrompt
from tl_neuronllm.model.head import final_transform
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.model.state import preserved_model_state
from tl_neuronllm.pipeline.checkpoint import model_fingerprint
from tl_neuronllm.pipeline.prepare import build_queries, identification_items
from tl_neuronllm.prompts.proxies import demo_pool_size
from tl_neuronllm.result.neuron_result import NeuronResult
from tl_neuronllm.scoring.ace import ACEState
from tl_neuronllm.studies.stability import stability
from tl_neuronllm.validate import check_int


def _check_shape(result: NeuronResult, model: HookedModel) -> None:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ModelError(f"{type(model).__name__} is not a TransformerLens model (no cfg)")
    rec = result.config.get("model", {})
    want = {
        "n_layers": result.n_layers,
        "d_mlp": result.d_mlp,
        "d_model": rec.get("d_model"),
        "d_vocab": rec.get("d_vocab"),
    }
    for name, v in want.items():
        got = getattr(cfg, name, None)
        if v and got is not None and int(got) != int(v):
            raise ModelError(
                f"this result is for a model with {name} = {v} ({result.n_layers} layers x {result.d_mlp} neurons); "
                f"the given model has {name} = {got}"
            )
    weights = rec.get("weights")
    if weights and model_fingerprint(model) != weights:
        raise MismatchError(
            "this result was identified on a model with other weights (same shape, another weight fingerprint); "
            "explain it with the model it was identified on"
        )


def selection_stability(
    result: NeuronResult, *, n_boot: int = 50, seed: int = 0
) -> dict[tuple[int, int], float] | None:
    """Share of bootstrap resamples of the identification items that select each good / bad neuron again.

    Each resample draws the items with replacement and re-forms the per-item candidates, the
    ambiguity filter, the ACE scores and the top-k sets exactly as :func:`tl_neuronllm.rescore` does
    (:func:`tl_neuronllm.studies.stability.stability` with ``n_items=None``, whose frequencies these are).

    Returns:
        ``{(layer, index): share}`` for the result's good and bad neurons, or ``None`` when the result
        has no kept attributions (``identify(..., keep_attributions=True)``).

    Raises:
        ValueError: if ``n_boot`` < 1.
    """
    if result.attributions is None:
        return None
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    st = stability(result, n_resamples=n_boot, seed=seed)
    return {
        (x.layer, x.neuron): st.frequency(x.layer, x.neuron, role)
        for role in ("good", "bad")
        for x in result.neurons(role)
    }  # type: ignore[arg-type]


def _direct_fields(
    model: HookedModel,
    effects: Tensor,
    gold: Tensor,
    distr: Tensor,
    letter_eff: Tensor | None,
    acts: Tensor,
    n_opt: int,
    k_top: int,
) -> dict[str, Any]:
    """The direct-effect fields of one neuron: ``effects`` ``[d_vocab]``, ``gold`` / ``distr`` / ``acts`` per question."""
    up = effects.topk(k_top)
    down = (-effects).topk(k_top)
    return {
        "option_effects": {} if letter_eff is None else {LETTERS[o]: float(letter_eff[o]) for o in range(n_opt)},
        "gold_effect": float(gold.mean()),
        "distractor_effect": float(distr.mean()),
        "top_promoted": [(token_str(model, int(t)), float(v)) for v, t in zip(up.values, up.indices)],
        "top_suppressed": [(token_str(model, int(t)), float(-v)) for v, t in zip(down.values, down.indices)],
        "letter_dla": {}
        if letter_eff is None
        else {LETTERS[o]: float(acts.mean() * letter_eff[o]) for o in range(n_opt)},
        "dla_gold": float((acts * gold).mean()),
        "dla_distractors": float((acts * distr).mean()),
        "dla_margin": float((acts * (gold - distr)).mean()),
    }


def _neuron_rows(
    result: NeuronResult,
    model: HookedModel,
    queries: Sequence[ProxyPrompt],
    effects: Tensor,
    activity: Activity,
    stab: dict[tuple[int, int], float] | None,
    items: dict[str, Item],
    top_tokens: int,
    top_items: int,
) -> list[NeuronExplanation]:
    """One :class:`NeuronExplanation` per good and bad neuron (good first, by rank)."""
    n_opt = max(q.n_options for q in queries)
    gold, distr, letter_eff = option_effects(effects, queries)  # [N, Q], [N, Q], [N, n_opt] | None
    A = activity.acts.T  # [N, Q]
    k_top = min(top_tokens, effects.shape[1])
    # membership needs the ACE state's candidate counts; a baseline's reducer has none
    state = result.state if isinstance(result.state, ACEState) else None
    n_items = (int(state.n_items) or 1) if state is not None else 1
    ranked = [("good", r + 1, x) for r, x in enumerate(result.good)] + [
        ("bad", r + 1, x) for r, x in enumerate(result.bad)
    ]
    out: list[NeuronExplanation] = []
    for j, (role, rank, x) in enumerate(ranked):
        members = None if state is None else state.n_good if role == "good" else state.n_bad
        le = None if letter_eff is None else letter_eff[j]
        out.append(
            NeuronExplanation(
                label=x.label,
                role=role,
                layer=x.layer,
                neuron=x.neuron,
                score=float(x.score),
                rank=rank,
                membership=float("nan") if members is None else float(members[x.layer, x.neuron]) / n_items,
                stability=None if stab is None else stab[(x.layer, x.neuron)],
                **_direct_fields(model, effects[j], gold[j], distr[j], le, A[j], n_opt, k_top),
                **activity.fields(j, n_opt, top_items, items),
            )
        )
    return out


def _run_info(
    result: NeuronResult,
    model: HookedModel,
    scored: Task,
    mode: str,
    hook: str,
    items: str,
    n_questions: int,
    activity: Activity,
) -> dict[str, Any]:
    """:attr:`Explanation.info` but the stability resamples: the model, task, questions and the logit lens used."""
    centre, w = final_norm(model)
    return {
        "model": result.config.get("model", {}).get("model_name", type(model).__name__),
        "task": scored.name,
        "mode": mode,
        "hook": hook,
        "items": items,
        "n_items": len(scored),
        "n_questions": n_questions,
        "n_right": int(activity.correct.sum()),
        "norm": ("centred, " if centre else "")
        + ("times the final norm's effective weight" if w is not None else "no norm weight")
        + (f"; logits: {final_transform(model)}" if final_transform(model) else ""),
    }


def explain(
    result: NeuronResult,
    model: HookedModel,
    task: Task,
    *,
    demos: Task | Sequence[Item] | None = None,
    items: Literal["identified", "all"] = "identified",
    top_tokens: int = 10,
    top_items: int = 3,
    n_boot: int = 50,
    seed: int = 0,
    batch_size: int = 8,
    n_traces: int = 3,
    progress: bool = True,
) -> Explanation:
    """Explain a result's good and bad neurons: direct effect on the answer and behaviour on the task.

    See the module docstring for every quantity. The direct effects are the logit lens of each
    neuron's output direction through the final norm's weight (the **direct path only**). The
    activations come from one forward pass per question, with the prompts rendered exactly as the
    identification run rendered them. The model leaves the call as it came in.

    Args:
        result: The result whose neurons to explain.
        model: The model it was identified on (``TransformerBridge`` or ``HookedTransformer``; token-level
            tasks for models without a tokenizer).
        task: The task the result was identified on (its identification items are looked up by id;
            a larger task holding them, e.g. the whole data set, works too).
        demos: The identification run's demonstration items, when they are not in ``task``.
        items: ``"identified"`` (the scored items, default) or ``"all"`` (every non-demo item of ``task``).
        top_tokens: Promoted and suppressed vocabulary tokens to list per neuron.
        top_items: Items where the neuron fires most to list per neuron.
        n_boot: Bootstrap resamples for the selection stability (only with kept attributions).
        seed: Seed of the bootstrap.
        batch_size: Questions per forward pass.
        n_traces: Prompts whose every token's activations are kept (``Explanation.traces``: where it fires).
        progress: Show a progress bar over the forward passes.

    Returns:
        An :class:`Explanation` (good neurons first, then bad; ``to_pandas()``, ``to_csv()``,
        ``to_markdown(n)``).

    Raises:
        ModelError: a model of another shape (layers, neurons, ``d_model``, ``d_vocab``) or without the
            weights the direct effect needs.
        TaskError: the task does not hold the identification items or demonstrations.
        ValueError: bad ``items`` / ``n_boot``; ConfigError: a negative ``n_traces``.
    """
    check_int("n_traces", n_traces, min_value=0)
    _check_shape(result, model)
    cfg = result.identify_config()
    hook = result.config.get("hook", "hook_post")
    adapter = ModelAdapter(model, hook=hook)
    pool = demo_pool_size(cfg.prompt, cfg.augment)  # cloze proxies: one demonstration block per proxy
    scored, demo_items = identification_items(result.config, task, demos, items, pool, cfg.seed)
    keys = [(x.layer, x.neuron) for x in result.neurons("both")]
    with preserved_model_state(model):
        queries_by_item = build_queries(adapter, scored, cfg, demo_items)
        queries = [q for qs in queries_by_item for q in qs]
        effects = direct_logit_effects(model, keys).double()  # [N, d_vocab]
        acts, probs = site_activations(adapter, queries, keys, batch_size, progress=progress)
        item_of = [scored.items[q.item_index].id for q in queries]
        activity = Activity.of(acts, probs, queries, item_of)
        traces = prompt_traces(adapter, queries, item_of, activity.correct.tolist(), keys, n_traces)
    stab = selection_stability(result, n_boot=n_boot, seed=seed)
    by_id = {it.id: it for it in scored.items}
    out = _neuron_rows(result, model, queries, effects, activity, stab, by_id, top_tokens, top_items)
    info = _run_info(result, model, scored, cfg.mode, hook, items, len(queries), activity)
    info["stability_boot"] = n_boot if stab is not None else 0
    return Explanation(out, acts.float(), activity.correct.tolist(), item_of, info, traces)


__all__ = ["Explanation", "NeuronExplanation", "direct_logit_effects", "explain", "final_norm", "selection_stability"]
