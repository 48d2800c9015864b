"""Model adapter: one interface over TransformerLens model classes, found by duck typing.

Supports TL 4.x ``TransformerBridge`` (``boot_transformers`` and ``boot_native``) and TL 2.x/3.x
``HookedTransformer`` without importing either class. It resolves the neuron hook names
(``blocks.{l}.mlp.hook_post`` by default), checks that every layer has the hook and that its width
is ``d_mlp``, resolves option-letter token ids, tokenizes prompts, runs right-padded batches
(padding after the last real token never changes a causal model's earlier positions) and gives
access to the **prompt-prefix** machinery that makes exact integrated gradients cheap: a backend per
cache mechanism (:mod:`tl_neuronllm.model.backends`) and the shortcuts on top of it
(:mod:`tl_neuronllm.model.shortcuts`), each declared by the backend (``backend.capabilities()``) and checked
once against the plain forward before it is used, by :attr:`ModelAdapter.checks`
(:class:`~tl_neuronllm.model.checks.ShortcutChecks`, the one writer of the record);
:attr:`ModelAdapter.kv_backend` and :attr:`ModelAdapter.fast_paths` say what is in use. Mixture-of-experts
blocks, and MLP widths that TransformerLens's config mapping gets wrong, are refused before any forward
(:mod:`tl_neuronllm.model.structure`).

:func:`preserved_model_state` guarantees that the user's model leaves a run exactly as it came in:
hooks, ``requires_grad`` flags, ``.grad`` tensors and train/eval mode.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.errors import ModelError
from tl_neuronllm.model.backends import Backend, PrefixState, candidate_backends, is_bridge, model_device
from tl_neuronllm.model.checks import CHECKED, FastPaths, ShortcutChecks
from tl_neuronllm.model.memory import ig_chunk_rows, row_bytes
from tl_neuronllm.model.protocol import HookedModel, HookFn, missing_attributes
from tl_neuronllm.model.shortcuts import JoinStates, PackedLayout, packed_logits
from tl_neuronllm.model.state import preserved_model_state
from tl_neuronllm.model.structure import refuse_mapped_width, refuse_moe, width_mismatch
from tl_neuronllm.model.tokens import check_materialized, letter_token_ids, tokenize_untruncated

HOOK_CHOICES = ("hook_post", "hook_pre", "hook_pre_linear")


class ModelAdapter:
    """Duck-typed access to a TransformerLens model for neuron attribution and interventions.

    Args:
        model: A ``TransformerBridge`` (TL 4.x) or ``HookedTransformer`` (TL 2.x/3.x).
        hook: Which MLP hook holds the neurons: ``"hook_post"`` (default, input of the
            down-projection), ``"hook_pre"`` or ``"hook_pre_linear"`` (gated MLPs).
        kv_cache: ``"auto"`` (use a prefix cache when the model offers one), or ``"off"``.

    Raises:
        ModelError: if the model lacks ``cfg.n_layers`` / ``cfg.d_mlp``, a layer lacks the hook, a
            layer's MLP is a mixture of experts (found by its router and experts modules, before any
            forward), or the hook's width is not ``d_mlp``.
    """

    def __init__(self, model: HookedModel, *, hook: str = "hook_post", kv_cache: Literal["auto", "off"] = "auto"):
        missing = missing_attributes(model)
        if missing:
            raise ModelError(
                f"{type(model).__name__} is not a TransformerLens model: it lacks {', '.join(missing)} "
                "(a TransformerBridge or a HookedTransformer has them all)"
            )
        if hook not in HOOK_CHOICES:
            raise ModelError(f"hook must be one of {HOOK_CHOICES}, got {hook!r}")
        cfg = model.cfg
        for attr in ("n_layers", "d_mlp"):
            if getattr(cfg, attr, None) in (None, 0):
                raise ModelError(f"model.cfg.{attr} is not set; tl_neuronllm needs MLP neurons")
        check_materialized(model)
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
        refuse_moe(model, hook)
        refuse_mapped_width(model)
        self.is_hooked_transformer = "past_kv_cache" in inspect.signature(model.forward).parameters
        self.is_bridge = is_bridge(model)
        if kv_cache not in ("auto", "off"):
            raise ValueError(f"kv_cache must be 'auto' or 'off', got {kv_cache!r}")
        self._candidates = candidate_backends(model, kv_cache)
        self._backend: Backend | None = None  # chosen (and checked) on the first prefix() call
        self._shared: PrefixState | None = None  # the run's shared prompt prefix (share_prefix)
        self.checks = ShortcutChecks(self)  # the one owner of the shortcut checks and of their record
        self._widths_checked = False

    # ---- basic facts --------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return model_device(self.model)

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
                raise ModelError(
                    f"hook {name!r} (layer {layer}) fired {len(widths)} times in one forward, expected once"
                )
            if widths[0] != self.d_mlp:
                raise ModelError(width_mismatch(self.model, name, layer, widths[0], self.d_mlp))
        self._widths_checked = True

    # ---- tokens -------------------------------------------------------------------------
    def tokenize(self, prompt: str | Sequence[int], *, bos: bool = True) -> list[int]:
        """Token ids of a prompt (strings via the model's tokenizer; token sequences pass through), never
        truncated: the model's ``to_tokens(..., truncate=False)``, so that a prompt longer than the context
        comes back at its full length and is refused (:func:`~tl_neuronllm.model.answers.make_queries`).

        Raises:
            ModelError: without a tokenizer.
        """
        if not isinstance(prompt, str):
            return [int(t) for t in prompt]
        if self.tokenizer is None:
            raise ModelError("this model has no tokenizer; use a token-level task (TokenFormat)")
        return tokenize_untruncated(self.model, prompt, bos)

    def letter_token_ids(self, n: int) -> list[list[int]]:
        """Token ids of the option letters A.. (forms "A" and " A" that are single tokens).

        Raises:
            ModelError: if a letter has no single-token form.
        """
        return letter_token_ids(self.tokenizer, n)

    def pad_batch(
        self, seqs: Sequence[Sequence[int]], pad: int = 0
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
        """Right-pad token lists into one tensor; returns tokens and lengths."""
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        if int(lengths.min()) < 1:
            raise ValueError("cannot batch an empty token sequence")
        out = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        return out.to(self.device), lengths.to(self.device)

    # ---- forwards -----------------------------------------------------------------------
    def forward(
        self, tokens: Int[Tensor, "batch pos"], *, fwd_hooks: Sequence[tuple[str, HookFn]] = (), **kwargs: Any
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits of a plain forward pass with temporary forward hooks."""
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            return self.model(tokens, **kwargs)

    # ---- prefix backends and fast paths ---------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The prefix backend in use (chosen and checked on the first :meth:`prefix` call)."""
        if self._backend is None:
            self._backend = self._candidates[-1](self.model)  # the re-run backend needs no check
        return self._backend

    @property
    def fast(self) -> FastPaths:
        """What the shortcut checks found (read it; :attr:`checks` writes it)."""
        return self.checks.paths

    @property
    def kv_backend(self) -> str:
        """``"hf"``, ``"tl"`` or ``"rerun"`` (known after the first :meth:`prefix` call)."""
        return self.fast.backend or "unknown"

    @property
    def fast_paths(self) -> dict[str, bool | None]:
        """Which shortcuts passed their check against the plain forward (``None``: not checked yet):
        ``prefix_cache``, ``packed_rows``, ``skip_layers``, ``letter_columns``, ``shared_prefix``,
        ``exact_ig`` and ``packed_queries``."""
        d = self.fast.to_dict()
        return {k: d[k] for k in CHECKED}

    def note_fallback(self, what: str, reason: str, cost: str) -> None:
        """Record and announce (one warning) a shortcut that was switched off."""
        self.checks.fallback(what, reason, cost)

    def float_dtype(self) -> torch.dtype:
        """The model's floating-point parameter dtype (float32 when it has none)."""
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def prefix(self, tokens: Sequence[int]) -> PrefixState:
        """Compute a prompt prefix once (no grad) so that many continuations can reuse it.

        On the first call the backend is chosen: each candidate (HF cache, TL cache) continues the
        tail of ``tokens`` from its head and must equal the plain forward of ``tokens``; the first
        that does is used, else the re-run backend (exact, slower), with one warning.
        """
        tokens = [int(t) for t in tokens]
        if self._backend is None and len(tokens) >= 2:
            self._backend = self.checks.choose_backend(self._candidates, tokens)
        shared = self._shared
        if (
            shared is not None
            and self.fast.shared_prefix is not False
            and len(tokens) > len(shared.tokens)
            and tokens[: len(shared.tokens)] == shared.tokens
        ):
            if self.fast.shared_prefix is None:
                self.checks.check_shared_prefix(shared, tokens)
            if self.fast.shared_prefix:
                return self.backend.extend(shared, tokens[len(shared.tokens) :])
        return self.backend.prefix(tokens)

    @property
    def shared_state(self) -> PrefixState | None:
        """The run's shared prefix (see :meth:`share_prefix`) once its continuation was verified, else ``None``."""
        return self._shared if self.fast.shared_prefix else None

    def share_prefix(self, prompts: Sequence[Sequence[int]], min_tokens: int = 8) -> int:
        """Compute once the token prefix that all ``prompts`` share (instruction and demonstrations),
        so that :meth:`prefix` continues it instead of recomputing it for every prompt. Checked, on
        first use, against computing a prompt's prefix from scratch. Returns the shared length (0:
        nothing worth sharing, or a backend without a cache)."""
        self._shared = None
        seqs = [list(p) for p in prompts]
        if len(seqs) < 2:
            return 0
        n = min(len(p) - 2 for p in seqs)  # leave every prompt a token of its own before the site
        first = seqs[0]
        for p in seqs[1:]:
            i = 0
            while i < n and p[i] == first[i]:
                i += 1
            n = i
        if n < min_tokens:
            return 0
        state = self.prefix(first[:n])
        if not self.backend.cached:
            return 0
        self._shared = state
        return n

    def disable_shortcuts(self, reason: str) -> bool:
        """Switch off the next shortcut, most specific first (skipping, packing and columns, the shared
        prefix, the cache); ``False`` when nothing is left (the plain path itself disagreed)."""
        step = self.checks.disable_next(reason)
        if step == "cache":
            self._backend, self._shared = self._candidates[-1](self.model), None
            self.checks.set_backend(self._backend.name, False)
        return step is not None

    def run_suffix(
        self,
        state: PrefixState,
        suffix: Int[Tensor, "rows pos"],
        *,
        fwd_hooks: Sequence[tuple[str, HookFn]] = (),
    ) -> Float[Tensor, "rows pos d_vocab"]:
        """Logits of ``rows`` continuations of the same prefix (suffix positions only), as a
        right-padded batch. Hooks see the suffix at positions ``state.offset + j``."""
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            return self.backend.run_suffix(state, suffix)

    def packs_rows_for(self, prefix_len: int, row_len: int) -> int:
        """How many rows of this length :meth:`run_rows` packs into one sequence after a prefix of this
        length (0: it runs them as a batch). As far as known before the one-time check; call after
        :meth:`prefix`. Packed sequences stay within ``cfg.n_ctx`` and any sliding attention window."""
        if self.fast.packed_rows is False:
            return 0
        return self.backend.capabilities().packs(prefix_len, row_len, int(getattr(self.model.cfg, "n_ctx", 0) or 0))

    def check_fast_paths(self, state: PrefixState, row: Sequence[int], logit_cols: Sequence[int] | None = None) -> None:
        """Run :meth:`run_rows`' pending one-time checks (packing, skipping, and with ``logit_cols`` the
        partial unembedding) against the plain forward of ``state.tokens + row``."""
        self.checks.check_rows(state, row, logit_cols)

    def run_rows(
        self,
        state: PrefixState,
        rows: Sequence[Sequence[int]],
        *,
        fwd_hooks: Sequence[tuple[str, HookFn]] | Callable[[Tensor], Sequence[tuple[str, HookFn]]] = (),
        group_start: Sequence[int] | None = None,
        group_size: int | None = None,
        logit_cols: Sequence[int] | None = None,
        flat: bool = False,
        join: JoinStates | None = None,
    ) -> Float[Tensor, "rows pos d_vocab"] | tuple[Float[Tensor, "positions d_vocab"], Int[Tensor, "rows pos"]]:
        """Logits of many continuations of the same prefix, right-padded to ``[rows, T_max, d_vocab]``
        (``[rows, T_max, len(logit_cols)]`` with ``logit_cols``).

        Uses the verified shortcuts of :mod:`tl_neuronllm.model.shortcuts` (packed rows; with
        ``group_start``, rows joining at later blocks; with ``logit_cols``, a partial unembedding),
        else a right-padded batch over the backend. ``group_start``: the rows are
        ``G = len(group_start)`` copies of the same group, copy ``g`` equal to copy 0 below block
        ``group_start[g]`` (the caller's hooks must leave it so). ``fwd_hooks`` may be a function of
        the row sites: a ``[rows]`` tensor of flat indices into ``act.reshape(-1, act.shape[-1])`` of
        each row's first token. ``group_size``: the rows come in consecutive groups of this many that a
        hook treats alike (default ``len(rows) // len(group_start)`` with ``group_start``, else 1); packed
        rows of a group share their common first tokens, so their sites may repeat. ``flat``: return
        ``(logits, where)`` instead, row ``r``'s position ``i`` being ``logits[where[r, i]]`` (shared
        positions are not copied per row). ``join``: with ``group_start`` on the packed path that skips blocks,
        an empty :class:`~tl_neuronllm.model.shortcuts.JoinStates` records copy 0's state at every block, and a
        filled one lets rows without copy 0 join from it (other paths run every row from the embeddings, so
        rows without copy 0 are right there too, and nothing is recorded).
        """
        if not rows or min(len(r) for r in rows) < 1:
            raise ValueError("run_rows needs at least one non-empty row")
        lengths = [len(r) for r in rows]
        T, P = max(lengths), len(state.tokens)
        self.check_fast_paths(state, rows[0], logit_cols)
        fp = self.fast
        if group_size is None:
            group_size = len(rows) // len(group_start) if group_start else 1
        lay = PackedLayout.of(rows, group_size) if fp.packed_rows else None
        if lay is not None and 0 < len(lay.tokens) <= T * self.packs_rows_for(P, T):
            out, where = packed_logits(
                self,
                state,
                rows,
                fwd_hooks=fwd_hooks,
                group_start=group_start,
                group_size=group_size,
                logit_cols=logit_cols,
                skip=bool(fp.skip_layers),
                cols_direct=bool(fp.letter_columns),
                layout=lay,
                join=join,
                logits_from=[0] * len(rows),  # no prefix position's logits (when the prefix is in the sequence)
            )
            return (out, where) if flat else out[where]
        suffix = torch.zeros((len(rows), T), dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            suffix[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        sites = torch.arange(len(rows), device=self.device) * (state.offset + T) + state.offset
        hooks = fwd_hooks(sites) if callable(fwd_hooks) else fwd_hooks
        out = self.run_suffix(state, suffix, fwd_hooks=hooks)
        out = out if logit_cols is None else out[..., torch.as_tensor(list(logit_cols), device=out.device)]
        if not flat:
            return out
        pos = torch.minimum(torch.arange(T)[None], torch.tensor(lengths)[:, None] - 1)
        return out.reshape(-1, out.shape[-1]), (torch.arange(len(rows))[:, None] * T + pos).to(out.device)

    def groups_per_chunk(
        self, prefix_len: int, group: Sequence[Sequence[int]], n_groups: int, memory_budget_mb: float | None
    ) -> int:
        """How many copies of a row ``group`` (a query's options) fit one forward of :meth:`run_rows`
        under ``memory_budget_mb``: counted in packed tokens when rows are packed (a group's rows share
        their first tokens there), else in right-padded rows. Call after the one-time checks."""
        T = max(len(r) for r in group)
        if self.fast.packed_rows and self.packs_rows_for(prefix_len, T):
            nodes = len(PackedLayout.of(group, len(group)).tokens)
            return max(1, ig_chunk_rows(self, prefix_len, 1, n_groups * nodes, memory_budget_mb) // nodes)
        return max(1, ig_chunk_rows(self, prefix_len, T, n_groups * len(group), memory_budget_mb) // len(group))

    def row_bytes(self, prefix_len: int, suffix_len: int, *, packed_rows: int = 0) -> int:
        """Rough activation memory of one continuation row (:func:`tl_neuronllm.model.memory.row_bytes`)."""
        return row_bytes(
            self.model.cfg,
            n_layers=self.n_layers,
            d_mlp=self.d_mlp,
            d_vocab=self.d_vocab,
            dtype=self.float_dtype(),
            cached=self.backend.cached,
            prefix_len=prefix_len,
            suffix_len=suffix_len,
            packed_rows=packed_rows,
        )
