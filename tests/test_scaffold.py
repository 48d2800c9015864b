"""The test scaffolding of tests/_scaffold.py: the word-level tokenizer, the CLI's tiny model and synthetic task
(registered by conftest.py), and the deprecated alias ``tl_neuronllm.studies.testbed.word_tokenizer``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _scaffold
import pytest
import torch

from tl_neuronllm.cli import app as cli

ROOT = Path(__file__).resolve().parents[1]


def test_word_tokenizer_ids_and_its_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TL_NEURONLLM_CACHE", str(tmp_path))
    tok = _scaffold.word_tokenizer(["cat", "dog", "cat"])
    assert tok("cat dog").input_ids == [2, 3, 4]  # [BOS] prepended; [PAD] 0, [UNK] 1, [BOS] 2 in front
    assert tok("cow cat").input_ids == [2, 1, 3]
    assert (tok.pad_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 2, 1)
    folders = sorted(p.name for p in (tmp_path / "tokenizers").iterdir())
    assert len(folders) == 1 and folders[0].startswith("word-")  # no temporary folder left behind
    again = _scaffold.word_tokenizer(["cat", "dog"])  # the same vocabulary: the same folder
    assert again.name_or_path == tok.name_or_path and again("dog").input_ids == [2, 4]


def test_tiny_model_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    a, b = _scaffold.tiny_model(), _scaffold.tiny_model()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not a.training and (a.cfg.n_layers, a.cfg.d_mlp, a.cfg.d_vocab) == (2, 64, 100)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_cli_knows_the_tiny_model_and_task_only_when_registered(monkeypatch):
    task = cli.load_task("synthetic")
    assert task.name == "synthetic" and len(task) == 60 and task.is_tokens
    assert task.items[5].to_record() == {
        "id": "5",
        "question": [15, 45],
        "options": [[50], [62], [70], [81]],
        "answer": 1,
    }
    assert isinstance(cli.load_model("tiny"), type(_scaffold.tiny_model()))
    with pytest.raises(
        SystemExit, match=r"unknown model 'tinny'; did you mean 'tiny'\? \(known: smollm2, tiny\b.*smollm2-letter"
    ):
        cli.load_model("tinny")
    monkeypatch.setattr(cli, "_TASKS", dict(cli._TASKS))
    cli.register_task("two", lambda cache: task.subset([0, 1], name=f"two from {cache}"))
    assert cli.load_task("two", cache="c").name == "two from c"
    # the package itself registers no testing model or task
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = "from tl_neuronllm.cli import app as cli; print(sorted(cli._MODELS), sorted(cli._TASKS))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "['smollm2'] []", r.stderr
