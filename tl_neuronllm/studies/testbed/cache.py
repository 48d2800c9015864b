"""The testbed cache: trained models as ``<cache>/testbed/<name>-<hash of config>.safetensors`` plus a ``.json``
(config, training stats, library versions), written atomically so that concurrent processes may share it."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tl_neuronllm.data.wheels import cache_dir
from tl_neuronllm.provenance import versions
from tl_neuronllm.studies.testbed.config import FORMAT_VERSION, TestbedConfig, config_of
from tl_neuronllm.studies.testbed.data import Facts, Vocab, make_facts, make_task_from_facts, vocab_of
from tl_neuronllm.studies.testbed.trained import Testbed
from tl_neuronllm.studies.testbed.training import boot_model, train_testbed

__all__ = ["load_testbed", "testbed_path"]


def testbed_path(cfg: TestbedConfig, cache: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/testbed/<name>-<hash>.safetensors`` of a config (the ``.json`` lies beside it)."""
    return cache_dir(cache) / "testbed" / f"{cfg.name}-{cfg.digest()}.safetensors"


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_testbed(
    name: str | TestbedConfig = "facts-small",
    *,
    cache: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    save: bool = True,
    progress: bool = False,
) -> Testbed:
    """A trained testbed: read from the cache, or trained (and cached) on first use.

    Args:
        name: A key of :data:`TESTBEDS` or a :class:`TestbedConfig`.
        cache: Cache folder (default :func:`tl_neuronllm.data.wheels.cache_dir`).
        retrain: Train even if a cached copy exists (and overwrite it).
        save: Write the trained model to the cache.
        progress: Show a training progress bar.

    Returns:
        A :class:`Testbed` whose model is in eval mode.

    Raises:
        KeyError: for an unknown name.
    """
    cfg = config_of(name)
    vocab = vocab_of(cfg)
    facts = make_facts(cfg, vocab)
    path = testbed_path(cfg, cache)
    loaded = None if retrain else _read_cached(cfg, vocab, path)
    model, stats = loaded if loaded is not None else train_testbed(cfg, progress=progress)
    model.eval()
    tb = _testbed(cfg, vocab, facts, model, stats, path if save else None)
    if "heldout_accuracy" not in tb.stats:
        acc = tb.accuracy()
        tb.stats.update(
            heldout_accuracy=acc["accuracy"],
            heldout_consistent_accuracy=acc["consistent_accuracy"],
            heldout_gold_prob=acc["gold_prob"],
        )
        if save:
            _write_cached(cfg, model, tb.stats, path)
    return tb


def _testbed(
    cfg: TestbedConfig, vocab: Vocab, facts: Facts, model: Any, stats: dict[str, Any], path: Path | None
) -> Testbed:
    return Testbed(
        cfg,
        model,
        make_task_from_facts(cfg, vocab, facts),
        vocab.token_format(),
        vocab,
        stats or {},
        frozenset(facts.ids[i] for i in np.flatnonzero(facts.biased)),
        frozenset(facts.ids[i] for i in np.flatnonzero(facts.train_answer != facts.true_answer)),
        path,
    )


def _read_cached(cfg: TestbedConfig, vocab: Vocab, path: Path) -> tuple[Any, dict[str, Any]] | None:
    """``(model, stats)`` from the cache, or ``None`` when absent, unreadable or stale."""
    from safetensors.torch import load_file

    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("config") == cfg.to_dict() and meta.get("format_version") == FORMAT_VERSION:
            model = boot_model(cfg, vocab)
            model.load_state_dict(load_file(str(path)))
            return model, dict(meta["stats"])
    except (OSError, ValueError, RuntimeError, KeyError):
        pass  # unreadable or stale: train again
    return None


def _write_cached(cfg: TestbedConfig, model: Any, stats: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic_write(path, lambda p: save_file(sd, str(p)))
    meta = {"format_version": FORMAT_VERSION, "config": cfg.to_dict(), "stats": stats, "versions": versions()}
    _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta, indent=2)))
