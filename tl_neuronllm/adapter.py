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
import warnings
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
    modes = [(m, m.training) for m in model.modules()]  # each module's flag, not only the root's
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
        for m, training in modes:
            m.training = training


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
        self.is_hooked_transformer = "past_kv_cache" in sig
        # a TransformerBridge: TL 4.x names past_key_values; TL 3.x's Bridge passes it on through **kwargs
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())
        self.is_bridge = "past_key_values" in sig or (
            not self.is_hooked_transformer and takes_kwargs and hasattr(model, "original_model"))
        self._kv_mode = kv_cache
        self._kv_backend: str | None = None if kv_cache == "auto" else "rerun"
        self._packed_ok: bool | None = None  # whether run_rows may pack rows (checked on first use)
        self._skip_ok: bool | None = None  # whether run_rows may skip blocks for row groups (same)
        self._cols_ok: bool | None = None  # whether run_rows may unembed only some columns (same)
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

    @property
    def fast_paths(self) -> dict[str, bool | None]:
        """Which of :meth:`run_rows`' shortcuts this model passed its one-time checks for (``None``:
        not checked yet): ``packed_rows``, ``skip_layers`` and ``letter_columns``."""
        return {"packed_rows": self._packed_ok, "skip_layers": self._skip_ok, "letter_columns": self._cols_ok}

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

    # ---- packed continuation rows ----------------------------------------------------------
    def _sliding_window(self) -> int | None:
        hf_cfg = getattr(getattr(self.model, "original_model", None), "config", None)
        window = getattr(hf_cfg, "sliding_window", None)
        if window and getattr(hf_cfg, "use_sliding_window", True) is not False:
            return int(window)
        return None

    def packs_rows_for(self, prefix_len: int, row_len: int) -> int:
        """How many rows of this length :meth:`run_rows` packs into one sequence after a prefix of this
        length (0: it runs them as a batch). As far as known before its one-time check; call after
        :meth:`prefix`. Packed sequences stay within ``cfg.n_ctx`` and any sliding attention window."""
        if self._packed_ok is False or not self.is_bridge or self._kv_backend not in ("hf", "rerun") or not prefix_len:
            return 0
        window = self._sliding_window()
        if window is not None and prefix_len + row_len > window:
            return 0
        n_ctx = int(getattr(self.model.cfg, "n_ctx", 0) or 0)
        return max(0, (n_ctx - prefix_len) // row_len) if n_ctx > 0 else 2**31

    def run_rows(
        self,
        state: PrefixState,
        rows: Sequence[Sequence[int]],
        *,
        fwd_hooks: Sequence[tuple[str, HookFn]] | Callable[[Tensor], Sequence[tuple[str, HookFn]]] = (),
        group_start: Sequence[int] | None = None,
        logit_cols: Sequence[int] | None = None,
    ) -> Float[Tensor, "rows pos d_vocab"]:
        """Logits of many continuations of the same prefix, right-padded to ``[rows, T_max, d_vocab]``
        (``[rows, T_max, len(logit_cols)]`` with ``logit_cols``).

        On a ``TransformerBridge`` the rows are **packed into one sequence** after the prefix: row
        ``r`` sits at positions ``P .. P + len(r) - 1`` (``P`` = prefix length) and attends to the
        prefix and causally to itself only (a 4D additive attention mask and explicit
        ``position_ids``), so it computes exactly what it would alone; the prefix cache is used with
        batch 1 (no per-row copies) and ``R`` rows cost ``sum len(r)`` token-passes. Without a cache
        (``boot_native``, ``kv_cache="off"``) the prefix is computed once per call in the same
        sequence. Other backends run the rows as a right-padded batch (:meth:`run_suffix`).
        Packing is checked once per adapter against the batched path and turned off, with a
        warning, if the model does not honour it.

        **Skipping layers** (``group_start``): the rows are ``G = len(group_start)`` copies of the same
        group of rows (``rows == rows[:R // G] * G``), and copy ``g`` need only be computed from block
        ``group_start[g]`` on: below it, it equals copy 0 (``group_start[0] == 0``, non-decreasing).
        The caller's hooks must leave copy ``g`` unchanged below its start. On the packed path the
        sequence then holds only the copies started at each block, and a copy joins with copy 0's
        hidden state. Also checked once per adapter; where unsupported every copy runs all blocks
        (same result).

        **Only some logits** (``logit_cols``): on the packed path the unembedding's input is taken and
        only these vocabulary columns are computed (``W_U[:, cols]``), which saves most of the
        unembedding's forward and backward when ``d_vocab`` is large; checked once per adapter
        against the full logits (models that transform logits after the unembedding fail it).

        ``fwd_hooks`` may be a function of the row sites: a ``[rows]`` tensor of flat indices into
        ``act.reshape(-1, act.shape[-1])`` of each row's first token, valid for every per-position
        hook (``[batch, pos, ...]``) of this call.
        """
        if not rows or min(len(r) for r in rows) < 1:
            raise ValueError("run_rows needs at least one non-empty row")
        lengths = [len(r) for r in rows]
        T, P, S = max(lengths), len(state.tokens), sum(lengths)
        dev = self.device
        self.check_fast_paths(state, rows[0], logit_cols)
        if not (self._packed_ok and 0 < S <= T * self.packs_rows_for(P, T)):
            suffix = torch.zeros((len(rows), T), dtype=torch.long, device=dev)
            for i, r in enumerate(rows):
                suffix[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            sites = torch.arange(len(rows), device=dev) * (state.offset + T) + state.offset
            hooks = fwd_hooks(sites) if callable(fwd_hooks) else fwd_hooks
            out = self.run_suffix(state, suffix, fwd_hooks=hooks)
            return out if logit_cols is None else out[..., torch.as_tensor(list(logit_cols), device=out.device)]

        starts = torch.tensor([0, *lengths[:-1]], device=dev).cumsum(0)
        row_id = torch.repeat_interleave(torch.arange(len(rows), device=dev), torch.tensor(lengths, device=dev))
        pos_in_row = torch.arange(S, device=dev) - starts[row_id]
        seq = torch.tensor([t for r in rows for t in r], dtype=torch.long, device=dev)
        dtype = self._float_dtype()
        # new tokens see the whole prefix, and their own row up to themselves
        own = (row_id[:, None] == row_id[None, :]) & (pos_in_row[None, :] <= pos_in_row[:, None])
        allowed = torch.cat([torch.ones(S, P, dtype=torch.bool, device=dev), own], dim=1)
        if state.cache is None:  # the prefix runs in the same sequence, causal among itself
            pre = torch.ones(P, P + S, dtype=torch.bool, device=dev).tril()
            allowed = torch.cat([pre, allowed], dim=0)
            tokens = torch.cat([torch.tensor(state.tokens, dtype=torch.long, device=dev), seq])
            positions = torch.cat([torch.arange(P, device=dev), P + pos_in_row])
            off, cache = P, None
        else:
            tokens, positions, off = seq, P + pos_in_row, 0
            cache = copy.deepcopy(state.cache)  # batch 1, small; a call extends the cache in place
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill_(~allowed, torch.finfo(dtype).min)
        kwargs: dict[str, Any] = {"attention_mask": mask[None, None], "position_ids": positions[None]}
        if cache is not None:
            kwargs["past_key_values"] = cache
        sites = off + starts
        hooks = list(fwd_hooks(sites) if callable(fwd_hooks) else fwd_hooks)
        handles = self._skip_hooks(group_start, lengths, off, P if cache is not None else 0)
        cols = None if logit_cols is None else torch.as_tensor(list(logit_cols), dtype=torch.long, device=dev)
        unembed = self._unembed_linear() if cols is not None and self._cols_ok else None
        taken: list[Tensor] = []
        if unembed is not None:
            def take(module: Any, args: tuple) -> tuple:  # keep the input, unembed nothing
                taken.append(args[0])
                return (args[0][..., :0, :], *args[1:])
            handles.append(unembed.register_forward_pre_hook(take))
        try:
            with self.model.hooks(fwd_hooks=hooks):
                out = self.model(tokens[None], **kwargs)[0]
        finally:
            for h in handles:
                h.remove()
        if unembed is not None:
            bias = unembed.bias[cols] if unembed.bias is not None else None
            out = torch.nn.functional.linear(taken[0][0], unembed.weight[cols], bias)
        elif cols is not None:
            out = out[..., cols]
        last = off + starts + torch.tensor(lengths, device=dev) - 1  # pad a row with its last position
        return out[torch.minimum(off + starts[:, None] + torch.arange(T, device=dev), last[:, None])]

    def check_fast_paths(self, state: PrefixState, row: Sequence[int], logit_cols: Sequence[int] | None = None) -> None:
        """Run :meth:`run_rows`' pending one-time checks (packing, skipping, and with ``logit_cols`` the
        partial unembedding) on a continuation ``row`` of ``state``; :meth:`run_rows` calls it too."""
        if self._packed_ok is None and self.packs_rows_for(len(state.tokens), len(row)) >= 2:
            self._check_packing(state, row)
        if logit_cols is not None and self._cols_ok is None and self._packed_ok:
            self._check_logit_cols(state, row, logit_cols)

    def _unembed_linear(self) -> torch.nn.Linear | None:
        lin = getattr(getattr(self.model, "unembed", None), "original_component", None)
        return lin if isinstance(lin, torch.nn.Linear) else None

    def _check_logit_cols(self, state: PrefixState, row: Sequence[int], cols: Sequence[int]) -> None:
        """Check that unembedding only ``cols`` gives the full logits' columns (once per adapter)."""
        if self._unembed_linear() is None:
            self._cols_ok = False
            return
        with torch.no_grad():
            self._cols_ok = False
            full = self.run_rows(state, [row, row], logit_cols=cols)
            self._cols_ok = True
            try:
                part = self.run_rows(state, [row, row], logit_cols=cols)
                self._cols_ok = bool(part.shape == full.shape) and self._close(part, full)
            except Exception:  # noqa: BLE001 - any failure means: unembed everything
                self._cols_ok = False

    def _close(self, a: Tensor, b: Tensor) -> bool:
        err = float((a.float() - b.float()).abs().max())
        tol = 1e-4 if torch.finfo(self._float_dtype()).bits >= 32 else 3e-2
        return err <= tol * (1.0 + float(b.float().abs().max()))

    def _skip_hooks(self, group_start: Sequence[int] | None, lengths: list[int], off: int, kv_off: int) -> list[Any]:
        """Forward pre-hooks on the blocks that hold only the started row groups in the sequence."""
        if group_start is None or self._skip_ok is False or max(group_start) == 0:
            return []
        G = len(group_start)
        if len(lengths) % G or lengths != lengths[: len(lengths) // G] * G:
            raise ValueError("group_start needs the rows to be equal groups")
        starts = [int(x) for x in group_start]
        if starts[0] != 0 or any(b < a for a, b in zip(starts, starts[1:])) or starts[-1] >= self.n_layers:
            raise ValueError(f"group_start must start at 0, not decrease and stay below n_layers, got {starts}")
        S_g = sum(lengths[: len(lengths) // G])
        full_q = off + G * S_g
        blocks = getattr(self.model, "blocks", None)
        if blocks is None or len(blocks) != self.n_layers:
            return []

        def cut(v: Any, n_q: int) -> Any:
            if isinstance(v, (tuple, list)):
                return type(v)(cut(x, n_q) for x in v)
            if not isinstance(v, Tensor) or v.ndim == 0:
                return v
            if v.ndim == 4 and v.shape[-2] == full_q and v.shape[-1] == kv_off + full_q:  # attention mask
                return v[..., :n_q, : kv_off + n_q]
            if not v.is_floating_point() and v.shape[-1] == full_q:  # position ids, cache positions
                return v[..., :n_q]
            if v.is_floating_point() and v.ndim == 3 and v.shape[1] == full_q:  # rotary cos / sin
                return v[:, :n_q]
            return v

        def make(layer: int) -> Any:
            n_q = off + S_g * sum(1 for s in starts if s <= layer)

            def pre(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                positional = bool(args)
                h = args[0] if positional else kwargs["hidden_states"]
                if h.shape[1] > n_q:
                    h = h[:, :n_q]
                elif h.shape[1] < n_q:  # started copies join with copy 0's hidden state
                    ref = h[:, off : off + S_g].detach()
                    h = torch.cat([h, ref.repeat(1, (n_q - h.shape[1]) // S_g, 1)], dim=1)
                rest = tuple(cut(a, n_q) for a in args[1:])
                kw = {k: cut(v, n_q) for k, v in kwargs.items() if k != "hidden_states"}
                return ((h, *rest), kw) if positional else (rest, {**kw, "hidden_states": h})

            return pre

        return [blocks[j].register_forward_pre_hook(make(j), with_kwargs=True) for j in range(self.n_layers)]

    def _float_dtype(self) -> torch.dtype:
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def _check_packing(self, state: PrefixState, row: Sequence[int]) -> None:
        """Check packed rows against the batched path, and skipped blocks against packed rows.

        Packing: a packed run of ``[row, row]`` must equal the batched run of ``row``. Skipping: three
        copies of ``row`` started at blocks ``0, 1, L-1``, each scaled at its start block's neurons
        (so a copy that wrongly joins or misses a block shows), must equal the same packed run
        without skipping. Either failing turns its feature off for this adapter, with a warning.
        """
        compare = self._close

        def attempt(fn: Callable[[], Tensor], what: str) -> Tensor | None:
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - any failure means: do not use the feature
                warnings.warn(f"{what} is not supported by this model ({e!r}); running without it (exact, slower)",
                              stacklevel=4)
                return None

        self._packed_ok = True
        with torch.no_grad():
            packed = attempt(lambda: self.run_rows(state, [row, row]), "packing continuation rows")
            self._packed_ok = False
            ref = self.run_rows(state, [row])
            self._packed_ok = packed is not None and compare(packed, torch.cat([ref, ref]))
            if packed is not None and not self._packed_ok:
                warnings.warn("packed continuation rows differ from batched rows on this model; running them "
                              "batched (exact, slower)", stacklevel=3)
            if not self._packed_ok or self.n_layers < 2:
                self._skip_ok = False
                return
            starts = [0, 1, self.n_layers - 1]

            def hooks(sites: Tensor) -> list[tuple[str, HookFn]]:  # scale copy g at its start block
                n = len(sites) // 3
                return [(self.hook_names[s], self._scale_rows_hook(sites[g * n : (g + 1) * n])) for g, s in enumerate(starts) if g]

            self._skip_ok = True
            skipped = attempt(lambda: self.run_rows(state, [row] * 3, fwd_hooks=hooks, group_start=starts),
                              "skipping blocks for continuation rows")
            self._skip_ok = False
            full = self.run_rows(state, [row] * 3, fwd_hooks=hooks, group_start=starts)
            self._skip_ok = skipped is not None and compare(skipped, full)
            if skipped is not None and not self._skip_ok:
                warnings.warn("skipping blocks for continuation rows changes this model's results; running every "
                              "block (exact, slower)", stacklevel=3)

    @staticmethod
    def _scale_rows_hook(sites: Tensor) -> HookFn:
        def hook(act: Tensor, hook: Any) -> Tensor:
            flat = act.reshape(-1, act.shape[-1])
            return flat.index_copy(0, sites, 0.5 * flat[sites]).view(act.shape)
        return hook

    def row_bytes(self, prefix_len: int, suffix_len: int, *, packed_rows: int = 0) -> int:
        """Rough activation memory of one continuation row (for automatic chunk sizes).

        ``packed_rows``: the number of rows packed into the same sequence (:meth:`run_rows`), whose
        attention width grows with it; 0 for a right-padded batch (:meth:`run_suffix`).
        """
        cfg = self.model.cfg
        d_model = int(getattr(cfg, "d_model", 512) or 512)
        n_heads = int(getattr(cfg, "n_heads", 8) or 8)
        d_head = int(getattr(cfg, "d_head", d_model // n_heads) or d_model // n_heads)
        kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
        elem = torch.finfo(self._float_dtype()).bits // 8
        if packed_rows:
            width = prefix_len + packed_rows * suffix_len
            per_layer = suffix_len * (16 * d_model + 6 * self.d_mlp + 4 * n_heads * width)
            return int(self.n_layers * per_layer * elem + suffix_len * self.d_vocab * (elem + 8))
        total = prefix_len + suffix_len
        q_len = suffix_len if self._kv_backend in ("hf", "tl") else total
        per_layer = 2 * total * kv * d_head + q_len * (16 * d_model + 6 * self.d_mlp + 3 * n_heads * total)
        return int(self.n_layers * per_layer * elem + suffix_len * self.d_vocab * 8)
