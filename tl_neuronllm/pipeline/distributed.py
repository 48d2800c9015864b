"""``identify`` over many processes / GPUs with ``torch.distributed``.

Every rank runs the same script (launch with ``torchrun``), holds its own copy of the model and
scores a strided shard of the items (rank ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...``).
The method's score (and every baseline's) is a streaming reduction (a :class:`~tl_neuronllm.scoring.reducers.Reducer`:
sums of per-item terms and membership counts, all additive), so the shards combine exactly: every tensor
of the reducer's state, the activation sum and the tally of the model's answers (for the identification
statistics) is all-reduced with ``SUM``, and rank 0 builds the same :class:`~tl_neuronllm.result.neuron_result.NeuronResult`
a single process would (equal to float tolerance: only the order of float64 additions differs).
Demonstrations, permutations and tokenization are deterministic, so every rank renders the same queries
without communication.

Launch on one machine with 4 GPUs (each rank puts the model on ``cuda:LOCAL_RANK``)::

    torchrun --nproc_per_node 4 my_script.py

where ``my_script.py`` does::

    from tl_neuronllm.pipeline.distributed import identify_distributed, init_distributed
    rank, world, device = init_distributed()          # NCCL on GPUs, gloo on CPU
    model = load_my_model().to(device)
    result = identify_distributed(model, task, k=100, save_to="neurons/")   # None on ranks > 0

Several machines: ``torchrun --nnodes N --node_rank i --nproc_per_node G --rdzv_backend c10d
--rdzv_endpoint HOST:PORT my_script.py``. CPU-only: ``torchrun --nproc_per_node 2`` uses gloo.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from tl_neuronllm.config.identify import IdentifyConfig
from tl_neuronllm.data.tasks import Item, Task
from tl_neuronllm.model.answers import AnswerTally
from tl_neuronllm.model.protocol import HookedModel
from tl_neuronllm.model.state import preserved_model_state
from tl_neuronllm.pipeline.identify import finish_result, ready_adapter, run_fingerprint, score_resumable
from tl_neuronllm.pipeline.prepare import LazyQueries, prepare, require_autograd
from tl_neuronllm.result.neuron_result import NeuronResult
from tl_neuronllm.scoring.ace import ScoringConfig
from tl_neuronllm.scoring.reducers import Reducer
from tl_neuronllm.validate import check_count_or_fraction


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group set up by ``torchrun`` (its environment variables) if not joined yet.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default NCCL when CUDA is available, else gloo.

    Returns:
        ``(rank, world_size, device)``: ``cuda:LOCAL_RANK`` with CUDA (made the current device),
        else CPU.
    """
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RuntimeError(
                "torch.distributed is not initialised and RANK / WORLD_SIZE are not set: "
                "launch with torchrun (e.g. torchrun --nproc_per_node 2 script.py)"
            )
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The items of a rank: strided, ``rank, rank + world_size, ...``."""
    return list(range(rank, n, world_size))


def _comm_device(group: Any) -> torch.device:
    """Where collectives need their tensors (the current CUDA device for NCCL)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensors: Sequence[Tensor], group: Any = None) -> list[Tensor]:
    """Sum each CPU tensor over the ranks (dtype kept; one collective per dtype); returns new CPU tensors."""
    dev = _comm_device(group)
    out: list[Tensor] = list(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in idx]).to(dev)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat = flat.cpu()
        off = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[off : off + n].view(tensors[i].shape).clone()
            off += n
    return out


def reduce_state(reducer: Reducer, act_sum: Tensor, group: Any = None) -> tuple[Reducer, Tensor]:
    """All-reduce (sum) a shard's reducer state and activation sum."""
    t = reducer.tensors()
    names = list(t)
    summed = all_reduce_sum([t[n] for n in names] + [act_sum], group)
    scoring = getattr(reducer, "scoring", ScoringConfig())
    return type(reducer).from_tensors(dict(zip(names, summed[:-1])), scoring), summed[-1]


def identify_distributed(
    model: HookedModel,
    task: Task,
    *,
    k: int | float = 100,
    demos: Task | Sequence[Item] | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    save_to: str | Path | None = None,
    group: Any = None,
    config: IdentifyConfig | None = None,
    preset: str | None = None,
    **options: Any,
) -> NeuronResult | None:
    """:func:`tl_neuronllm.identify` with the items sharded over the ranks of a process group.

    Call it on every rank with the same arguments (and a model with the same weights). The options
    are :func:`~tl_neuronllm.identify`'s (``method``, ``steps``, ``mode``, ...; baselines too).

    Args:
        model: This rank's copy of the model (on this rank's device).
        task: All items (every rank gets the same task; each scores its own shard).
        k: Size of the good and bad sets.
        demos: Demonstration items (as in ``identify``).
        progress: Progress bar on rank 0.
        checkpoint: A directory for periodic snapshots: each rank keeps its own under
            ``rank{r}-of-{W}/``; rerunning with the same arguments and world size resumes.
        checkpoint_every: Snapshot every this many item batches.
        save_to: Rank 0 saves the result there (:meth:`NeuronResult.save`).
        group: Process group (default: the world).
        config, preset, **options: As for ``identify``.

    Returns:
        The :class:`NeuronResult` on rank 0 (the same as one process would return, to float
        tolerance), ``None`` on the other ranks.

    Raises:
        RuntimeError: if ``torch.distributed`` is not initialised (see :func:`init_distributed`).
    """
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised; call init_distributed() under torchrun first")
    cfg = IdentifyConfig.from_options(config, preset=preset, **options)
    k = check_count_or_fraction("k", k)
    require_autograd("identify_distributed")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    t0 = time.perf_counter()
    prep = prepare(model, task, cfg, demos=demos)  # tokenizer only: errors before any model time
    mine = range(rank, len(prep.queries), world)  # strided, as shard_indices
    shard = prep.queries.subset(mine) if isinstance(prep.queries, LazyQueries) else [prep.queries[i] for i in mine]
    with preserved_model_state(model):
        ready_adapter(prep, cfg, shard)
        reducer, act_sum, tally = score_resumable(
            prep.adapter,
            shard,
            cfg,
            checkpoint=None if checkpoint is None else Path(checkpoint) / f"rank{rank}-of-{world}",
            checkpoint_every=checkpoint_every,
            fingerprint={} if checkpoint is None else run_fingerprint(prep, mine, shard=[rank, world]),
            progress=progress and rank == 0,
            item_ids=[prep.item_ids[i] for i in mine],
        )
    reducer, act_sum = reduce_state(reducer, act_sum, group)
    tally = AnswerTally.from_tensor(all_reduce_sum([tally.to_tensor()], group)[0])
    if rank != 0:
        return None
    result = finish_result(prep, cfg, k, reducer, act_sum, tally, time.perf_counter() - t0, extra={"world_size": world})
    if save_to is not None:
        result.save(save_to)
    return result
