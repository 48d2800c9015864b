"""Model adapter: one interface over TransformerLens model classes, found by duck typing.

Supports TL 4.x ``TransformerBridge`` (``boot_transformers`` and ``boot_native``) and TL 2.x/3.x
``HookedTransformer`` without importing either class. It resolves the neuron hook names
(``blocks.{l}.mlp.hook_post`` by default), checks that every layer has the hook and that its width
is ``d_mlp``, resolves option-letter token ids, tokenizes prompts, runs right-padded batches
(padding after the last real token never changes a causal model's earlier positions) and provides
the **prompt-prefix key/value cache** that makes exact integrated gradients cheap:

* ``TransformerBridge`` over a Hugging Face model: the HF cache from ``return_type="logits_and_cache"``,
  deep-copied and ``batch_repeat_interleave``-d per chunk (calls extend the cache in place).
* ``HookedTransformer``: a frozen ``HookedTransformerKeyValueCache`` whose entries are expanded views.
* Models without a usable cache (``boot_native``): the prefix is re-run in every row (exact, just
  not cheaper); :attr:`ModelAdapter.kv_backend` says which one is in use.

:func:`preserved_model_state` guarantees that the user's model leaves a run exactly as it came in:
hooks, ``requires_grad`` flags, ``.grad`` tensors and train/eval mode.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .tasks import LETTERS

HOOK_CHOICES = ("hook_post", "hook_pre", "hook_pre_linear")
HookFn = Callable[[Tensor, Any], Tensor | None]


@runtime_checkable
class HookedModel(Protocol):
    """What tl_neuronllm needs from a model: TL's config, hook registry and hook context manager."""

    cfg: Any
    hook_dict: dict

    def hooks(self, fwd_hooks: list = ..., bwd_hooks: list = ..., *args: Any, **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


class ModelError(ValueError):
    """The model lacks something the method needs (a hook, a width, a single-token letter)."""


# ------------------------------------------------------------------------------------------------
# model state safety
# ------------------------------------------------------------------------------------------------
def _hook_snapshot(model: torch.nn.Module) -> list[tuple[torch.nn.Module, dict[str, Any]]]:
    snap = []
    for mod in model.modules():
        s: dict[str, Any] = {}
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            d = getattr(mod, attr, None)
            if d is not None:
                s[attr] = set(d.keys())
        for attr in ("fwd_hooks", "bwd_hooks"):  # TL HookPoint handle lists
            lst = getattr(mod, attr, None)
            if isinstance(lst, list):
                s[attr] = list(lst)
        snap.append((mod, s))
    return snap


def _hook_restore(snap: list[tuple[torch.nn.Module, dict[str, Any]]]) -> None:
    for mod, s in snap:
        for attr, val in s.items():
            if attr.startswith("_"):
                d = getattr(mod, attr)
                for k in [k for k in d.keys() if k not in val]:
                    del d[k]
            else:
                setattr(mod, attr, list(val))


@contextmanager
def hooks_restored(model: Any) -> Iterator[None]:
    """Remove, on exit, every hook added to ``model``'s modules inside the block (even on error)."""
    snap = _hook_snapshot(model) if isinstance(model, torch.nn.Module) else []
    try:
        yield
    finally:
        _hook_restore(snap)


@contextmanager
def preserved_model_state(model: Any, *, eval_mode: bool = True) -> Iterator[None]:
    """Run a block against ``model`` and restore its hooks, ``requires_grad``, ``.grad`` and mode.

    Inside the block the model is in eval mode (dropout off) and autograd is enabled. On exit,
    normal or by exception, every hook added inside is removed, parameters get back their
    ``requires_grad`` flags and ``.grad`` tensors, and the model its
    train/eval mode.
    """
    if not isinstance(model, torch.nn.Module):
        yield
        return
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        if eval_mode:
            model.eval()
        with torch.enable_grad(), hooks_restored(model):
            yield
    finally:
        # gradients are only ever taken with torch.autograd.grad w.r.t. activations, so .grad
        # values are never written; identities and flags are restored in case a hook changed them
        for p, f, g in zip(params, flags, grads):
            if p.requires_grad != f:
                p.requires_grad_(f)
            if p.grad is not g:
                p.grad = g
        model.train(was_training)


# ------------------------------------------------------------------------------------------------
# prefix key/value cache
# ------------------------------------------------------------------------------------------------
@dataclass
class PrefixState:
    """A computed prompt prefix, ready to be continued by many rows at once.

    Attributes:
        tokens: The prefix token ids.
        cache: Backend cache object (HF cache, TL cache) or ``None`` for the re-run backend.
        offset: Position of the first suffix token inside the tensors hooks see (0 with a cache,
            ``len(tokens)`` when the prefix is re-run in every row).
    """

    tokens: list[int]
    cache: Any = None
    offset: int = 0
    logits: Tensor | None = field(default=None, repr=False)


class ModelAdapter:
    """Duck-typed access to a TransformerLens model for neuron attribution and interventions.

    Args:
        model: A ``TransformerBridge`` (TL 4.x) or ``HookedTransformer`` (TL 2.x/3.x).
        hook: Which MLP hook holds the neurons: ``"hook_post"`` (default, input of the
            down-projection), ``"hook_pre"`` or ``"hook_pre_linear"`` (gated MLPs).
        kv_cache: ``"auto"`` (use a prefix cache when the model offers one), or ``"off"``.

    Raises:
        ModelError: if the model lacks ``cfg.n_layers`` / ``cfg.d_mlp``, a layer lacks the hook,
            or the hook's width is not ``d_mlp``.
    """

    def __init__(self, model: Any, *, hook: str = "hook_post", kv_cache: Literal["auto", "off"] = "auto"):
        if not isinstance(model, HookedModel):
            raise ModelError(
                f"{type(model).__name__} is not a TransformerLens model: it needs cfg, hook_dict and hooks() "
                "(a TransformerBridge or a HookedTransformer)"
            )
        if hook not in HOOK_CHOICES:
            raise ModelError(f"hook must be one of {HOOK_CHOICES}, got {hook!r}")
        cfg = model.cfg
        for attr in ("n_layers", "d_mlp"):
            if getattr(cfg, attr, None) in (None, 0):
                raise ModelError(f"model.cfg.{attr} is not set; tl_neuronllm needs MLP neurons")
        self.model = model
        self.hook = hook
        self.n_layers = int(cfg.n_layers)
        self.d_mlp = int(cfg.d_mlp)
        self.hook_names = [f"blocks.{layer}.mlp.{hook}" for layer in range(self.n_layers)]
        missing = [n for n in self.hook_names if n not in model.hook_dict]
        if missing:
            raise ModelError(
                f"layer {missing[0].split('.')[1]} has no hook {missing[0]!r}"
                + (f" ({len(missing)} layers missing it)" if len(missing) > 1 else "")
                + f"; choose another hook among {HOOK_CHOICES}"
            )
        sig = inspect.signature(model.forward).parameters
        self.is_bridge = "past_key_values" in sig
        self.is_hooked_transformer = "past_kv_cache" in sig
        self._kv_mode = kv_cache
        self._kv_backend: str | None = None if kv_cache == "auto" else "rerun"
        self._widths_checked = False

    # ---- basic facts --------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device(getattr(self.model.cfg, "device", None) or "cpu")

    @property
    def tokenizer(self) -> Any:
        return getattr(self.model, "tokenizer", None)

    @property
    def d_vocab(self) -> int:
        return int(self.model.cfg.d_vocab)

    @property
    def model_name(self) -> str:
        cfg = self.model.cfg
        return str(getattr(cfg, "model_name", None) or getattr(cfg, "architecture", None) or type(self.model).__name__)

    def describe(self) -> dict[str, Any]:
        """Model facts recorded in results."""
        cfg = self.model.cfg
        return {
            "model_class": type(self.model).__name__,
            "model_name": self.model_name,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "d_model": int(getattr(cfg, "d_model", 0) or 0),
            "d_vocab": self.d_vocab,
            "act_fn": str(getattr(cfg, "act_fn", "")),
            "gated_mlp": bool(getattr(cfg, "gated_mlp", False)),
            "hook": self.hook,
        }

    def check_widths(self) -> None:
        """Run two tokens and check every neuron hook fires once with width ``d_mlp``."""
        if self._widths_checked:
            return
        seen: dict[int, list[int]] = {}

        def make(layer: int) -> HookFn:
            def fn(act: Tensor, hook: Any) -> None:
                seen.setdefault(layer, []).append(int(act.shape[-1]))
            return fn

        toks = torch.zeros((1, 2), dtype=torch.long, device=self.device)
        with preserved_model_state(self.model), torch.no_grad():
            self.forward(toks, fwd_hooks=[(n, make(i)) for i, n in enumerate(self.hook_names)])
        for layer, name in enumerate(self.hook_names):
            widths = seen.get(layer, [])
            if len(widths) != 1:
                raise ModelError(f"hook {name!r} (layer {layer}) fired {len(widths)} times in one forward, expected once")
            if widths[0] != self.d_mlp:
                raise ModelError(
                    f"hook {name!r} (layer {layer}) has width {widths[0]}, expected d_mlp = {self.d_mlp}; "
                    "this hook does not expose MLP neurons on this model"
                )
        self._widths_checked = True

    # ---- tokens -------------------------------------------------------------------------
    def tokenize(self, prompt: str | Sequence[int], *, bos: bool = True) -> list[int]:
        """Token ids of a prompt (strings via the model's tokenizer; token sequences pass through)."""
        if not isinstance(prompt, str):
            return [int(t) for t in prompt]
        if self.tokenizer is None:
            raise ModelError("this model has no tokenizer; use a token-level task (TokenFormat)")
        toks = self.model.to_tokens(prompt, prepend_bos=bos)
        return [int(t) for t in toks[0].tolist()]

    def letter_token_ids(self, n: int) -> list[list[int]]:
        """Token ids of the option letters A.. (forms "A" and " A" that are single tokens).

        Raises:
            ModelError: if a letter has no single-token form.
        """
        tok = self.tokenizer
        if tok is None:
            raise ModelError("this model has no tokenizer; give TokenFormat(letters=...) for the option letters")
        out = []
        for letter in LETTERS[:n]:
            forms: list[int] = []
            for form in (letter, " " + letter):
                ids = tok.encode(form, add_special_tokens=False)
                # a single token that decodes back to the letter (not e.g. an unknown-token id)
                if len(ids) == 1 and ids[0] not in forms and tok.decode([ids[0]]).strip() == letter:
                    forms.append(int(ids[0]))
            if not forms:
                raise ModelError(
                    f"option letter {letter!r} is not a single token in this tokenizer (neither {letter!r} nor "
                    f"{' ' + letter!r}); use mode='cloze'"
                )
            out.append(forms)
        return out

    def pad_batch(self, seqs: Sequence[Sequence[int]], pad: int = 0) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
        """Right-pad token lists into one tensor; returns tokens and lengths."""
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        if int(lengths.min()) < 1:
            raise ValueError("cannot batch an empty token sequence")
        out = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        return out.to(self.device), lengths.to(self.device)

    # ---- forwards -----------------------------------------------------------------------
    def forward(self, tokens: Int[Tensor, "batch pos"], *, fwd_hooks: Sequence[tuple[str, HookFn]] = (), **kwargs: Any) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits of a plain forward pass with temporary forward hooks."""
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            return self.model(tokens, **kwargs)

    @property
    def kv_backend(self) -> str:
        """``"hf"``, ``"tl"`` or ``"rerun"`` (known after the first :meth:`prefix` call)."""
        return self._kv_backend or "unknown"

    def prefix(self, tokens: Sequence[int]) -> PrefixState:
        """Compute a prompt prefix once (no grad) so that many continuations can reuse it."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            return PrefixState(tokens=[], cache=None, offset=0)
        t = torch.tensor([tokens], dtype=torch.long, device=self.device)
        with torch.no_grad():
            if self._kv_backend in (None, "hf") and self.is_bridge:
                logits, cache = self.model(t, return_type="logits_and_cache")
                if cache is not None:
                    self._kv_backend = "hf"
                    return PrefixState(tokens, cache, 0, logits)
            if self._kv_backend in (None, "tl") and self.is_hooked_transformer:
                cache = self._tl_cache_cls().init_cache(self.model.cfg, self.device, 1)
                logits = self.model(t, past_kv_cache=cache, attention_mask=torch.ones_like(t))
                cache.freeze()
                self._kv_backend = "tl"
                return PrefixState(tokens, cache, 0, logits)
        self._kv_backend = "rerun"
        return PrefixState(tokens, None, len(tokens))

    def _tl_cache_cls(self) -> Any:
        mod = inspect.getmodule(type(self.model))
        for name in ("HookedTransformerKeyValueCache", "TransformerLensKeyValueCache"):
            cls = getattr(mod, name, None)
            if cls is not None:
                return cls
        import importlib

        for path in ("transformer_lens.past_key_value_caching", "transformer_lens.cache.key_value_cache"):
            try:
                m = importlib.import_module(path)
            except ImportError:
                continue
            for name in ("HookedTransformerKeyValueCache", "TransformerLensKeyValueCache"):
                if hasattr(m, name):
                    return getattr(m, name)
        raise ModelError("could not find TransformerLens' key/value cache class for this HookedTransformer")

    def run_suffix(
        self,
        state: PrefixState,
        suffix: Int[Tensor, "rows pos"],
        *,
        fwd_hooks: Sequence[tuple[str, HookFn]] = (),
    ) -> Float[Tensor, "rows pos d_vocab"]:
        """Logits of ``rows`` continuations of the same prefix (suffix positions only).

        Hooks see the suffix at positions ``state.offset + j``.
        """
        rows = suffix.shape[0]
        suffix = suffix.to(self.device)
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            if not state.tokens:
                return self.model(suffix)
            if state.cache is None:
                pre = torch.tensor([state.tokens], dtype=torch.long, device=self.device).expand(rows, -1)
                return self.model(torch.cat([pre, suffix], dim=1))[:, len(state.tokens):]
            if self._kv_backend == "hf":
                cache = copy.deepcopy(state.cache)
                if rows > 1:
                    cache.batch_repeat_interleave(rows)
                return self.model(suffix, past_key_values=cache)
            # TL cache: a frozen cache of expanded views, never written
            src = state.cache
            entries = [
                type(e)(past_keys=e.past_keys.expand(rows, -1, -1, -1), past_values=e.past_values.expand(rows, -1, -1, -1), frozen=True)
                for e in src.entries
            ]
            cache = type(src)(entries=entries, previous_attention_mask=src.previous_attention_mask.expand(rows, -1), frozen=True)
            return self.model(suffix, past_kv_cache=cache, attention_mask=torch.ones_like(suffix))

    def row_bytes(self, prefix_len: int, suffix_len: int) -> int:
        """Rough activation memory of one continuation row (for automatic chunk sizes)."""
        cfg = self.model.cfg
        d_model = int(getattr(cfg, "d_model", 512) or 512)
        n_heads = int(getattr(cfg, "n_heads", 8) or 8)
        d_head = int(getattr(cfg, "d_head", d_model // n_heads) or d_model // n_heads)
        kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
        total = prefix_len + suffix_len
        q_len = suffix_len if self._kv_backend in ("hf", "tl") else total
        per_layer = 2 * total * kv * d_head + q_len * (16 * d_model + 6 * self.d_mlp + 3 * n_heads * total)
        elem = torch.finfo(getattr(cfg, "dtype", torch.float32) or torch.float32).bits // 8
        return int(self.n_layers * per_layer * elem + suffix_len * self.d_vocab * 8)
