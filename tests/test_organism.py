"""The letter-format organism: the shipped LoRA adapter, its merge, and what it does to SmolLM2's letter habit.

What it can and cannot do is measured in ``benchmarks/results/organism/organism.json`` (docs/organism.md): it removes the
base model's "always A" habit but its letter accuracy on held-out items stays at chance, so the real-model test
asserts the habit, not an accuracy it does not have.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tl_neuronllm.data.smollm2 import LETTER_ADAPTER, LORA_FORMAT, merge_lora
from tl_neuronllm.errors import ResultFileError

ROOT = Path(__file__).resolve().parents[1]


def test_the_adapter_is_shipped_small_and_described():
    assert LETTER_ADAPTER.is_file() and LETTER_ADAPTER.stat().st_size <= 20 * 2**20
    rec = json.loads((ROOT / "benchmarks" / "results" / "organism" / "organism.json").read_text())
    for name, row in rec["tasks"].items():
        assert {"letter_accuracy", "cloze_accuracy", "chance", "n", "trained_on"} <= set(row), name
        assert row["n"] >= 200
    assert (ROOT / "organism" / "config.json").is_file() and (ROOT / "scripts" / "train_organism.py").is_file()


def test_merge_lora_adds_scale_b_a_to_each_module(tmp_path):
    lin = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(3, 2, bias=False))
    before = [m.weight.detach().clone() for m in lin]
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, generator=g), torch.randn(3, 2, generator=g)
    save_file(
        {"0.lora_A": a, "0.lora_B": b},
        str(tmp_path / "a.safetensors"),
        metadata={"format": LORA_FORMAT, "scale": "2.0"},
    )
    merge_lora(lin, tmp_path / "a.safetensors")
    assert torch.allclose(lin[0].weight, before[0] + 2.0 * b @ a, atol=1e-6)
    assert torch.equal(lin[1].weight, before[1])  # only the adapted module changes


def test_merge_lora_refuses_other_files(tmp_path):
    lin = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
    save_file({"0.lora_A": torch.zeros(1, 4)}, str(tmp_path / "x.safetensors"), metadata={"format": "other"})
    with pytest.raises(ResultFileError, match="not a tl_neuronllm-lora-v1 adapter"):
        merge_lora(lin, tmp_path / "x.safetensors")
    save_file(
        {"9.lora_A": torch.zeros(1, 4), "9.lora_B": torch.zeros(3, 1)},
        str(tmp_path / "y.safetensors"),
        metadata={"format": LORA_FORMAT, "scale": "1"},
    )
    with pytest.raises(ResultFileError, match="module '9' has no weight"):
        merge_lora(lin, tmp_path / "y.safetensors")


@pytest.mark.real_model
@pytest.mark.slow
def test_the_organism_loses_the_always_a_habit():
    """20 held-out SIQA items (the last of the file, never trained on), every cyclic permutation, 0-shot letter
    prompts: the base answers "A" for at least 90% of them (measured 97-100% on 200 items), the organism for at
    most 70% (measured 44%)."""
    from tl_neuronllm.config.identify import IdentifyConfig
    from tl_neuronllm.data.real_tasks import load_real_task
    from tl_neuronllm.data.smollm2 import load_smollm2
    from tl_neuronllm.model.adapter import ModelAdapter
    from tl_neuronllm.model.answers import predict
    from tl_neuronllm.pipeline.prepare import build_queries

    task = load_real_task("siqa")
    held = task.subset(list(range(len(task) - 20, len(task))), name="siqa-heldout")
    cfg = IdentifyConfig(mode="letter", n_shots=0, n_proxies=3)
    share_a = {}
    for variant in ("base", "letter"):
        ad = ModelAdapter(load_smollm2(variant=variant, progress=False))
        qs = [q for item in build_queries(ad, held, cfg, []) for q in item]
        preds = [int(p.argmax()) for p in predict(ad, qs)]
        share_a[variant] = sum(p == 0 for p in preds) / len(preds)
    assert share_a["base"] >= 0.9, share_a
    assert share_a["letter"] <= 0.7, share_a
