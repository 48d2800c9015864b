"""Testbed training: boot a ``TransformerBridge.boot_native`` model and train it on the identify prompt format.

AdamW on the training distribution of :class:`~tl_neuronllm.studies.testbed.data.Sampler` (fresh distractors,
option order and demonstrations per prompt), constant learning rate after a warm-up, until the model agrees
with the training distribution's most likely answer on ``target_accuracy`` of a fixed probe batch (checked
every ``check_every`` steps) or ``steps`` run out. Everything is seeded, so a config trains to the same
weights on a given machine and library versions.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tl_neuronllm.studies.testbed.config import TestbedConfig
from tl_neuronllm.studies.testbed.data import Facts, Sampler, Vocab, make_facts, prompt_len, vocab_of

__all__ = ["train_testbed"]


def model_dict(cfg: TestbedConfig, vocab: Vocab) -> dict[str, Any]:
    n_ctx = max(64, prompt_len(cfg, max(cfg.train_shots) + 1))
    return dict(
        d_model=cfg.d_model,
        d_head=cfg.d_model // cfg.n_heads,
        n_heads=cfg.n_heads,
        n_layers=cfg.n_layers,
        n_ctx=n_ctx,
        d_vocab=vocab.d_vocab,
        d_mlp=cfg.d_mlp,
        act_fn=cfg.act_fn,
        seed=cfg.seed,
    )


def boot_model(cfg: TestbedConfig, vocab: Vocab) -> Any:
    from transformer_lens.model_bridge import TransformerBridge  # never at module top level

    # boot_native is attached to TransformerBridge with setattr by TransformerLens (model_bridge.sources.native)
    return TransformerBridge.boot_native(model_dict(cfg, vocab))  # pyright: ignore[reportAttributeAccessIssue]


def train_testbed(
    cfg: TestbedConfig, *, progress: bool = False, num_threads: int | None = 1
) -> tuple[Any, dict[str, Any]]:
    """Train a testbed model from scratch (no cache).

    Args:
        cfg: The testbed.
        progress: Show a progress bar.
        num_threads: Torch CPU threads while training (restored afterwards). One thread suits these tiny
            matrices, does not oversubscribe cores shared with other processes and makes the result
            independent of the machine's core count. ``None`` keeps the current setting.

    Returns:
        ``(model, stats)``; the model is in eval mode.
    """
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(cfg, progress)
    finally:
        torch.set_num_threads(old_threads)


def _probe(cfg: TestbedConfig, vocab: Vocab, facts: Facts, n: int = 512) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """A fixed batch of fresh training-format prompts: tokens, trained gold letters, Bayes letters.

    The Bayes letter is the training distribution's most likely target (see :meth:`Sampler.batch`).
    """
    shots = 1 if 1 in cfg.train_shots else cfg.train_shots[0]
    toks, _, gold, bayes, _ = Sampler(cfg, vocab, facts, np.random.default_rng([cfg.seed, 4])).batch(n, shots)
    return torch.as_tensor(toks), gold, bayes


def _train(cfg: TestbedConfig, progress: bool) -> tuple[Any, dict[str, Any]]:
    vocab = vocab_of(cfg)
    facts = make_facts(cfg, vocab)
    model = boot_model(cfg, vocab)
    # train the wrapped native module when the Bridge exposes it (same parameters, no hook overhead)
    net = getattr(model, "original_model", None) or model
    rng = np.random.default_rng([cfg.seed, 3])
    sampler = Sampler(cfg, vocab, facts, rng)
    probe_toks, probe_gold, probe_bayes = _probe(cfg, vocab, facts)
    letter_ids = torch.tensor(vocab.letters[: cfg.n_options])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = 50
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))

    def probe() -> tuple[float, float]:
        net.eval()
        with torch.no_grad():
            pred = net(probe_toks)[:, -1][:, letter_ids].argmax(-1).numpy()
        net.train()
        return float(np.mean(pred == probe_gold)), float(np.mean(pred == probe_bayes))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc=f"train testbed {cfg.name}", unit="step")
    t0 = time.perf_counter()
    net.train()
    losses: list[float] = []
    history: list[tuple[int, float]] = []
    step = 0
    while step < cfg.steps:
        shots = cfg.train_shots[int(rng.integers(0, len(cfg.train_shots)))]
        toks, target, _, _, _ = sampler.batch(cfg.batch_size, shots)
        logits = net(torch.as_tensor(toks))[:, -1]
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.as_tensor(target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        step += 1
        if bar is not None:
            bar.update(1)
        if step % cfg.check_every == 0:
            _, agree = probe()
            history.append((step, agree))
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(losses[-cfg.check_every :]):.3f}", probe=f"{agree:.3f}")
            if agree >= cfg.target_accuracy:
                break
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    model.eval()
    net.eval()
    acc, agree = probe()
    tail = losses[-cfg.check_every :]
    stats = {
        "train_seconds": seconds,
        "steps": step,
        "converged": agree >= cfg.target_accuracy,
        "final_loss": float(np.mean(tail)),
        "train_accuracy": acc,
        "bayes_agreement": agree,
        "probe_history": history,
        "n_params": int(sum(p.numel() for p in model.parameters())),
    }
    return model, stats
