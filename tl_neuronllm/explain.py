"""What do the good and bad neurons do? Per-neuron explanations of a :class:`NeuronResult`.

:func:`explain` (also ``result.explain(model, task)``) returns one row per good and bad neuron:

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
      v = v * w_final                           # the final norm's weight (ln_final.w), if it has one
      effect = v @ W_U                          # [d_vocab]: logit change per unit of activation

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

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .adapter import ModelAdapter, ModelError, preserved_model_state
from .answers import Query, batch_full_rows, full_scores
from .result import NeuronResult
from .stability import stability
from .tasks import LETTERS, Item, Task, TaskError

Items = Literal["identified", "all"]


# ------------------------------------------------------------------------------------------------
# direct effect (logit lens of a neuron's output direction)
# ------------------------------------------------------------------------------------------------
def _w_out(model: Any, layer: int) -> Tensor:
    """``[d_mlp, d_model]`` output weights of a layer (the down-projection for gated MLPs)."""
    blocks = getattr(model, "blocks", None)
    w = None
    if blocks is not None and layer < len(blocks):
        w = getattr(blocks[layer].mlp, "W_out", None)
    if w is None:
        stacked = getattr(model, "W_out", None)
        w = None if stacked is None else stacked[layer]
    if w is None:
        raise ModelError(f"layer {layer}: the model exposes no MLP output weights (blocks[{layer}].mlp.W_out)")
    return w


def final_norm(model: Any) -> tuple[bool, Tensor | None]:
    """How the final norm acts on a direction: ``(centre, weight)``.

    ``centre`` is True for LayerNorm models (``cfg.normalization_type`` ``"LN"`` / ``"LNPre"``, or a
    ``ln_final`` with a bias when the config does not say); ``weight`` is ``ln_final.w`` (``None``
    when the norm has no weight: ``LNPre`` / ``RMSPre``, folded weights, or no final norm).
    """
    ln = getattr(model, "ln_final", None)
    kind = getattr(model.cfg, "normalization_type", None)
    w = None
    if ln is not None:
        for name in ("w", "weight"):
            try:
                w = getattr(ln, name)
            except AttributeError:
                w = None
            if isinstance(w, Tensor):
                break
            w = None
    if kind is None:
        has_bias = ln is not None and isinstance(getattr(ln, "b", None), Tensor)
        centre = has_bias
    else:
        centre = str(kind).upper().startswith("LN")
    return centre, w


@torch.no_grad()
def direct_logit_effects(model: Any, neurons: Sequence[tuple[int, int]]) -> Float[Tensor, "n_neurons d_vocab"]:
    """Logit-lens effect of each neuron's output direction on every vocabulary token.

    For neuron ``(l, i)``: ``v = W_out[l, i]``; for LayerNorm models ``v -= v.mean()``; ``v *=
    ln_final.w`` (if the final norm has a weight); returns ``v @ W_U`` (the direct path only; the
    norm's per-input scale and the biases are left out, see the module docstring). Computed in
    float64, returned as float32 on the CPU.

    Args:
        model: A ``TransformerBridge`` or ``HookedTransformer`` (``W_U``, ``blocks[l].mlp.W_out``,
            ``ln_final``).
        neurons: ``(layer, index)`` pairs.

    Returns:
        ``[len(neurons), d_vocab]`` effects.

    Raises:
        ModelError: if the model lacks ``W_U`` or MLP output weights, or a neuron is out of range.
    """
    W_U = getattr(model, "W_U", None)
    if W_U is None:
        raise ModelError(f"{type(model).__name__} exposes no unembedding W_U")
    W_U = W_U.detach().to("cpu", torch.float64)
    n_layers, d_mlp = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    centre, w = final_norm(model)
    rows = []
    cache: dict[int, Tensor] = {}
    for layer, idx in neurons:
        if not (0 <= layer < n_layers and 0 <= idx < d_mlp):
            raise ModelError(f"neuron L{layer}N{idx} is outside this model ({n_layers} layers x {d_mlp} neurons)")
        if layer not in cache:
            cache[layer] = _w_out(model, layer).detach().to("cpu", torch.float64)
        rows.append(cache[layer][idx])
    if not rows:
        return torch.zeros(0, W_U.shape[1])
    v = torch.stack(rows)
    if v.shape[1] != W_U.shape[0]:
        raise ModelError(f"W_out rows have {v.shape[1]} entries but W_U has {W_U.shape[0]} rows (d_model)")
    if centre:
        v = v - v.mean(-1, keepdim=True)
    if w is not None:
        v = v * w.detach().to("cpu", torch.float64)
    return (v @ W_U).float()


# ------------------------------------------------------------------------------------------------
# the explanation objects
# ------------------------------------------------------------------------------------------------
@dataclass
class NeuronExplanation:
    """What one good or bad neuron does (see the module docstring for every quantity).

    Attributes:
        label, role, layer, neuron, score, rank: Identity (``rank`` 1 = strongest of its role).
        membership: Share of scored items with the neuron among their candidates of its sign.
        stability: Share of bootstrap resamples that select it in the same role (``None`` without
            kept attributions).
        option_effects: Letter mode: direct effect on each option letter (``{"A": ..., ...}``).
        gold_effect / distractor_effect: Mean direct effect on the gold option / the distractors.
        top_promoted / top_suppressed: ``(token, effect)`` of the largest / smallest effects.
        n_right / n_wrong: Questions answered right / wrong.
        act_mean, act_right, act_wrong, act_effect_size: Site activation: overall mean, mean on
            right and wrong questions, Cohen's d (right minus wrong).
        act_by_gold_letter: Mean activation by the gold option's letter.
        letter_dla: Letter mode: mean activation x effect on each letter (the direct push on its logit).
        dla_gold / dla_distractors / dla_margin: Mean activation x effect on gold, on distractors, and
            their difference.
        top_items: ``(item id, mean activation, question snippet)`` of the items where it fires most.
    """

    label: str
    role: str
    layer: int
    neuron: int
    score: float
    rank: int
    membership: float
    stability: float | None
    option_effects: dict[str, float]
    gold_effect: float
    distractor_effect: float
    top_promoted: list[tuple[str, float]]
    top_suppressed: list[tuple[str, float]]
    n_right: int
    n_wrong: int
    act_mean: float
    act_right: float
    act_wrong: float
    act_effect_size: float
    act_by_gold_letter: dict[str, float]
    letter_dla: dict[str, float]
    dla_gold: float
    dla_distractors: float
    dla_margin: float
    top_items: list[tuple[str, float, str]]

    def flat(self) -> dict[str, Any]:
        """One flat row (dicts spread into ``effect_A`` / ``act_gold_A`` columns, lists joined)."""
        d = asdict(self)
        for k in ("option_effects", "act_by_gold_letter", "letter_dla", "top_promoted", "top_suppressed", "top_items"):
            d.pop(k)
        for letter, v in self.option_effects.items():
            d[f"effect_{letter}"] = v
        for letter, v in self.act_by_gold_letter.items():
            d[f"act_gold_{letter}"] = v
        for letter, v in self.letter_dla.items():
            d[f"dla_{letter}"] = v
        d["top_promoted"] = " ".join(f"{t!r}:{v:+.3g}" for t, v in self.top_promoted)
        d["top_suppressed"] = " ".join(f"{t!r}:{v:+.3g}" for t, v in self.top_suppressed)
        d["top_items"] = " | ".join(f"{i} ({a:+.3g}): {s}" for i, a, s in self.top_items)
        return d


@dataclass
class Explanation:
    """Per-neuron explanations of a result's good and bad neurons (good first, then bad).

    Attributes:
        neurons: One :class:`NeuronExplanation` per neuron.
        activations: ``[questions, neurons]`` site activations (float32, column order of ``neurons``).
        correct: ``[questions]`` whether the model answered each question right.
        item_ids: The item id of each question.
        info: Model, task, mode, option tokens, how the direct effect was computed.
    """

    neurons: list[NeuronExplanation]
    activations: Float[Tensor, "questions neurons"]
    correct: list[bool]
    item_ids: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.neurons)

    def __getitem__(self, label: str) -> NeuronExplanation:
        for n in self.neurons:
            if n.label == label:
                return n
        raise KeyError(f"no neuron {label!r} in this explanation")

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows (see :meth:`NeuronExplanation.flat`)."""
        return [n.flat() for n in self.neurons]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per neuron (pandas ships with TransformerLens).

        Raises:
            ImportError: if pandas is not installed.
        """
        import pandas as pd

        return pd.DataFrame(self.rows())

    def to_csv(self, path: str | Path) -> Path:
        """Write the flat rows as CSV (no pandas needed); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        cols: list[str] = []
        for r in rows:
            cols += [c for c in r if c not in cols]
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        return path

    def to_markdown(self, n: int = 10) -> str:
        """A markdown table of the top ``n`` neurons of each role."""
        mode = self.info.get("mode", "letter")
        head = [
            "neuron",
            "role",
            "ACE",
            "stability",
            "gold eff.",
            "distr. eff.",
            "DLA margin",
            "act right",
            "act wrong",
            "d",
            "promotes",
            "suppresses",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for role in ("good", "bad"):
            for x in [x for x in self.neurons if x.role == role][:n]:
                stab = "" if x.stability is None else f"{x.stability:.2f}"
                toks = lambda ts: " ".join(repr(t) for t, _ in ts[:3]).replace("|", "\\|")
                lines.append(
                    f"| {x.label} | {x.role} | {x.score:.3g} | {stab} | {x.gold_effect:+.3f} | "
                    f"{x.distractor_effect:+.3f} | {x.dla_margin:+.3f} | {x.act_right:.3f} | {x.act_wrong:.3f} | "
                    f"{_fmt(x.act_effect_size, '+.2f')} | {toks(x.top_promoted)} | {toks(x.top_suppressed)} |"
                )
        note = (
            f"Direct effects (logit lens of W_out through the final norm, direct path only) on the option "
            f"{'letters' if mode == 'letter' else 'texts’ first tokens'}; activations on "
            f"{self.info.get('n_questions', '?')} questions of {self.info.get('n_items', '?')} items "
            f"({self.info.get('n_right', '?')} answered right)."
        )
        return "\n".join(lines) + "\n\n" + note + "\n"

    def summary(self) -> dict[str, Any]:
        """Per role: mean gold and distractor effects, DLA margin, and (letter mode) the effect and the
        activation-weighted effect on each letter."""
        out: dict[str, Any] = {}
        for role in ("good", "bad"):
            xs = [x for x in self.neurons if x.role == role]
            if not xs:
                continue
            m = lambda vals: float(sum(vals) / len(vals))
            s: dict[str, Any] = {
                "n": len(xs),
                "gold_effect": m([x.gold_effect for x in xs]),
                "distractor_effect": m([x.distractor_effect for x in xs]),
                "dla_margin": m([x.dla_margin for x in xs]),
                "share_gold_above_distractors": m([float(x.gold_effect > x.distractor_effect) for x in xs]),
            }
            letters = list(xs[0].option_effects)
            if letters:
                s["letter_effects"] = {k: m([x.option_effects[k] for x in xs]) for k in letters}
                s["letter_dla"] = {k: m([x.letter_dla[k] for x in xs]) for k in letters}
            out[role] = s
        return out


def _fmt(v: float, spec: str) -> str:
    return "nan" if v != v else format(v, spec)


# ------------------------------------------------------------------------------------------------
# explain
# ------------------------------------------------------------------------------------------------
def _check_shape(result: NeuronResult, model: Any) -> None:
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


def _select_items(
    result: NeuronResult, task: Task, demos: Task | Sequence[Item] | None, items: Items, n_shots: int, seed: int
) -> tuple[Task, list[Item]]:
    """The items to explain on and the demonstrations the identification run used."""
    from .pipeline import choose_demos

    if not isinstance(task, Task):
        raise TaskError(f"task must be a tl_neuronllm.Task, got {type(task).__name__}")
    rec = result.config.get("task", {})
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
    demo_keys = {(d.question, d.options) for d in demo_items}
    if items == "all":
        chosen = [it for it in task.items if (it.question, it.options) not in demo_keys]
    elif items == "identified":
        ids = [str(x) for x in rec.get("item_ids", [])]
        if not ids:
            chosen = [it for it in task.items if (it.question, it.options) not in demo_keys]
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


def _snippet(item: Item, n: int = 90) -> str:
    q = item.question
    s = q if isinstance(q, str) else "tokens " + " ".join(map(str, q))
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _token_str(model: Any, t: int) -> str:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return f"#{t}"
    try:
        return tok.decode([int(t)])
    except Exception:
        return f"#{t}"


def _cohen_d(a: Tensor, b: Tensor) -> Tensor:
    """Cohen's d per column of ``a`` minus ``b`` (pooled sd); NaN when undefined."""
    na, nb = a.shape[0], b.shape[0]
    if na < 2 or nb < 2:
        return torch.full((a.shape[1],), float("nan"), dtype=torch.float64)
    va, vb = a.var(0, unbiased=True), b.var(0, unbiased=True)
    sd = (((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)).sqrt()
    d = (a.mean(0) - b.mean(0)) / sd
    return torch.where(sd > 0, d, torch.full_like(d, float("nan")))


def selection_stability(
    result: NeuronResult, *, n_boot: int = 50, seed: int = 0
) -> dict[tuple[int, int], float] | None:
    """Share of bootstrap resamples of the identification items that select each good / bad neuron again.

    Each resample draws the items with replacement and re-forms the per-item candidates, the
    ambiguity filter, the ACE scores and the top-k sets exactly as :func:`tl_neuronllm.rescore` does
    (:func:`tl_neuronllm.stability.stability` with ``n_items=None``, whose frequencies these are).

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


@torch.no_grad()
def _site_activations(
    adapter: ModelAdapter, queries: Sequence[Query], neurons: Sequence[tuple[int, int]], batch_size: int
) -> tuple[Tensor, list[Tensor]]:
    """Site activations ``[questions, neurons]`` of the given neurons and the option probabilities."""
    by_layer: dict[int, list[int]] = {}
    for j, (layer, _) in enumerate(neurons):
        by_layer.setdefault(layer, []).append(j)
    acts = torch.zeros(len(queries), len(neurons), dtype=torch.float64)
    probs: list[Tensor] = []
    for b in range(0, len(queries), batch_size):
        qs = queries[b : b + batch_size]
        rows, sites, starts = batch_full_rows(qs)
        toks, _ = adapter.pad_batch(rows)
        first = torch.tensor(starts, device=toks.device)
        site_t = torch.tensor(sites, device=toks.device)[first]
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
            n = 1 if q.continuations is None else len(q.continuations)
            lg = logits[starts[i] : starts[i] + n]
            probs.append(torch.softmax(full_scores(lg, q, sites[starts[i]]), dim=-1).cpu())
    return acts, probs


def explain(
    result: NeuronResult,
    model: Any,
    task: Task,
    *,
    demos: Task | Sequence[Item] | None = None,
    items: Items = "identified",
    top_tokens: int = 10,
    top_items: int = 3,
    n_boot: int = 50,
    seed: int = 0,
    batch_size: int = 8,
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

    Returns:
        An :class:`Explanation` (good neurons first, then bad; ``to_pandas()``, ``to_csv()``,
        ``to_markdown(n)``).

    Raises:
        ModelError: a model of another shape (layers, neurons, ``d_model``, ``d_vocab``) or without the
            weights the direct effect needs.
        TaskError: the task does not hold the identification items or demonstrations.
        ValueError: bad ``items`` / ``n_boot``.
    """
    from .evaluate import identify_config_of

    _check_shape(result, model)
    cfg = identify_config_of(result)
    hook = result.config.get("hook", "hook_post")
    adapter = ModelAdapter(model, hook=hook)
    scored, demo_items = _select_items(result, task, demos, items, cfg.n_shots, cfg.seed)
    neurons = result.neurons("both")
    keys = [(x.layer, x.neuron) for x in neurons]
    roles = ["good"] * len(result.good) + ["bad"] * len(result.bad)
    ranks = list(range(1, len(result.good) + 1)) + list(range(1, len(result.bad) + 1))
    with preserved_model_state(model):
        from .pipeline import build_queries

        queries_by_item = build_queries(adapter, scored, cfg, demo_items)
        queries = [q for qs in queries_by_item for q in qs]
        effects = direct_logit_effects(model, keys).double()  # [N, d_vocab]
        acts, probs = _site_activations(adapter, queries, keys, batch_size)
    stability = selection_stability(result, n_boot=n_boot, seed=seed)

    n_opt = max(q.n_options for q in queries)
    # option effect tensors: per question, [N, n_options] effects on each option's token(s)
    opt_eff: list[Tensor] = []
    for q in queries:
        if q.letter_ids is not None:
            cols = [effects[:, list(ids)].mean(1) for ids in q.letter_ids]
        else:
            assert q.continuations is not None
            cols = [effects[:, c[0]] for c in q.continuations]
        opt_eff.append(torch.stack(cols, 1))
    gold = torch.stack([e[:, q.gold] for e, q in zip(opt_eff, queries)], 1)  # [N, Q]
    distr = torch.stack([(e.sum(1) - e[:, q.gold]) / max(q.n_options - 1, 1) for e, q in zip(opt_eff, queries)], 1)
    A = acts.T  # [N, Q]
    correct = torch.tensor([int(p.argmax()) == q.gold for p, q in zip(probs, queries)])
    right, wrong = acts[correct], acts[~correct]
    d = _cohen_d(right, wrong)
    nan = float("nan")
    letter_mode = queries[0].letter_ids is not None
    letter_eff = None
    if letter_mode:
        ids = queries[max(range(len(queries)), key=lambda i: queries[i].n_options)].letter_ids
        letter_eff = torch.stack([effects[:, list(f)].mean(1) for f in ids], 1)  # [N, n_opt]
    gold_letter = torch.tensor([q.gold for q in queries])
    item_of = [scored.items[q.item_index].id for q in queries]
    item_order = list(dict.fromkeys(item_of))
    item_idx = torch.tensor([item_order.index(i) for i in item_of])
    n_per_item = torch.bincount(item_idx, minlength=len(item_order)).double()
    item_mean = (
        torch.zeros(len(item_order), len(keys), dtype=torch.float64).index_add_(0, item_idx, acts) / n_per_item[:, None]
    )
    by_id = {it.id: it for it in scored.items}
    k_top = min(top_tokens, effects.shape[1])
    n_items = int(result.state.n_items) or 1

    out: list[NeuronExplanation] = []
    for j, (x, role, rank) in enumerate(zip(neurons, roles, ranks)):
        up = effects[j].topk(k_top)
        down = (-effects[j]).topk(k_top)
        members = result.state.n_good if role == "good" else result.state.n_bad
        order = item_mean[:, j].abs().argsort(descending=True)[:top_items]
        out.append(
            NeuronExplanation(
                label=x.label,
                role=role,
                layer=x.layer,
                neuron=x.neuron,
                score=float(x.score),
                rank=rank,
                membership=float(members[x.layer, x.neuron]) / n_items,
                stability=None if stability is None else stability[(x.layer, x.neuron)],
                option_effects={}
                if letter_eff is None
                else {LETTERS[o]: float(letter_eff[j, o]) for o in range(n_opt)},
                gold_effect=float(gold[j].mean()),
                distractor_effect=float(distr[j].mean()),
                top_promoted=[(_token_str(model, int(t)), float(v)) for v, t in zip(up.values, up.indices)],
                top_suppressed=[(_token_str(model, int(t)), float(-v)) for v, t in zip(down.values, down.indices)],
                n_right=int(correct.sum()),
                n_wrong=int((~correct).sum()),
                act_mean=float(acts[:, j].mean()),
                act_right=float(right[:, j].mean()) if len(right) else nan,
                act_wrong=float(wrong[:, j].mean()) if len(wrong) else nan,
                act_effect_size=float(d[j]),
                act_by_gold_letter={
                    LETTERS[o]: float(acts[gold_letter == o, j].mean())
                    for o in range(n_opt)
                    if bool((gold_letter == o).any())
                },
                letter_dla={}
                if letter_eff is None
                else {LETTERS[o]: float(acts[:, j].mean() * letter_eff[j, o]) for o in range(n_opt)},
                dla_gold=float((A[j] * gold[j]).mean()),
                dla_distractors=float((A[j] * distr[j]).mean()),
                dla_margin=float((A[j] * (gold[j] - distr[j])).mean()),
                top_items=[
                    (item_order[int(i)], float(item_mean[int(i), j]), _snippet(by_id[item_order[int(i)]]))
                    for i in order
                ],
            )
        )
    centre, w = final_norm(model)
    info = {
        "model": result.config.get("model", {}).get("model_name", type(model).__name__),
        "task": scored.name,
        "mode": cfg.mode,
        "hook": hook,
        "items": items,
        "n_items": len(scored),
        "n_questions": len(queries),
        "n_right": int(correct.sum()),
        "norm": ("centred, " if centre else "") + ("times ln_final.w" if w is not None else "no norm weight"),
        "stability_boot": n_boot if stability is not None else 0,
    }
    return Explanation(out, acts.float(), correct.tolist(), item_of, info)


__all__ = ["Explanation", "NeuronExplanation", "direct_logit_effects", "explain", "final_norm", "selection_stability"]
