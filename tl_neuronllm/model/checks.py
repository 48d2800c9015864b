"""The one owner of an adapter's shortcut checks and of the record of what they found.

:class:`ShortcutChecks` runs each one-time check of :mod:`tl_neuronllm.model.shortcuts` against a **plain
full-sequence forward without any cache**, and is the only writer of :class:`FastPaths` (what
``adapter.fast_paths`` shows and results store). Checks that live in other layers (one layer's IG against
the naive loop in :mod:`tl_neuronllm.attribution.kernels`; several questions packed into one forward in
:mod:`tl_neuronllm.evaluation.engines`) report their verdict through :meth:`ShortcutChecks.record`. A
shortcut that disagrees is switched off with one :class:`~tl_neuronllm.errors.ShortcutFallbackWarning`.
A shortcut the backend does not declare (:class:`~tl_neuronllm.model.backends.Capabilities`) is never
tried: it is recorded as off with its reason in :attr:`FastPaths.not_supported`, without a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from tl_neuronllm.model.backends import Backend, PrefixState
from tl_neuronllm.model.protocol import ShortcutHost
from tl_neuronllm.model.shortcuts import (
    close,
    max_err,
    packed_forward,
    plain_rows,
    scale_rows_hook,
    try_shortcut,
    warn_fallback,
)

CHECKED = (
    "prefix_cache",
    "packed_rows",
    "skip_layers",
    "letter_columns",
    "shared_prefix",
    "exact_ig",
    "packed_queries",
)


@dataclass
class FastPaths:
    """What was verified against the plain computation on this model (``None``: not checked yet).

    Attributes:
        backend: The prefix backend in use (``"hf"``, ``"tl"``, ``"rerun"``; ``None`` before the first prefix).
        prefix_cache: The backend's continuation equals the plain forward.
        packed_rows: Packed rows equal the plain forward.
        skip_layers: Rows joining at later blocks equal the plain forward with the same scaling.
        letter_columns: Unembedding only some columns equals those columns of the full logits.
        shared_prefix: Continuing the run's shared prefix (instruction and demonstrations) with a
            query's own tokens equals computing the query's prefix from scratch.
        exact_ig: One layer's fast IG equals the naive per-step IG (checked by attribution).
        packed_queries: Several questions' evaluation rows packed into one forward after the shared
            prefix equal each question run on its own (checked by the evaluation).
        fallbacks: One line per shortcut switched off after a failed check, with the reason.
        not_supported: One line per shortcut not tried because the backend does not declare it.
    """

    backend: str | None = None
    prefix_cache: bool | None = None
    packed_rows: bool | None = None
    skip_layers: bool | None = None
    letter_columns: bool | None = None
    shared_prefix: bool | None = None
    exact_ig: bool | None = None
    packed_queries: bool | None = None
    fallbacks: list[str] = field(default_factory=list)
    not_supported: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ShortcutChecks:
    """Runs one adapter's shortcut checks once each and records the verdicts (see the module docstring).

    Args:
        host: The adapter whose model, backend and forwards the checks use.
    """

    def __init__(self, host: ShortcutHost):
        self.host = host
        self.paths = FastPaths()

    # ---- the record ----------------------------------------------------------------------
    def pending(self, name: str) -> bool:
        """Whether shortcut ``name`` (one of :data:`CHECKED`) is still unchecked."""
        return getattr(self.paths, name) is None

    def engaged(self, name: str) -> bool:
        """Whether shortcut ``name`` passed its check and is in use."""
        return bool(getattr(self.paths, name))

    def record(self, name: str, ok: bool, *, what: str = "", reason: str = "", cost: str = "") -> bool:
        """Record the verdict of shortcut ``name``'s check; a failed one with ``what`` is announced (one
        :class:`~tl_neuronllm.errors.ShortcutFallbackWarning` naming ``reason`` and the ``cost``). Returns ``ok``.

        Raises:
            ValueError: if ``name`` is not one of :data:`CHECKED`.
        """
        if name not in CHECKED:
            raise ValueError(f"unknown shortcut {name!r}; one of {CHECKED}")
        setattr(self.paths, name, bool(ok))
        if not ok and what:
            self.fallback(what, reason, cost)
        return bool(ok)

    def unsupported(self, name: str, reason: str) -> None:
        """Record shortcut ``name`` as off because the backend does not declare it (no warning)."""
        setattr(self.paths, name, False)
        self.paths.not_supported.append(f"{name}: {reason}")

    def fallback(self, what: str, reason: str, cost: str) -> None:
        """Record and announce (one warning) a shortcut that was switched off."""
        self.paths.fallbacks.append(f"{what}: {reason}")
        warn_fallback(what, reason, cost, stacklevel=5)

    def set_backend(self, name: str, cached: bool | None) -> None:
        """Record the backend in use (``cached``: whether its cache was verified; ``None``: no cache)."""
        self.paths.backend = name
        if cached is not None:
            self.paths.prefix_cache = cached

    # ---- the checks ----------------------------------------------------------------------
    def check_rows(self, state: PrefixState, row: Sequence[int], logit_cols: Sequence[int] | None = None) -> None:
        """Check packing, skipping and (with ``logit_cols``) the partial unembedding against the plain
        forward of ``state.tokens + row``, each once; switch off and warn on disagreement."""
        host, caps = self.host, self.host.backend.capabilities()
        if self.pending("packed_rows") and not caps.packing:
            self._unsupported_rows(f"the {host.backend.name} backend cannot pack rows on this model")
        if self.pending("packed_rows") and host.packs_rows_for(len(state.tokens), max(len(row), 2)) >= 6:
            self._check_packing(state, row, caps.skip_layers)
        if logit_cols is not None and self.pending("letter_columns") and self.paths.packed_rows:
            if not caps.logit_columns:
                self.unsupported("letter_columns", "the unembedding is not a plain nn.Linear")
            else:
                self._check_cols(state, row, logit_cols)

    def _unsupported_rows(self, reason: str) -> None:
        self.unsupported("packed_rows", reason)
        for name in ("skip_layers", "letter_columns"):
            if self.pending(name):
                self.unsupported(name, "needs packed rows")

    def _check_packing(self, state: PrefixState, row: Sequence[int], can_skip: bool) -> None:
        host, dtype = self.host, self.host.float_dtype()
        pair = branching_pair(host.d_vocab, row)
        with torch.no_grad():
            ref = plain_rows(host, state.tokens, pair * 2)
            packed, why = try_shortcut(lambda: packed_forward(host, state, pair * 2, group_size=2))
            ok = packed is not None and close(packed, ref, dtype)
            if ok:  # and unembedding only the positions read: all but the rows' shared first token
                longer = [[*r, r[0]] for r in pair] * 2
                ref = plain_rows(host, state.tokens, longer)[:, 1:]
                packed, why = try_shortcut(
                    lambda: packed_forward(host, state, longer, group_size=2, logits_from=[1] * 4)[:, 1:]
                )
                ok = packed is not None and close(packed, ref, dtype)
            if not self.record(
                "packed_rows",
                ok,
                what="packed rows",
                reason=why or max_err(packed, ref),
                cost="each row its own batch entry",
            ):
                self.paths.skip_layers = False
                return
            if host.n_layers < 2 or not self.pending("skip_layers"):
                return
            if not can_skip:
                self.unsupported("skip_layers", "the model's blocks are not reachable one by one")
                return
            starts = [0, 1, host.n_layers - 1]

            def hooks(first: Tensor) -> list[tuple[str, Any]]:  # scale copy g at its start block, at its sites
                return [
                    (host.hook_names[s], scale_rows_hook(first[2 * g : 2 * g + 2])) for g, s in enumerate(starts) if g
                ]

            skipped, why = try_shortcut(
                lambda: packed_forward(host, state, pair * 3, fwd_hooks=hooks, group_start=starts, skip=True)
            )
            full = plain_rows(host, state.tokens, pair * 3, fwd_hooks=hooks)
            self.record(
                "skip_layers",
                skipped is not None and close(skipped, full, dtype),
                what="skipping blocks for continuation rows",
                reason=why or max_err(skipped, full),
                cost=f"every IG row runs all {host.n_layers} blocks, about 2x the block passes",
            )

    def _check_cols(self, state: PrefixState, row: Sequence[int], cols: Sequence[int]) -> None:
        host = self.host
        with torch.no_grad():
            ref = plain_rows(host, state.tokens, [row, row])[..., torch.as_tensor(list(cols), device=host.device)]
            part, why = try_shortcut(lambda: packed_forward(host, state, [row, row], logit_cols=cols, cols_direct=True))
        self.record(
            "letter_columns",
            part is not None and close(part, ref, host.float_dtype()),
            what="unembedding only the letter columns",
            reason=why or max_err(part, ref),
            cost="the full unembedding is computed",
        )

    def choose_backend(self, candidates: Sequence[type[Backend]], tokens: list[int]) -> Backend:
        """The first of ``candidates`` whose cached continuation of ``tokens`` equals the plain forward (the
        last one, the re-run backend, when none does; the reasons go to a ShortcutFallbackWarning)."""
        host = self.host
        tail = min(3, len(tokens) - 1)
        head, rows = tokens[:-tail], [tokens[-tail:]] * 2
        with torch.no_grad():
            ref = plain_rows(host, head, rows)
        reasons = []
        for cls in candidates:
            backend = cls(host.model)
            if not backend.cached:
                break

            def attempt(backend: Backend = backend) -> Tensor:
                state = backend.prefix(head)
                with torch.no_grad():
                    return backend.run_suffix(state, torch.tensor(rows, device=host.device))

            out, why = try_shortcut(attempt)
            if out is not None and close(out, ref, host.float_dtype()):
                self.set_backend(cls.name, True)
                return backend
            reasons.append(f"{cls.name} cache: {why or max_err(out, ref)}")
        backend = candidates[-1](host.model)
        self.set_backend(backend.name, False if reasons else None)
        if reasons:
            self.fallback(
                "the key/value cache",
                "; ".join(reasons),
                "every continuation re-runs the prompt prefix, about (prefix + suffix) / suffix "
                f"times the cached cost ({len(tokens)}-token prompt here)",
            )
        return backend

    def check_shared_prefix(self, shared: PrefixState, tokens: list[int]) -> None:
        """Check once that continuing ``shared`` to ``tokens`` equals the plain forward."""
        host = self.host
        tail = min(3, len(tokens) - len(shared.tokens))
        head, rows = tokens[:-tail], [tokens[-tail:]] * 2
        with torch.no_grad():
            ref = plain_rows(host, head, rows)

            def attempt() -> Tensor:
                extra = head[len(shared.tokens) :]
                state = host.backend.extend(shared, extra) if extra else shared
                return host.backend.run_suffix(state, torch.tensor(rows, device=host.device))

            out, why = try_shortcut(attempt)
        self.record(
            "shared_prefix",
            out is not None and close(out, ref, host.float_dtype()),
            what="continuing the shared prefix",
            reason=why or max_err(out, ref),
            cost="each prompt's prefix is computed from its first token",
        )

    def disable_next(self, reason: str) -> str | None:
        """Switch off the next shortcut, most specific first (skipping; packing and columns; the shared prefix);
        ``"cache"`` when only the backend's cache is left (the host replaces the backend), ``None`` when
        nothing is left."""
        fp = self.paths
        if fp.skip_layers:
            fp.skip_layers = False
            self.fallback("skipping blocks for continuation rows", reason, "every IG row runs all blocks")
        elif fp.packed_rows or fp.letter_columns:
            fp.packed_rows = fp.letter_columns = fp.skip_layers = False
            self.fallback("packed rows and letter columns", reason, "each row becomes its own batch entry")
        elif fp.shared_prefix:
            fp.shared_prefix = False
            self.fallback("continuing the shared prefix", reason, "each prompt's prefix is computed in full")
        elif self.host.backend.cached:
            self.fallback("the key/value cache", reason, "every continuation re-runs the prompt prefix")
            return "cache"
        else:
            return None
        return "shortcut"


def branching_pair(d_vocab: int, row: Sequence[int]) -> list[list[int]]:
    """``row`` and a second row that shares its first token and then differs (a packed group's
    rows share that token): what the packing and skipping checks run."""
    row = [int(t) for t in row]
    alt = [row[0], (row[1] + 1) % d_vocab, *row[2:]] if len(row) > 1 else [row[0], row[0]]
    return [row, alt]


__all__ = ["CHECKED", "FastPaths", "ShortcutChecks", "branching_pair"]
