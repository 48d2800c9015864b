"""``identify``: the whole method in one call.

task -> augmented proxies -> tokenized queries -> per-proxy attributions -> streaming ACE state ->
ranked good/bad neurons. The user's model leaves the call exactly as it came in (hooks,
``requires_grad``, ``.grad``, train/eval mode), also when the call raises or is interrupted.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import __version__
from .adapter import HOOK_CHOICES, ModelAdapter, ModelError, preserved_model_state
from .answers import TARGETS, Query, make_queries
from .attribution import METHODS, Rule, grad_x_act, ig_fast
from .baselines import BASELINES, run_baseline
from .proxies import AugmentConfig, PromptConfig, Renderer, TokenFormat
from .result import NeuronResult, ResultFileError, build_result
from .scoring import ACEState, ScoringConfig
from .tasks import Item, Task, TaskError
from .validate import check_bool, check_choice, check_count_or_fraction, check_float, check_int


@dataclass(frozen=True)
class IdentifyConfig:
    """Every option of :func:`identify` (defaults are the method's; see the README for the choices).

    Attributes:
        method: ``"ig"`` (exact integrated gradients, default), ``"grad_x_act"`` or ``"activation"``.
        mode: ``"letter"`` (option-letter logits) or ``"cloze"`` (option-text log-likelihood).
        target: ``"ce"`` (log-softmax over options at gold, default), ``"prob"`` (softmax over
            options) or ``"vocab_prob"`` (full-vocabulary probability of the gold answer).
        n_proxies: Proxies per item (P, default 3), pairwise-distinct gold letters.
        permutation: ``"cyclic"`` or ``"random"``.
        include_original: Whether the unpermuted item is one of the proxies.
        n_shots: Solved demonstrations in each prompt (default 1), from items not scored.
        instruction: Instruction line (default: the task's, else a standard one).
        token_format: Prompt format for token-level tasks.
        show_options: Cloze mode: list the lettered options in the prompt.
        steps: IG steps m (default 8, with ``ig_rule="gauss"``; the method's setting is 16 Riemann steps).
        ig_rule: ``"riemann"`` (alpha_k = k/m) or ``"gauss"`` (Gauss-Legendre).
        hook: Neuron hook: ``"hook_post"``, ``"hook_pre"`` or ``"hook_pre_linear"``.
        layers: Layers to score (default all).
        candidates, z, tau, ambiguity: Per-item candidate sets and ambiguity filter (:class:`ScoringConfig`).
        seed: Seed for permutations and the demo choice.
        batch_size: Items per scoring batch (and prompts per forward for grad_x_act / activation).
        chunk_rows: IG continuation rows per forward (default: from ``memory_budget_mb``).
        memory_budget_mb: Activation memory to aim for per IG chunk (default: half the free memory of a
            CUDA device, 1024 MB on CPU).
        kv_cache: ``"auto"`` or ``"off"`` (re-run the prefix in every row; for testing).
    """

    method: str = "ig"
    mode: Literal["letter", "cloze"] = "letter"
    target: Literal["ce", "prob", "vocab_prob"] = "ce"
    n_proxies: int = 3
    permutation: Literal["cyclic", "random"] = "cyclic"
    include_original: bool = True
    n_shots: int = 1
    instruction: str | None = None
    token_format: TokenFormat | None = None
    show_options: bool = True
    steps: int = 8
    ig_rule: Rule = "gauss"
    hook: str = "hook_post"
    layers: tuple[int, ...] | None = None
    candidates: Literal["topk", "threshold"] = "topk"
    z: float = 0.01
    tau: float = 0.2
    ambiguity: float | None = 0.0
    seed: int = 0
    batch_size: int = 8
    chunk_rows: int | None = None
    memory_budget_mb: float | None = None
    kv_cache: Literal["auto", "off"] = "auto"

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS + tuple(sorted(BASELINES)))
        check_choice("mode", self.mode, ("letter", "cloze"))
        check_choice("target", self.target, TARGETS)
        check_int("n_proxies", self.n_proxies, min_value=1)
        check_choice("permutation", self.permutation, ("cyclic", "random"))
        check_bool("include_original", self.include_original)
        check_int("n_shots", self.n_shots, min_value=0)
        if self.instruction is not None and not isinstance(self.instruction, str):
            raise ValueError(f"instruction must be a string or None, got {type(self.instruction).__name__}")
        check_bool("show_options", self.show_options)
        check_int("steps", self.steps, min_value=1)
        check_choice("ig_rule", self.ig_rule, ("riemann", "gauss"))
        check_choice("hook", self.hook, HOOK_CHOICES)
        check_int("seed", self.seed)
        check_int("batch_size", self.batch_size, min_value=1)
        check_int("chunk_rows", self.chunk_rows, min_value=1, allow_none=True)
        check_float("memory_budget_mb", self.memory_budget_mb, low=0, low_open=True, allow_none=True)
        check_choice("kv_cache", self.kv_cache, ("auto", "off"))
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, Iterable):
                raise ValueError(f"layers must be a list of layer indices or None, got {self.layers!r}")
            layers = tuple(check_int(f"layers[{i}]", x, min_value=0) for i, x in enumerate(self.layers))
            if not layers or len(set(layers)) != len(layers):
                raise ValueError(f"layers must be distinct layer indices (at least one), got {list(self.layers)}")
            object.__setattr__(self, "layers", layers)
        if self.mode == "cloze" and not self.show_options and self.n_proxies > 1:
            # without listed options every permutation renders the same prompt
            warnings.warn(
                "cloze mode with show_options=False: all proxies would be the same prompt; using n_proxies=1",
                stacklevel=3,
            )
            object.__setattr__(self, "n_proxies", 1)
        # these validate themselves
        _ = (self.scoring, self.prompt, self.augment)

    @property
    def scoring(self) -> ScoringConfig:
        return ScoringConfig(self.candidates, self.z, self.tau, self.ambiguity)

    @property
    def prompt(self) -> PromptConfig:
        return PromptConfig(self.mode, self.instruction, self.n_shots, self.token_format, self.show_options)

    @property
    def augment(self) -> AugmentConfig:
        return AugmentConfig(self.n_proxies, self.permutation, self.include_original, self.seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["token_format"] = None if self.token_format is None else asdict(self.token_format)
        return d

    @classmethod
    def from_options(cls, config: IdentifyConfig | None = None, **options: Any) -> IdentifyConfig:
        """A config from keyword options (unknown names raise a ``TypeError`` listing the valid ones)."""
        return config_from_options(cls, config, options)


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


def config_from_options(cls: type, config: Any, options: dict[str, Any]) -> Any:
    """``config`` (or ``cls()``) with ``options`` replacing its fields; unknown names raise a ``TypeError``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; valid options: {sorted(names)}")
    return replace(config or cls(), **options)


def choose_demos(task: Task, n_shots: int, seed: int, demos: Task | Sequence[Item] | None) -> tuple[Task, list[Item]]:
    """Split off the demonstration items: given ones must not be scored; otherwise draw
    ``n_shots`` items (seeded) from the task and score the rest."""
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
) -> list[list[Query]]:
    """Render and tokenize every item's proxies: ``[item][proxy]``."""
    renderer = Renderer(task, cfg.prompt, cfg.augment, demo_items)
    letters = cfg.token_format.letters if cfg.token_format is not None else None
    out = []
    for i, item in enumerate(task.items):
        try:
            out.append(make_queries(adapter, renderer.render(i, item), cfg.mode, letters=letters))
        except ValueError as e:
            raise type(e)(f"item {item.id!r}: {e}") from None
    return out


def attribute_item_batch(
    adapter: ModelAdapter, batch: Sequence[Sequence[Query]], cfg: IdentifyConfig
) -> tuple[Tensor, Tensor, list[list[Tensor]], Tensor]:
    """Attributions of a batch of items.

    Returns:
        ``(ig, mask, probs, act_sum)``: ``[items, P, n_layers, d_mlp]`` scores, the ``[items, P]``
        proxy mask, per item the clean option probs of each proxy, and the sum of site activations.
    """
    P = max(len(qs) for qs in batch)
    L, d = adapter.n_layers, adapter.d_mlp
    ig = torch.zeros(len(batch), P, L, d, dtype=torch.float32)
    mask = torch.zeros(len(batch), P, dtype=torch.float32)
    probs: list[list[Tensor]] = [[] for _ in batch]
    act_sum = torch.zeros(L, d, dtype=torch.float64)
    if cfg.method == "ig":
        for i, qs in enumerate(batch):
            for p, q in enumerate(qs):
                s, pr, a = ig_fast(
                    adapter,
                    q,
                    steps=cfg.steps,
                    rule=cfg.ig_rule,
                    target=cfg.target,
                    layers=cfg.layers,
                    chunk_rows=cfg.chunk_rows,
                    memory_budget_mb=cfg.memory_budget_mb,
                )
                ig[i, p], mask[i, p] = s, 1.0
                probs[i].append(pr)
                act_sum += a.double()
    else:
        flat = [(i, p, q) for i, qs in enumerate(batch) for p, q in enumerate(qs)]
        s, pr, a = grad_x_act(
            adapter,
            [q for _, _, q in flat],
            target=cfg.target,
            layers=cfg.layers,
            batch_size=cfg.batch_size,
            with_grad=cfg.method == "grad_x_act",
        )
        for j, (i, p, _) in enumerate(flat):
            ig[i, p], mask[i, p] = s[j], 1.0
            probs[i].append(pr[j])
        act_sum += a.double().sum(0)
    return ig, mask, probs, act_sum


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


def identification_stats(queries: Sequence[Sequence[Query]], probs: Sequence[Sequence[Tensor]]) -> dict[str, float]:
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
    queries: Sequence[Sequence[Query]],
    cfg: IdentifyConfig,
    *,
    state: ACEState | None = None,
    act_sum: Tensor | None = None,
    start: int = 0,
    progress: bool = True,
    on_batch: Callable[[int, ACEState, Tensor, list[list[Tensor]]], None] | None = None,
    kept: list[tuple[Tensor, Tensor]] | None = None,
    item_ids: Sequence[str] | None = None,
) -> tuple[ACEState, Tensor, list[list[Tensor]]]:
    """Stream items ``start..`` through attribution into the ACE state.

    ``on_batch(next_item, state, act_sum, probs)`` is called after each batch (checkpointing);
    each batch's ``(attributions, proxy_mask)`` is appended to ``kept`` when it is given.
    ``item_ids`` name the items in errors.

    Returns:
        ``(state, act_sum, probs)``.

    Raises:
        ModelError: if an attribution is ``nan`` or ``inf`` (naming the layer and the item).
    """
    state = state or ACEState.zeros(adapter.n_layers, adapter.d_mlp)
    act_sum = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float64) if act_sum is None else act_sum
    all_probs: list[list[Tensor]] = []
    scoring = cfg.scoring
    starts = range(start, len(queries), cfg.batch_size)
    for b in _progress(starts, len(starts), progress, f"identify ({cfg.method}, {len(queries)} items)"):
        batch = queries[b : b + cfg.batch_size]
        ig, mask, probs, a = attribute_item_batch(adapter, batch, cfg)
        check_finite_attributions(ig, mask, b, item_ids)
        state.update(ig, scoring, mask)
        if kept is not None:
            kept.append((ig, mask))
        act_sum += a
        all_probs += probs
        if on_batch is not None:
            on_batch(b + len(batch), state, act_sum, all_probs)
    return state, act_sum, all_probs


