"""Checkpoint / resume of ``identify(..., checkpoint=dir)``.

A run killed with SIGKILL after its checkpoint advanced, or interrupted by an exception, and rerun
with the same arguments, ends with the result of an uninterrupted run, and only scores the items
the checkpoint had not covered. Other arguments against an existing checkpoint raise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import has_bridge, make_model, token_task

import tl_neuronllm.pipeline.identify as pl
from tl_neuronllm import identify

HERE = Path(__file__).resolve().parent
KIND = "native" if has_bridge() else "hooked"
N_ITEMS = 12  # 11 scored (one is the demo), one item per batch
OPTIONS = dict(k=8, steps=2, n_proxies=2, batch_size=1, checkpoint_every=1, progress=False)


def run(checkpoint=None, **overrides):
    task, fmt = token_task(N_ITEMS)
    return identify(
        make_model(KIND, gated=True, seed=0), task, token_format=fmt, checkpoint=checkpoint, **{**OPTIONS, **overrides}
    )


def assert_same(a, b):
    assert torch.allclose(a.scores, b.scores, rtol=1e-6, atol=1e-9)
    for name, t in b.state.tensors().items():
        m = a.state.tensors()[name]
        assert torch.allclose(m.double(), t.double(), rtol=1e-6, atol=1e-12), name
    assert [tuple(n)[:2] for n in a.good] == [tuple(n)[:2] for n in b.good]
    assert [tuple(n)[:2] for n in a.bad] == [tuple(n)[:2] for n in b.bad]
    assert torch.allclose(a.act_mean, b.act_mean, rtol=1e-6, atol=1e-9)
    for key in ("accuracy", "consistent_accuracy", "gold_prob", "n_queries"):
        assert a.stats[key] == pytest.approx(b.stats[key]), key


@pytest.fixture(scope="module")
def reference():
    return run()


def count_batches(monkeypatch):
    calls = []
    orig = pl.attribute_item_batch

    def counted(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(pl, "attribute_item_batch", counted)
    return calls


def next_item(ckpt: Path) -> int:
    from safetensors import safe_open

    try:
        with safe_open(str(ckpt / "checkpoint.safetensors"), framework="pt") as fh:
            return int(fh.metadata()["next_item"])
    except Exception:  # not written yet, or being replaced
        return 0


CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    import tl_neuronllm.pipeline.identify as pl
    import test_resume as tr
    save = pl.Checkpoint.save
    def slow_save(self, *a, **k):  # give the parent time to kill between snapshots
        save(self, *a, **k)
        time.sleep(0.25)
    pl.Checkpoint.save = slow_save
    tr.run(checkpoint=sys.argv[1])
    print("finished")
""")


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_the_same_result(tmp_path, reference, monkeypatch):
    ckpt = tmp_path / "ckpt"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ckpt)],
        env=env,
        cwd=str(HERE),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while next_item(ckpt) < 3:
            assert proc.poll() is None, f"child ended before the checkpoint advanced: {proc.communicate()}"
            assert time.monotonic() < deadline, "checkpoint did not advance in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = next_item(ckpt)
    assert 3 <= done < N_ITEMS - 1, done  # killed mid-run
    calls = count_batches(monkeypatch)
    resumed = run(checkpoint=ckpt)
    assert len(calls) == (N_ITEMS - 1) - done  # only the items after the snapshot were scored
    assert_same(resumed, reference)


def test_exception_mid_run_then_rerun_resumes(tmp_path, reference, monkeypatch):
    ckpt = tmp_path / "ckpt"
    orig = pl.attribute_item_batch
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a user's Ctrl-C would
        return orig(*a, **k)

    monkeypatch.setattr(pl, "attribute_item_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=ckpt)
    assert next_item(ckpt) == 3
    monkeypatch.setattr(pl, "attribute_item_batch", orig)
    calls = count_batches(monkeypatch)
    resumed = run(checkpoint=ckpt)
    assert len(calls) == N_ITEMS - 1 - 3
    assert_same(resumed, reference)
    # a finished checkpoint: a rerun scores nothing and returns the same result
    calls.clear()
    assert_same(run(checkpoint=ckpt), reference)
    assert not calls


@pytest.mark.parametrize("change", [dict(steps=3), dict(n_proxies=3), dict(method="grad_x_act"), "task"])
def test_other_arguments_against_a_checkpoint_raise(tmp_path, monkeypatch, change):
    ckpt = tmp_path / "ckpt"
    orig = pl.attribute_item_batch
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("stop")
        return orig(*a, **k)

    monkeypatch.setattr(pl, "attribute_item_batch", failing)
    with pytest.raises(RuntimeError, match="stop"):
        run(checkpoint=ckpt)
    monkeypatch.setattr(pl, "attribute_item_batch", orig)
    with pytest.raises(ValueError, match="other arguments"):
        if change == "task":
            task, fmt = token_task(N_ITEMS, seed=1)
            identify(make_model(KIND, gated=True, seed=0), task, token_format=fmt, checkpoint=ckpt, **OPTIONS)
        else:
            run(checkpoint=ckpt, **change)


CHILD_TORN = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    import tl_neuronllm.pipeline.checkpoint as ck
    import test_resume as tr
    real, n = os.replace, [0]
    def replace(src, dst):  # die right after the 3rd snapshot lands (state and next item are one file)
        real(src, dst)
        if str(dst).endswith("checkpoint.safetensors"):
            n[0] += 1
            if n[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
    ck.os.replace = replace
    tr.run(checkpoint=sys.argv[1])
""")


@pytest.mark.slow
def test_sigkill_between_the_two_checkpoint_files(tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_TORN, str(ckpt)],
        env=env,
        cwd=str(HERE),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert_same(run(checkpoint=ckpt), reference)
