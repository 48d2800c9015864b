"""Test scaffolding that the package does not ship: the word-level tokenizer of the tiny text models and the
CLI's hidden tiny testing model (``--model tiny``) with its synthetic token task (``--task synthetic``).

``conftest.py`` calls :func:`register_cli` once per session, so ``cli.main([... "--model", "tiny", "--task",
"synthetic" ...])`` works in-process; :data:`RUN_CLI` runs ``python -m tl_neuronllm`` in a subprocess with
the same registration (``python -c RUN_CLI args...``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TINY_MODEL = "tiny"
TINY_TASK = "synthetic"

#: ``python -c RUN_CLI args...`` is ``python -m tl_neuronllm args...`` with the tiny model and task registered.
_TESTS = str(Path(__file__).resolve().parent)
RUN_CLI = (
    f"import runpy, sys; sys.path.insert(0, {_TESTS!r}); import _scaffold; _scaffold.register_cli(); "
    "runpy.run_module('tl_neuronllm', run_name='__main__', alter_sys=True)"
)


def word_tokenizer(words: Sequence[str]) -> Any:
    """An offline word-level Hugging Face tokenizer over ``words`` (whitespace split, ``[BOS]`` prepended).

    For tiny random HF models wrapped with ``TransformerBridge.boot_transformers``: ``[PAD]``,
    ``[UNK]`` and ``[BOS]`` are added in front when missing. It is saved and reloaded once, because
    TransformerLens rebuilds tokenizers from their ``name_or_path``: the folder is kept under the
    package cache (``cache_dir()/tokenizers/word-<hash of the vocabulary>``), never in a temporary
    folder left behind.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from tl_neuronllm.data.wheels import cache_dir

    vocab = [w for w in ("[PAD]", "[UNK]", "[BOS]") if w not in words] + [
        w for i, w in enumerate(words) if w not in words[:i]
    ]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", vocab.index("[BOS]"))])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="[BOS]", unk_token="[UNK]", pad_token="[PAD]", add_bos_token=True
    )
    # saved under the package cache (keyed by the vocabulary), not a temporary folder left behind in /tmp:
    # TransformerLens may reload the tokenizer from its name_or_path, so the folder must outlive this call
    key = hashlib.sha1("\n".join(vocab).encode("utf-8")).hexdigest()[:16]
    d = cache_dir() / "tokenizers" / f"word-{key}"
    if not (d / "tokenizer.json").is_file():
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".word-{key}-", dir=d.parent))
        try:
            tok.save_pretrained(str(tmp))
            try:
                os.replace(tmp, d)
            except OSError:  # another process saved it first
                pass
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return PreTrainedTokenizerFast.from_pretrained(str(d))


def tiny_model() -> Any:
    """The CLI's tiny testing model: a seeded random ``boot_native`` model (the global RNG is left as it was)."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(1234)
        model = TransformerBridge.boot_native(
            dict(d_model=32, d_head=8, n_heads=4, n_layers=2, n_ctx=128, d_vocab=100, d_mlp=64, act_fn="gelu")
        )
    finally:
        torch.random.set_rng_state(state)
    model.eval()
    return model


def tiny_task_and_format() -> tuple[Any, Any]:
    """The synthetic token task of the tiny model (60 items) and its token format."""
    from tl_neuronllm.data.tasks import Task
    from tl_neuronllm.prompts.proxies import TokenFormat

    recs = [
        {
            "question": [10 + i % 20, 40 + i % 7],
            "options": [[50 + i % 5], [60 + i % 3], [70], [80 + i % 2]],
            "answer": i % 4,
        }
        for i in range(60)
    ]
    fmt = TokenFormat(
        letters=(1, 2, 3, 4), bos=0, question_prefix=(5,), option_sep=(6,), answer_prefix=(7,), demo_sep=(8,)
    )
    return Task.from_records(recs, name="synthetic"), fmt


def register_cli() -> None:
    """Make ``--model tiny`` and ``--task synthetic`` known to the ``tl-neuronllm`` command of this process."""
    from tl_neuronllm.cli import app as cli

    cli.register_model(TINY_MODEL, lambda cache: tiny_model(), token_format=tiny_task_and_format()[1])
    cli.register_task(TINY_TASK, lambda cache: tiny_task_and_format()[0])


def tiny_cli_args(steps: int = 2) -> list[str]:
    """The CLI options of a short run on the tiny model and the synthetic task (letter mode)."""
    return (
        "--model tiny --task synthetic --mode letter --no-progress --n-identify 12 --n-heldout 16 --k 6 "
        f"--steps {steps} --threads 1"
    ).split()