def model_fingerprint(model: Any, *, n_tensors: int = 4, n_values: int = 4096) -> str:
    """A cheap hash of a model's weights: every parameter's name, shape and dtype, plus the values of
    ``n_tensors`` parameters spread over the model (``n_values`` evenly spaced entries of each).

    Two models of the same architecture but different weights (another seed, a fine-tune) differ in
    almost every tensor, so a few sampled tensors tell them apart without hashing gigabytes.
    """
    import hashlib

    h = hashlib.sha256()
    named = list(model.named_parameters()) if isinstance(model, torch.nn.Module) else []
    for name, p in named:
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    if named:
        picks = sorted({round(i * (len(named) - 1) / max(n_tensors - 1, 1)) for i in range(n_tensors)})
        with torch.no_grad():
            for i in picks:
                flat = named[i][1].detach().reshape(-1)
                if flat.numel() > n_values:
                    flat = flat[torch.linspace(0, flat.numel() - 1, n_values, device=flat.device).long()]
                h.update(flat.float().cpu().numpy().tobytes())
    return h.hexdigest()


class Checkpoint:
    """Periodic snapshots of the streaming state so an interrupted run can resume.

    One file, ``checkpoint.safetensors``, replaced atomically: the state, the activation sum and
    the clean option probs of the items done as tensors, and the next item and a fingerprint of the
    run's arguments in its metadata (so a kill at any moment leaves either the old or the new
    snapshot, never a mix). A rerun with the same arguments continues after the last snapshot;
    other arguments raise.
    """

    FILE = "checkpoint.safetensors"

    def __init__(self, path: str | Path, fingerprint: dict[str, Any], every: int = 1):
        self.path = Path(path)
        self.fingerprint = json.dumps(fingerprint, default=str, sort_keys=True)
        self.every = max(1, int(every))
        self._n = 0

    def load(self) -> tuple[int, ACEState, Tensor, list[list[Tensor]]] | None:
        ten_f = self.path / self.FILE
        if not ten_f.exists():
            return None
        try:
            with safe_open(str(ten_f), framework="pt") as fh:
                meta = fh.metadata() or {}
            t = load_file(str(ten_f))
            state = ACEState.from_tensors({k[6:]: v for k, v in t.items() if k.startswith("state.")})
            probs = [
                [p[: int(n)] for p, n in zip(t["probs"][i], t["n_options"][i]) if n > 0]
                for i in range(t["probs"].shape[0])
            ]
            next_item = int(meta["next_item"])
        except Exception as e:  # safetensors' own error types for truncated / foreign files, missing keys
            raise ResultFileError(
                f"checkpoint {ten_f} cannot be read ({type(e).__name__}: {e}); it is truncated or "
                "not a tl_neuronllm checkpoint: delete it to start the run afresh"
            ) from None
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"checkpoint {self.path} was written by a run with other arguments or another model (weights, task "
                "or options); delete it or choose another checkpoint directory"
            )
        return next_item, state, t["act_sum"], probs

    def save(
        self, next_item: int, state: ACEState, act_sum: Tensor, probs: Sequence[Sequence[Tensor]], force: bool = False
    ) -> None:
        self._n += 1
        if not force and self._n % self.every:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        P = max((len(ps) for ps in probs), default=1)
        O = max((len(p) for ps in probs for p in ps), default=1)
        pt = torch.zeros(len(probs), P, O)
        nt = torch.zeros(len(probs), P, dtype=torch.int64)
        for i, ps in enumerate(probs):
            for j, p in enumerate(ps):
                pt[i, j, : len(p)], nt[i, j] = p, len(p)
        tensors = {f"state.{k}": v for k, v in state.tensors().items()}
        tensors.update(act_sum=act_sum, probs=pt, n_options=nt)
        tmp = self.path / (self.FILE + ".tmp")
        save_file(tensors, str(tmp), metadata={"next_item": str(next_item), "fingerprint": self.fingerprint})
        os.replace(tmp, self.path / self.FILE)


