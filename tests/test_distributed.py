"""Multi-process identification (``identify_distributed``, gloo on CPU, 2 ranks launched with
``torchrun``) gives the result of single-process ``identify``.

Run as a script under torchrun this file is the worker: every rank builds the same tiny random
``boot_native`` model from a fixed seed, scores its strided shard of the items, and rank 0 saves
the result of each method.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.distributed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
METHODS = ("ig", "grad_x_act", "qr_neuron")  # a baseline reduces over the ranks like the method
OPTIONS = dict(k=8, steps=3, n_proxies=2, batch_size=3, progress=False)


def _task():
    from helpers import token_task

    return token_task(12)  # 11 scored items: shards of 6 and 5, each over several batches


def worker(out: str) -> None:
    """One rank: init from torchrun's environment, identify each method, rank 0 saves."""
    torch.set_num_threads(1)
    from helpers import has_bridge, make_model

    from tl_neuronllm.pipeline.distributed import identify_distributed, init_distributed

    rank, world, device = init_distributed("gloo")
    assert world == 2 and device.type == "cpu"
    model = make_model("native" if has_bridge() else "hooked", gated=True, seed=0)
    task, fmt = _task()
    for method in METHODS:
        res = identify_distributed(model, task, token_format=fmt, method=method, save_to=Path(out) / method, **OPTIONS)
        assert (res is None) == (rank != 0)
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(__file__).resolve()),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_equal_one_process(distributed_results, method):
    from helpers import has_bridge, make_model

    from tl_neuronllm import NeuronResult, identify

    model = make_model("native" if has_bridge() else "hooked", gated=True, seed=0)
    task, fmt = _task()
    single = identify(model, task, token_format=fmt, method=method, **OPTIONS)
    multi = NeuronResult.load(distributed_results / method)
    assert multi.stats["world_size"] == 2
    assert torch.allclose(multi.scores, single.scores, rtol=1e-5, atol=1e-7 * float(single.scores.abs().max()))
    for name, t in single.state.tensors().items():
        m = multi.state.tensors()[name]
        if t.is_floating_point():
            assert torch.allclose(m, t, rtol=1e-5, atol=1e-9 * float(t.abs().max() + 1)), name
        else:
            assert torch.equal(m, t), name
    assert [(n.layer, n.neuron) for n in multi.good] == [(n.layer, n.neuron) for n in single.good]
    assert [(n.layer, n.neuron) for n in multi.bad] == [(n.layer, n.neuron) for n in single.bad]
    assert torch.allclose(multi.act_mean, single.act_mean, rtol=1e-5, atol=1e-7)
    for key in ("accuracy", "consistent_accuracy", "gold_prob", "n_queries"):
        assert multi.stats[key] == pytest.approx(single.stats[key], rel=1e-5), key
    assert multi.config["task"]["item_ids"] == single.config["task"]["item_ids"]


def test_shards_are_strided_and_disjoint():
    from tl_neuronllm.pipeline.distributed import shard_indices

    shards = [shard_indices(11, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert sorted(i for s in shards for i in s) == list(range(11))


def test_requires_an_initialised_process_group():
    from helpers import has_bridge, make_model

    from tl_neuronllm.pipeline.distributed import identify_distributed

    if torch.distributed.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    task, fmt = _task()
    with pytest.raises(RuntimeError, match="init_distributed"):
        identify_distributed(make_model("native" if has_bridge() else "hooked", True), task, token_format=fmt)


if __name__ == "__main__":
    worker(sys.argv[1])
