"""Checkpoints of ``identify``: periodic snapshots of the streaming state, and a cheap fingerprint of
a model's weights that ties a snapshot to its model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from tl_neuronllm.model.answers import AnswerTally
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.result.files import ResultFileError


def model_fingerprint(model: HookedModel, *, n_tensors: int = 4, n_values: int = 4096) -> str:
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
                    # integer spacing: a float32 linspace rounds the last index past the end for tensors over 2**24
                    idx = torch.arange(n_values, device=flat.device) * (flat.numel() - 1) // max(n_values - 1, 1)
                    flat = flat[idx]
                h.update(flat.float().cpu().numpy().tobytes())
    return h.hexdigest()


_PARTS = {
    "config": "options",
    "model": "model shape",
    "weights": "model weights",
    "method_code": "the attribution method's code (re-registered under the same name)",
    "items": "scored items",
    "demos": "demonstrations",
}


def _differing(saved: str | None, current: str) -> str:
    """``": differs in ..."`` naming the parts of two run fingerprints (JSON) that differ, or ``""``."""
    try:
        a, b = json.loads(saved or ""), json.loads(current)
    except (json.JSONDecodeError, TypeError):
        return ""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ""
    diff = [_PARTS.get(str(k), str(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return f": it differs in {', '.join(diff)}" if diff else ""


class Checkpoint:
    """Periodic snapshots of the streaming state so an interrupted run can resume.

    One file, ``checkpoint.safetensors``, replaced atomically: the reducer's state, the activation sum
    and the tally of the model's answers (:class:`~tl_neuronllm.model.answers.AnswerTally`) as tensors, all
    of a size independent of the number of items, and the next item and a fingerprint of the
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

    def load(self) -> tuple[int, dict[str, Tensor], Tensor, AnswerTally] | None:
        """``(next_item, state tensors, act_sum, tally)`` of the last snapshot, or ``None`` when there is none.

        Raises:
            ResultFileError: for an unreadable file; ValueError: for a snapshot of other arguments.
        """
        ten_f = self.path / self.FILE
        if not ten_f.exists():
            return None
        try:
            with safe_open(str(ten_f), framework="pt") as fh:
                meta = fh.metadata() or {}
            t = load_file(str(ten_f))
            state = {k[6:]: v for k, v in t.items() if k.startswith("state.")}
            tally = AnswerTally.from_tensor(t["answers"])
            next_item = int(meta["next_item"])
        except Exception as e:  # safetensors' own error types for truncated / foreign files, missing keys
            raise ResultFileError(
                f"checkpoint {ten_f} cannot be read ({type(e).__name__}: {e}); it is truncated or "
                "not a tl_neuronllm checkpoint: delete it to start the run afresh"
            ) from None
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"checkpoint {self.path} was written by a run with other arguments or another model (weights, task, "
                f"options or the attribution method's code){_differing(meta.get('fingerprint'), self.fingerprint)}; "
                "delete it or choose another checkpoint directory"
            )
        return next_item, state, t["act_sum"], tally

    def save(
        self,
        next_item: int,
        state: dict[str, Tensor],
        act_sum: Tensor,
        tally: AnswerTally,
        force: bool = False,
    ) -> None:
        """Snapshot (every ``every``-th call, or when ``force``) the reducer's state tensors, the activation
        sum and the answer tally of the items before ``next_item``."""
        self._n += 1
        if not force and self._n % self.every:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        tensors = {f"state.{k}": v for k, v in state.items()}
        tensors.update(act_sum=act_sum, answers=tally.to_tensor())
        tmp = self.path / (self.FILE + ".tmp")
        save_file(tensors, str(tmp), metadata={"next_item": str(next_item), "fingerprint": self.fingerprint})
        os.replace(tmp, self.path / self.FILE)


__all__ = ["Checkpoint", "model_fingerprint"]