def score_resumable(
    adapter: ModelAdapter,
    queries: Sequence[Sequence[Query]],
    cfg: IdentifyConfig,
    *,
    checkpoint: str | Path | None,
    checkpoint_every: int,
    fingerprint: dict[str, Any],
    progress: bool,
    kept: list[tuple[Tensor, Tensor]] | None = None,
    item_ids: Sequence[str] | None = None,
) -> tuple[ACEState, Tensor, list[list[Tensor]]]:
    """:func:`run_scoring`, snapshotting to ``checkpoint`` (if given) and resuming from it.

    ``fingerprint`` (with the config, the model's shape and a hash of its weights, see
    :func:`model_fingerprint`) identifies the run's arguments and model.

    Raises:
        ValueError: for a checkpoint of another run or model; ``ResultFileError`` for an unreadable one.
    """
    start, state, act_sum, done_probs = 0, None, None, []
    on_batch = None
    if checkpoint is not None:
        ckpt = Checkpoint(
            checkpoint,
            {
                "config": cfg.to_dict(),
                "model": adapter.describe(),
                "weights": model_fingerprint(adapter.model),
                **fingerprint,
            },
            checkpoint_every,
        )
        loaded = ckpt.load()
        if loaded is not None:
            start, state, act_sum, done_probs = loaded

        def on_batch(next_item: int, st: ACEState, a: Tensor, probs: list[list[Tensor]]) -> None:
            ckpt.save(next_item, st, a, done_probs + probs, force=next_item >= len(queries))

    state, act_sum, probs = run_scoring(
        adapter,
        queries,
        cfg,
        state=state,
        act_sum=act_sum,
        start=start,
        progress=progress,
        on_batch=on_batch,
        kept=kept,
        item_ids=item_ids,
    )
    return state, act_sum, done_probs + probs


def stack_kept(kept: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate per-batch ``(attributions, proxy_mask)``, padding the proxy axis to the widest batch."""
    P = max(ig.shape[1] for ig, _ in kept)
    pad = lambda t: (
        torch.nn.functional.pad(t, (0, 0, 0, 0, 0, P - t.shape[1]))
        if t.ndim == 4
        else torch.nn.functional.pad(t, (0, P - t.shape[1]))
    )
    return torch.cat([pad(ig) for ig, _ in kept]), torch.cat([pad(m) for _, m in kept])


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
            (``result.attributions``, ``items x proxies x n_layers x d_mlp`` float32: 4 bytes each,
            e.g. 18 MB for 24 items x 4 proxies on SmolLM2-135M, 5.6 GB for 1,000 items on a 7B model)
            so that :func:`rescore` can sweep ``z``, the filter and the proxies without the model.
            Not with ``checkpoint`` (snapshots hold only the streaming sums), a baseline ``method``, or
            ``identify_distributed``.
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
    if keep_attributions and checkpoint is not None:
        raise ValueError(
            "keep_attributions=True cannot resume from a checkpoint (snapshots hold only the streaming "
            "sums); drop one of the two"
        )
    if keep_attributions and cfg.method in BASELINES:
        raise ValueError(
            f"keep_attributions=True needs method 'ig', 'grad_x_act' or 'activation'; the baseline "
            f"{cfg.method!r} has no per-item attributions to keep"
        )
    t0 = time.perf_counter()
    adapter = ModelAdapter(model, hook=cfg.hook, kv_cache=cfg.kv_cache)
    check_layers(cfg.layers, adapter.n_layers)
    scored, demo_items = choose_demos(task, cfg.n_shots, cfg.seed, demos)
    queries = build_queries(adapter, scored, cfg, demo_items)  # tokenizer only: errors before any model time
    with preserved_model_state(model):
        adapter.check_widths()
        if cfg.method not in ("grad_x_act", "activation"):  # the IG methods continue prompt prefixes
            adapter.share_prefix([q.prompt for qs in queries for q in qs])
        if cfg.method in BASELINES:
            out = run_baseline(cfg.method, adapter, queries, cfg, progress=progress)
            state = ACEState.zeros(adapter.n_layers, adapter.d_mlp)
            state.n_items += len(queries)
            return finish_result(
                adapter,
                scored,
                demo_items,
                queries,
                cfg,
                k,
                state,
                out.act_sum,
                out.probs,
                time.perf_counter() - t0,
                scores=out.scores,
                extra={"positive_only": out.positive_only, **out.info},
            )
        fingerprint = {"items": [it.to_record() for it in scored.items], "demos": [d.to_record() for d in demo_items]}
        kept: list[tuple[Tensor, Tensor]] | None = [] if keep_attributions else None
        state, act_sum, probs = score_resumable(
            adapter,
            queries,
            cfg,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            fingerprint=fingerprint,
            progress=progress,
            kept=kept,
            item_ids=[it.id for it in scored.items],
        )
    attributions, proxy_mask = stack_kept(kept) if kept else (None, None)
    return finish_result(
        adapter,
        scored,
        demo_items,
        queries,
        cfg,
        k,
        state,
        act_sum,
        probs,
        time.perf_counter() - t0,
        attributions=attributions,
        proxy_mask=proxy_mask,
    )


def finish_result(
    adapter: ModelAdapter,
    scored: Task,
    demo_items: Sequence[Item],
    queries: Sequence[Sequence[Query]],
    cfg: IdentifyConfig,
    k: int | float,
    state: ACEState,
    act_sum: Tensor,
    probs: Sequence[Sequence[Tensor]] | None,
    seconds: float,
    *,
    scores: Tensor | None = None,
    extra: dict[str, Any] | None = None,
    attributions: Tensor | None = None,
    proxy_mask: Tensor | None = None,
) -> NeuronResult:
    """Turn the final streaming state (or a baseline's ``scores``) into a :class:`NeuronResult`."""
    n_queries = sum(len(qs) for qs in queries)
    if scores is None:
        scores = state.ace(cfg.ambiguity)
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
        **(extra or {}),
    }
    if probs:
        stats.update(identification_stats(queries, probs))
    config = {
        **cfg.to_dict(),
        "model": adapter.describe(),
        "task": {
            "name": scored.name,
            "n_scored": len(scored),
            "kind": "tokens" if scored.is_tokens else "text",
            "demo_ids": [d.id for d in demo_items],
            "item_ids": [it.id for it in scored.items],
            "item_keys": [it.content_key() for it in scored.items],
        },
        "versions": _versions(),
    }
    config = json.loads(json.dumps(config, default=str))  # plain JSON values, as after save/load
    return build_result(
        scores,
        state,
        k,
        act_mean=(act_sum / max(n_queries, 1)).float(),
        config=config,
        stats=stats,
        attributions=attributions,
        proxy_mask=proxy_mask,
    )


_KEEP = object()


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
    :mod:`tl_neuronllm.selection`).

    Raises:
        ValueError: if the result has no kept attributions, or for out-of-range options, proxies or items.
    """
    if result.attributions is None:
        raise ValueError("this result has no per-item attributions; run identify(..., keep_attributions=True)")
    if k is not None:
        k = check_count_or_fraction("k", k)
    c = result.config
    scoring = ScoringConfig(
        candidates=candidates if candidates is not None else c.get("candidates", "topk"),
        z=z if z is not None else c.get("z", 0.01),
        tau=tau if tau is not None else c.get("tau", 0.2),
        ambiguity=c.get("ambiguity", 0.0) if ambiguity is _KEEP else ambiguity,
    )
    attr = result.attributions
    mask = result.proxy_mask if result.proxy_mask is not None else torch.ones(attr.shape[:2])
    n_proxies = c.get("n_proxies")
    if proxies is not None:
        idx = [int(p) for p in proxies]
        bad = [p for p in idx if not 0 <= p < attr.shape[1]]
        if not idx or bad or len(set(idx)) != len(idx):
            raise ValueError(f"proxies must be distinct indices in [0, {attr.shape[1]}), got {list(proxies)}")
        attr, mask = attr[:, idx], mask[:, idx]
        n_proxies = len(idx)
    task_cfg = c.get("task")
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
        if isinstance(task_cfg, dict):
            task_cfg = dict(task_cfg, n_scored=len(sel))
            for key in ("item_ids", "item_keys"):
                if key in task_cfg and len(task_cfg[key]) == result.attributions.shape[0]:
                    task_cfg[key] = [task_cfg[key][x] for x in sel]
    state = ACEState.zeros(result.n_layers, result.d_mlp)
    state.update(attr, scoring, mask)
    k = c.get("k", 100) if k is None else k
    config = dict(
        c,
        candidates=scoring.candidates,
        z=scoring.z,
        tau=scoring.tau,
        ambiguity=scoring.ambiguity,
        n_proxies=n_proxies,
        rescored=True,
    )
    if items is not None and task_cfg is not None:
        config["task"] = task_cfg
    return build_result(
        state.ace(scoring.ambiguity),
        state,
        k,
        act_mean=result.act_mean,
        config=config,
        stats=dict(result.stats),
        attributions=attr,
        proxy_mask=mask,
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
