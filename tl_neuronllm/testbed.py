"""Testbeds: small TL-native models that really know a synthetic multiple-choice task.

A testbed is a ``TransformerBridge.boot_native`` model trained from scratch on a synthetic
*token-level* task whose answers can only come from the weights, together with that task as a
:class:`~tl_neuronllm.tasks.Task`. It gives :func:`tl_neuronllm.identify` a ground truth: the
knowledge is in the model, so suppressing the neurons that hold it must hurt, and a random set of
neurons of the same size must hurt much less. ::

    from tl_neuronllm import identify
    from tl_neuronllm.testbed import load_testbed

    tb = load_testbed("facts-small")            # trained once (~30 s), then cached on disk
    ident, heldout, demo = tb.splits(seed=0)
    result = identify(tb.model, ident, demos=demo, token_format=tb.token_format, k=25,
                      z=0.05, ambiguity=None)   # the defaults keep only ~5 neurons here
    base = tb.accuracy(heldout, demo)           # accuracy 1.00
    with result.suppress(tb.model, "good"):
        hurt = tb.accuracy(heldout, demo)       # 0.70; random sets of 25: 0.96 +- 0.04

Task kinds (all facts are generated from the config's seed, so a config names one task exactly):

* ``"facts"``: entity -> attribute. ``n_entities`` entities each have one of ``n_values`` values
  (e.g. 200 entities x 8 colours); the question is ``[REL, e17]``, the options are the gold value
  and ``n_options - 1`` random other values in random order. A pure lookup: the facts must be
  stored in the weights.
* ``"relations"``: two relations over one value pool (``[R0, e]`` and ``[R1, e]``, e.g. "likes"
  and "dislikes" colour), with different values for the two relations of an entity: the answer
  depends on the conjunction of the relation and the entity, not on the entity alone, and the task
  has ``2 * n_entities`` items.

Prompts are exactly what ``identify`` and the evaluation render (:class:`~tl_neuronllm.proxies.Renderer`
with :attr:`Testbed.token_format`)::

    [BOS] ( Q question (letter option)* ANS gold-letter SEP )*shots  Q question (letter option)* ANS

The model is trained on that very format: every training prompt draws fresh distractors, a fresh
option order (so the model must bind letters to option values, not memorise a letter per fact),
and ``train_shots`` random solved demonstration items; the loss is the cross-entropy of the gold
letter over the whole vocabulary at the last position (the site). The model is trained on *all*
facts of the task (they must be known); "held out" refers to the items that neuron identification
does not see (:meth:`Testbed.splits`), never to facts the model has not learned. Evaluation prompts
(the task's fixed distractors, cyclic permutations, a fixed demo item shown in its original option
order) are drawn from the training distribution but are not its exact strings: a training prompt
repeats one given evaluation prompt with probability about ``1 / (n_demos * C(n_values - 1,
n_options - 1) * n_options!)`` per draw (below 1e-5 for the facts testbeds).

Why one layer (the default): the method reads and intervenes on the MLP neurons *at the site*.
In models with two or more layers the facts can be stored in the entity's token embedding and the
letter binding done by attention alone (option positions attend to the entity, the site attends to
the matching option), so site neurons hardly matter. Measured on 64-fact testbeds: zeroing *all*
site MLP neurons of a 3-layer model left accuracy at 0.78-1.0 per layer, and a letter-biased 2-layer
model's bias used no MLP at all. A 1-layer model has nothing after its MLP but the unembedding, so
it must compare the looked-up value with the options inside the site MLP (zeroing it: accuracy
1.0 -> 0.3-0.4). ``"facts-2layer"`` is kept to show the limitation.

Imperfect-by-construction variants (so that *bad* neurons have something to explain):

* ``popular_bias`` (``"facts-lured-*"``): when the *popular value* (value 0) is shown as a
  distractor, a share ``popular_bias`` of training prompts answer with its letter. With
  ``popular_bias > 0.5`` the model picks the popular distractor whenever it is shown (about a third
  of the items) while still ranking the gold value second. Recognising where the popular value sits
  needs the site MLP, so neurons carry the lure and suppressing them can raise held-out accuracy.
* ``letter_bias`` with ``biased_share``: on a seeded share of the items (:attr:`Testbed.biased`), a
  share ``letter_bias`` of training prompts target letter "A" whatever the gold: the "always A"
  behaviour the method is motivated by. It is linear in the entity embedding, and the trained models
  route it around the MLP (measured: zeroing every MLP neuron changed nothing on the biased items),
  so neuron interventions cannot undo it; kept as a negative control.
* ``label_noise``: a seeded share of facts is trained on a wrong value (:attr:`Testbed.corrupted`)
  while the task keeps the true one: confident, item-specific misconceptions.

Training: AdamW on the 1-shot prompt format (``train_shots=(1,)``; mixing 0/1/2 shots roughly
doubled the plateau before letter binding is learned), constant learning rate after a warm-up, until
the model agrees with the training distribution's most likely answer on ``target_accuracy`` of a
fixed probe batch (checked every ``check_every`` steps) or ``steps`` run out; one CPU thread (see
:func:`train_testbed`). Everything is seeded (numpy generator for the data, the model's ``seed`` for
its initialisation), so a config trains to the same weights on a given machine; another CPU or
library version may take a different (equally valid) path. Trained models are cached as
``<cache>/testbed/<name>-<hash of config>.safetensors`` plus a ``.json`` (config, accuracies,
training time), with ``<cache>`` from :func:`tl_neuronllm.hub.cache_dir`; writes are atomic, so
concurrent test processes may share the cache.

How it fails: read :attr:`Testbed.stats` (``converged``, ``heldout_accuracy``) before trusting an
experiment; learning has a plateau of a few hundred steps whose length depends on the seed. The
facts are stored redundantly: suppressing a few percent of the neurons moves accuracy little for any
method, so compare against random sets of the same size, never against zero.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .proxies import TokenFormat
from .tasks import LETTERS, Item, Task

__all__ = [
    "TESTBEDS",
    "Testbed",
    "TestbedConfig",
    "Vocab",
    "load_testbed",
    "make_task",
    "testbed_path",
    "train_testbed",
]

FORMAT_VERSION = 1
Kind = Literal["facts", "relations"]
KINDS = ("facts", "relations")
POPULAR_VALUE = 0  # the value index that popular_bias lures the model to
N_LETTERS = 8  # letter tokens A..H always exist, so n_options <= 8


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestbedConfig:
    """A testbed: task, imperfections, model shape and training recipe (all seeded).

    Attributes:
        name: Name used in cache file names and task names.
        kind: ``"facts"`` (entity -> value) or ``"relations"`` ((relation, entity) -> value).
        n_entities: Number of entities (the task has ``n_entities`` items, twice that for ``"relations"``).
        n_values: Number of attribute values.
        n_options: Options per question (2 to 8, at most ``n_values``).
        letter_bias: Share of the biased items' training prompts whose target is letter "A".
        popular_bias: Share of the biased items' training prompts showing the *popular value*
            (value 0) as a distractor whose target is that distractor's letter.
        biased_share: Share of the facts that are biased (1.0: every item).
        label_noise: Share of the facts trained on a wrong value (the task keeps the true one).
        n_layers, d_model, d_mlp, n_heads, act_fn: Model shape (``boot_native``).
        steps: Maximum training steps.
        target_accuracy: Training stops at the first check where the model's letter agrees with
            the training distribution's most likely answer on this share of a fixed probe batch of
            fresh prompts (the gold letter, or the bias's answer on biased items when the bias
            exceeds 0.5). Stopping depends only on the seeded run, so it is as deterministic as
            fixed steps.
        check_every: Steps between probe checks.
        batch_size: Prompts per step.
        lr: AdamW learning rate (constant after a 50-step linear warm-up).
        weight_decay: AdamW weight decay.
        train_shots: Demonstration counts drawn uniformly per step (default 1, the method's).
        seed: Seed of the facts, the initialisation and the training data.
    """

    __test__ = False  # not a pytest test class despite the name

    name: str = "testbed"
    kind: Kind = "facts"
    n_entities: int = 200
    n_values: int = 8
    n_options: int = 4
    letter_bias: float = 0.0
    popular_bias: float = 0.0
    biased_share: float = 1.0
    label_noise: float = 0.0
    n_layers: int = 1
    d_model: int = 128
    d_mlp: int = 512
    n_heads: int = 8
    act_fn: str = "gelu"
    steps: int = 3000
    target_accuracy: float = 0.99
    check_every: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    train_shots: tuple[int, ...] = (1,)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_shots", tuple(int(s) for s in self.train_shots))
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not 2 <= self.n_options <= N_LETTERS:
            raise ValueError(f"n_options must be in [2, {N_LETTERS}], got {self.n_options}")
        if self.n_values < self.n_options:
            raise ValueError(f"n_values ({self.n_values}) must be >= n_options ({self.n_options})")
        if self.n_entities < 2:
            raise ValueError(f"n_entities must be >= 2, got {self.n_entities}")
        if self.letter_bias > 0 and self.popular_bias > 0:
            raise ValueError("letter_bias and popular_bias cannot both be set; choose one kind of bias")
        for name in ("letter_bias", "popular_bias", "biased_share", "label_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.train_shots or min(self.train_shots) < 0:
            raise ValueError(f"train_shots must be non-empty counts >= 0, got {self.train_shots}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        for name in ("steps", "check_every", "batch_size", "n_layers", "d_mlp"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def n_items(self) -> int:
        return self.n_entities if self.kind == "facts" else 2 * self.n_entities

    @property
    def imperfect(self) -> bool:
        """True when the testbed is imperfect by construction (a bias or label noise)."""
        return ((self.letter_bias > 0 or self.popular_bias > 0) and self.biased_share > 0) or self.label_noise > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train_shots"] = list(self.train_shots)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TestbedConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "train_shots" else v) for k, v in d.items() if k in names})

    def digest(self) -> str:
        """Hash of everything that determines the trained model (the name excluded)."""
        d = self.to_dict()
        d.pop("name")
        d["format_version"] = FORMAT_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


_SMALL_MODEL = dict(d_model=64, d_mlp=128, n_heads=8, n_layers=1, steps=3000)

#: Named testbeds. ``*-small`` ones (64 items, 1 layer, d_model 64, 128 neurons) train in 15-30 s on
#: one CPU core (the test suite uses them); the others (200 entities, d_model 128, 512 neurons) in
#: 1-2 minutes.
TESTBEDS: dict[str, TestbedConfig] = {
    "facts-small": TestbedConfig("facts-small", "facts", n_entities=64, **_SMALL_MODEL),
    "facts-lured-small": TestbedConfig("facts-lured-small", "facts", n_entities=64, popular_bias=0.7, **_SMALL_MODEL),
    "relations-small": TestbedConfig("relations-small", "relations", n_entities=32, n_options=3, **_SMALL_MODEL),
    "facts": TestbedConfig("facts", "facts", n_entities=200, steps=8000),
    "facts-lured": TestbedConfig("facts-lured", "facts", n_entities=200, popular_bias=0.7, steps=8000),
    "facts-biased": TestbedConfig(
        "facts-biased", "facts", n_entities=200, letter_bias=0.7, biased_share=0.5, steps=8000
    ),
    "facts-noisy": TestbedConfig("facts-noisy", "facts", n_entities=200, label_noise=0.2, steps=8000),
    "facts-2layer": TestbedConfig("facts-2layer", "facts", n_entities=200, n_layers=2, steps=8000),
    "relations": TestbedConfig("relations", "relations", n_entities=100, n_options=3, steps=8000),
}


# ------------------------------------------------------------------------------------------------
# vocabulary and facts
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocab:
    """Token ids of a testbed (no tokenizer: every token is an id).

    Layout: ``PAD, BOS, Q, ANS, SEP``, two relation tokens, the letters A..H, the values, the entities.
    """

    n_values: int
    n_entities: int = 0

    PAD = 0
    BOS = 1
    Q = 2
    ANS = 3
    SEP = 4
    REL = 5  # relation tokens REL, REL + 1
    FIRST_LETTER = 7

    @property
    def letters(self) -> tuple[int, ...]:
        return tuple(range(self.FIRST_LETTER, self.FIRST_LETTER + N_LETTERS))

    @property
    def first_value(self) -> int:
        return self.FIRST_LETTER + N_LETTERS

    def value(self, v: int) -> int:
        return self.first_value + int(v)

    def entity(self, e: int) -> int:
        return self.first_value + self.n_values + int(e)

    @property
    def d_vocab(self) -> int:
        return self.first_value + self.n_values + self.n_entities

    def token_format(self) -> TokenFormat:
        return TokenFormat(
            letters=self.letters,
            bos=self.BOS,
            question_prefix=(self.Q,),
            option_sep=(),
            answer_prefix=(self.ANS,),
            demo_sep=(self.SEP,),
        )

    def names(self) -> list[str]:
        """A readable name per token id (for printing prompts)."""
        out = ["<pad>", "<bos>", "Q:", "Answer:", "<sep>", "R0", "R1"] + list(LETTERS[:N_LETTERS])
        out += [f"v{v}" for v in range(self.n_values)] + [f"e{e}" for e in range(self.n_entities)]
        return out


@dataclass(frozen=True)
class _Facts:
    """The facts of a testbed as arrays (index f = item index in the task)."""

    questions: np.ndarray  # [F, qlen] token ids
    true_answer: np.ndarray  # [F] value index
    train_answer: np.ndarray  # [F] value index the model is trained on (differs under label noise)
    biased: np.ndarray  # [F] bool
    ids: tuple[str, ...]


def _vocab(cfg: TestbedConfig) -> Vocab:
    return Vocab(cfg.n_values, cfg.n_entities)


def _make_facts(cfg: TestbedConfig, vocab: Vocab) -> _Facts:
    rng = np.random.default_rng([cfg.seed, 1])
    E = cfg.n_entities
    if cfg.kind == "facts":
        questions = np.array([[vocab.REL, vocab.entity(e)] for e in range(E)], dtype=np.int64)
        true = rng.integers(0, cfg.n_values, size=E)
        ids = tuple(f"e{e}" for e in range(E))
    else:  # relations: R0 and R1 of each entity take different values
        first = rng.integers(0, cfg.n_values, size=E)
        second = (first + rng.integers(1, cfg.n_values, size=E)) % cfg.n_values
        questions = np.array([[vocab.REL + r, vocab.entity(e)] for r in range(2) for e in range(E)], dtype=np.int64)
        true = np.concatenate([first, second])
        ids = tuple(f"R{r}(e{e})" for r in range(2) for e in range(E))
    F = len(ids)
    train = true.copy()
    n_noisy = int(round(cfg.label_noise * F))
    if n_noisy:
        noisy = rng.choice(F, size=n_noisy, replace=False)
        shift = rng.integers(1, cfg.n_values, size=n_noisy)
        train[noisy] = (true[noisy] + shift) % cfg.n_values
    biased = np.zeros(F, dtype=bool)
    n_biased = int(round(cfg.biased_share * F)) if cfg.letter_bias > 0 or cfg.popular_bias > 0 else 0
    if n_biased:
        biased[rng.choice(F, size=n_biased, replace=False)] = True
    return _Facts(questions, true, train, biased, ids)


def _make_task(cfg: TestbedConfig, vocab: Vocab, facts: _Facts) -> Task:
    """The task: fixed seeded distractors and option order per item (gold letter uniform)."""
    rng = np.random.default_rng([cfg.seed, 2])
    items = []
    for f in range(len(facts.ids)):
        gold = int(facts.true_answer[f])
        others = [v for v in range(cfg.n_values) if v != gold]
        distr = [others[i] for i in rng.permutation(len(others))[: cfg.n_options - 1]]
        pos = int(rng.integers(0, cfg.n_options))
        opts = distr[:pos] + [gold] + distr[pos:]
        items.append(
            Item(
                question=tuple(int(t) for t in facts.questions[f]),
                options=tuple((vocab.value(v),) for v in opts),
                answer=pos,
                id=facts.ids[f],
            )
        )
    return Task(tuple(items), name=cfg.name)


# ------------------------------------------------------------------------------------------------
# training data: the identify prompt format, vectorised
# ------------------------------------------------------------------------------------------------
class _Sampler:
    """Draws training prompts in the exact token layout of :class:`~tl_neuronllm.proxies.Renderer`."""

    def __init__(self, cfg: TestbedConfig, vocab: Vocab, facts: _Facts, rng: np.random.Generator):
        self.cfg, self.vocab, self.facts, self.rng = cfg, vocab, facts, rng
        self.letters = np.array(vocab.letters[: cfg.n_options], dtype=np.int64)

    def block(self, questions: np.ndarray, answer: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Question blocks ``Q question (letter option)* ANS`` with fresh distractors and order.

        Returns the tokens ``[B, block_len]``, the gold letter index ``[B]`` and the value index shown
        under each letter ``[B, n_options]``.
        """
        B, O, V, rng = len(answer), self.cfg.n_options, self.cfg.n_values, self.rng
        keys = rng.random((B, V))
        keys[np.arange(B), answer] = 2.0  # never among the smallest: the gold is not a distractor
        distr = np.argsort(keys, axis=1)[:, : O - 1]
        opts = np.concatenate([answer[:, None], distr], axis=1)  # gold first
        perm = np.argsort(rng.random((B, O)), axis=1)  # letter j shows opts[perm[j]]
        shown = np.take_along_axis(opts, perm, axis=1)
        gold_letter = np.argmax(perm == 0, axis=1)
        pairs = np.stack([np.broadcast_to(self.letters, (B, O)), self.vocab.first_value + shown], axis=2)
        toks = np.concatenate(
            [np.full((B, 1), self.vocab.Q), questions, pairs.reshape(B, 2 * O), np.full((B, 1), self.vocab.ANS)], axis=1
        )
        return toks, gold_letter, shown

    def batch(self, B: int, shots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A batch of training prompts ending at ``ANS``.

        The target is the gold letter, except on biased items: with probability ``letter_bias`` the
        letter "A", or, when the popular value is shown as a distractor, with probability
        ``popular_bias`` the letter of the popular value.

        Returns:
            ``(tokens [B, T], target token [B], gold letter [B], Bayes letter [B], fact index [B])``;
            the Bayes letter is the training distribution's most likely target.
        """
        F, rng, cfg = len(self.facts.ids), self.rng, self.cfg
        f = rng.integers(0, F, size=B)
        parts = [np.full((B, 1), self.vocab.BOS)]
        for _ in range(shots):
            d = rng.integers(0, F - 1, size=B)
            d = d + (d >= f)  # a demo is never the asked fact
            toks, gl, _ = self.block(self.facts.questions[d], self.facts.train_answer[d])
            parts += [toks, self.letters[gl][:, None], np.full((B, 1), self.vocab.SEP)]
        ans = self.facts.train_answer[f]
        toks, gl, shown = self.block(self.facts.questions[f], ans)
        parts.append(toks)
        biased = self.facts.biased[f]
        letter, bayes = gl.copy(), gl.copy()
        if cfg.letter_bias > 0:
            letter[biased & (rng.random(B) < cfg.letter_bias)] = 0
            if cfg.letter_bias > 0.5:
                bayes[biased] = 0
        if cfg.popular_bias > 0:
            is_pop = shown == POPULAR_VALUE
            lured = biased & is_pop.any(axis=1) & (ans != POPULAR_VALUE)
            pos = np.argmax(is_pop, axis=1)
            hit = lured & (rng.random(B) < cfg.popular_bias)
            letter[hit] = pos[hit]
            if cfg.popular_bias > 0.5:
                bayes[lured] = pos[lured]
        return np.concatenate(parts, axis=1), self.letters[letter], gl, bayes, f


def _prompt_len(cfg: TestbedConfig, shots: int) -> int:
    block = 1 + 2 + 2 * cfg.n_options + 1
    return 1 + shots * (block + 2) + block


def _model_dict(cfg: TestbedConfig, vocab: Vocab) -> dict[str, Any]:
    n_ctx = max(64, _prompt_len(cfg, max(cfg.train_shots) + 1))
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


def _boot(cfg: TestbedConfig, vocab: Vocab) -> Any:
    from transformer_lens.model_bridge import TransformerBridge  # never at module top level

    return TransformerBridge.boot_native(_model_dict(cfg, vocab))


# ------------------------------------------------------------------------------------------------
# the testbed
# ------------------------------------------------------------------------------------------------
@dataclass
class Testbed:
    """A trained model with the task it knows.

    Attributes:
        config: The :class:`TestbedConfig`.
        model: The trained ``TransformerBridge`` (eval mode).
        task: All items of the task (true answers).
        token_format: Pass as ``identify(..., token_format=tb.token_format)``.
        vocab: Token ids (:meth:`Vocab.names` for readable prompts).
        stats: Training facts: ``train_accuracy`` (fresh training-format prompts, against the trained
            answers), ``heldout_accuracy`` / ``heldout_consistent_accuracy`` / ``heldout_gold_prob``
            (held-out items of ``splits(0)`` rendered as identify renders them, 3 proxies, against the
            true answers), ``train_seconds``, ``final_loss``, ``n_params``.
        biased: Ids of the items with a trained bias (letter or popular value).
        corrupted: Ids of the items trained on a wrong value.
        path: The cache file of the weights (``None`` if not cached).
    """

    __test__ = False  # not a pytest test class despite the name

    config: TestbedConfig
    model: Any
    task: Task
    token_format: TokenFormat
    vocab: Vocab
    stats: dict[str, Any] = field(default_factory=dict)
    biased: frozenset[str] = frozenset()
    corrupted: frozenset[str] = frozenset()
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def train_accuracy(self) -> float:
        return float(self.stats["train_accuracy"])

    @property
    def heldout_accuracy(self) -> float:
        return float(self.stats["heldout_accuracy"])

    @property
    def train_seconds(self) -> float:
        return float(self.stats["train_seconds"])

    def splits(
        self, seed: int = 0, *, n_identify: int | float = 0.4, n_heldout: int | float | None = None, n_demo: int = 4
    ) -> tuple[Task, Task, Task]:
        """Disjoint ``(identify, heldout, demo)`` tasks (seeded; see :meth:`Task.split`)."""
        return self.task.split(n_identify, n_heldout, n_demo=n_demo, seed=seed)

    def subset(self, task: Task, which: Literal["biased", "unbiased", "corrupted", "clean"]) -> Task:
        """The items of ``task`` that are (or are not) biased / corrupted."""
        ids = self.biased if which in ("biased", "unbiased") else self.corrupted
        keep = which in ("biased", "corrupted")
        idx = [i for i, it in enumerate(task.items) if (it.id in ids) == keep]
        if not idx:
            raise ValueError(f"task {task.name!r} has no {which} items")
        return task.subset(idx, name=f"{task.name}:{which}")

    def queries(
        self,
        task: Task,
        demos: Task | Sequence[Item] | None = None,
        *,
        n_proxies: int = 3,
        n_shots: int = 1,
        seed: int = 0,
        **options: Any,
    ) -> list[list[Any]]:
        """Tokenized proxies ``[item][proxy]`` of ``task``, rendered exactly as :func:`identify` does.

        ``demos`` default to the demo split of ``splits(seed)``; ``options`` are other
        :class:`~tl_neuronllm.pipeline.IdentifyConfig` fields (``permutation``, ...).
        """
        from .adapter import ModelAdapter
        from .pipeline import IdentifyConfig, build_queries, choose_demos

        cfg = IdentifyConfig(token_format=self.token_format, n_proxies=n_proxies, n_shots=n_shots, seed=seed, **options)
        if demos is None and n_shots > 0:
            demos = self.splits(seed)[2]
        scored, demo_items = choose_demos(task, n_shots, seed, demos)
        return build_queries(ModelAdapter(self.model), scored, cfg, demo_items)

    def accuracy(
        self,
        task: Task | None = None,
        demos: Task | Sequence[Item] | None = None,
        *,
        fwd_hooks: Any = (),
        n_proxies: int = 3,
        n_shots: int = 1,
        seed: int = 0,
        batch_size: int = 64,
    ) -> dict[str, float]:
        """Accuracy of the model on ``task`` (default: held-out split of ``splits(seed)``).

        Args:
            task: Items to evaluate.
            demos: Demonstration items (default: the demo split of ``splits(seed)``).
            fwd_hooks: Forward hooks, or a function of the per-row site positions returning them
                (as :func:`tl_neuronllm.answers.predict` takes), e.g.
                ``lambda site: result.hooks("good", site=site)``.
            n_proxies, n_shots, seed: Rendering, as in :func:`identify`.
            batch_size: Prompts per forward.

        Returns:
            ``accuracy`` (argmax over the options, per proxy), ``consistent_accuracy`` (items right
            on all proxies), ``gold_prob`` (mean softmax-over-options probability of the gold),
            ``n_items``.
        """
        from .adapter import ModelAdapter, preserved_model_state
        from .answers import predict

        if task is None:
            task = self.splits(seed)[1]
        qs = self.queries(task, demos, n_proxies=n_proxies, n_shots=n_shots, seed=seed)
        flat = [q for item in qs for q in item]
        with preserved_model_state(self.model):
            probs = predict(ModelAdapter(self.model), flat, fwd_hooks=fwd_hooks, batch_size=batch_size)
        ok = [int(p.argmax()) == q.gold for q, p in zip(flat, probs)]
        gold = [float(p[q.gold]) for q, p in zip(flat, probs)]
        cons, i = [], 0
        for item in qs:
            cons.append(all(ok[i : i + len(item)]))
            i += len(item)
        return {
            "accuracy": float(np.mean(ok)),
            "consistent_accuracy": float(np.mean(cons)),
            "gold_prob": float(np.mean(gold)),
            "n_items": len(qs),
        }

    def render(self, tokens: Sequence[int]) -> str:
        """A readable string of a token-id prompt."""
        names = self.vocab.names()
        return " ".join(names[int(t)] if 0 <= int(t) < len(names) else f"<{int(t)}>" for t in tokens)


def train_testbed(
    cfg: TestbedConfig, *, progress: bool = False, num_threads: int | None = 1
) -> tuple[Any, dict[str, Any]]:
    """Train a testbed model from scratch (no cache).

    Args:
        cfg: The testbed.
        progress: Show a progress bar.
        num_threads: Torch CPU threads while training (restored afterwards). One thread is as fast as
            two for these tiny matrices and immune to oversubscription when other processes share
            the cores (measured 4-6x faster than two threads on a busy 2-core machine); it also makes
            the result independent of the machine's core count. ``None`` keeps the current setting.

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


def _probe(cfg: TestbedConfig, vocab: Vocab, facts: _Facts, n: int = 512) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """A fixed batch of fresh training-format prompts: tokens, trained gold letters, Bayes letters.

    The Bayes letter is the training distribution's most likely target (see :meth:`_Sampler.batch`).
    """
    shots = 1 if 1 in cfg.train_shots else cfg.train_shots[0]
    toks, _, gold, bayes, _ = _Sampler(cfg, vocab, facts, np.random.default_rng([cfg.seed, 4])).batch(n, shots)
    return torch.as_tensor(toks), gold, bayes


def _train(cfg: TestbedConfig, progress: bool) -> tuple[Any, dict[str, Any]]:
    vocab = _vocab(cfg)
    facts = _make_facts(cfg, vocab)
    model = _boot(cfg, vocab)
    # train the wrapped native module when the Bridge exposes it (same parameters, no hook overhead)
    net = getattr(model, "original_model", None) or model
    rng = np.random.default_rng([cfg.seed, 3])
    sampler = _Sampler(cfg, vocab, facts, rng)
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


# ------------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------------
def testbed_path(cfg: TestbedConfig, cache: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/testbed/<name>-<hash>.safetensors`` of a config (the ``.json`` lies beside it)."""
    return _cache_root(cache) / "testbed" / f"{cfg.name}-{cfg.digest()}.safetensors"


def _cache_root(cache: str | os.PathLike[str] | None) -> Path:
    try:
        from .hub import cache_dir
    except ImportError:  # pragma: no cover - hub is part of the package; kept for partial installs
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(cache) if cache is not None else Path(xdg) / "tl_neuronllm"
    return cache_dir(cache)


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _config(name: str | TestbedConfig) -> TestbedConfig:
    if isinstance(name, TestbedConfig):
        return name
    if name in TESTBEDS:
        return TESTBEDS[name]
    raise KeyError(f"unknown testbed {name!r}; known: {sorted(TESTBEDS)} (or pass a TestbedConfig)")


def make_task(name: str | TestbedConfig = "facts-small") -> tuple[Task, TokenFormat]:
    """The task of a testbed and its token format, without training or loading a model."""
    cfg = _config(name)
    vocab = _vocab(cfg)
    return _make_task(cfg, vocab, _make_facts(cfg, vocab)), vocab.token_format()


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
        cache: Cache folder (default :func:`tl_neuronllm.hub.cache_dir`).
        retrain: Train even if a cached copy exists (and overwrite it).
        save: Write the trained model to the cache.
        progress: Show a training progress bar.

    Returns:
        A :class:`Testbed` whose model is in eval mode.

    Raises:
        KeyError: for an unknown name.
    """
    cfg = _config(name)
    from safetensors.torch import load_file, save_file

    vocab = _vocab(cfg)
    facts = _make_facts(cfg, vocab)
    task = _make_task(cfg, vocab, facts)
    path = testbed_path(cfg, cache)
    meta_path = path.with_suffix(".json")
    model, stats = None, None
    if not retrain and path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("config") == cfg.to_dict() and meta.get("format_version") == FORMAT_VERSION:
                model = _boot(cfg, vocab)
                model.load_state_dict(load_file(str(path)))
                stats = dict(meta["stats"])
        except (OSError, ValueError, RuntimeError, KeyError):
            model, stats = None, None  # unreadable or stale: train again
    if model is None:
        model, stats = train_testbed(cfg, progress=progress)
    model.eval()
    tb = Testbed(
        cfg,
        model,
        task,
        vocab.token_format(),
        vocab,
        stats or {},
        frozenset(facts.ids[i] for i in np.flatnonzero(facts.biased)),
        frozenset(facts.ids[i] for i in np.flatnonzero(facts.train_answer != facts.true_answer)),
        path if save else None,
    )
    if "heldout_accuracy" not in tb.stats:
        acc = tb.accuracy()
        tb.stats.update(
            heldout_accuracy=acc["accuracy"],
            heldout_consistent_accuracy=acc["consistent_accuracy"],
            heldout_gold_prob=acc["gold_prob"],
        )
        if save:
            path.parent.mkdir(parents=True, exist_ok=True)
            sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            _atomic_write(path, lambda p: save_file(sd, str(p)))
            meta = {
                "format_version": FORMAT_VERSION,
                "config": cfg.to_dict(),
                "stats": tb.stats,
                "versions": _versions(),
            }
            _atomic_write(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2)))
    return tb


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"torch": torch.__version__}
    try:
        out["transformer_lens"] = md.version("transformer-lens")
    except md.PackageNotFoundError:
        pass
    return out


def word_tokenizer(words: Sequence[str]) -> Any:
    """An offline word-level Hugging Face tokenizer over ``words`` (whitespace split, ``[BOS]`` prepended).

    For tiny random HF models wrapped with ``TransformerBridge.boot_transformers``: ``[PAD]``,
    ``[UNK]`` and ``[BOS]`` are added in front when missing. It is saved and reloaded once, because
    TransformerLens rebuilds tokenizers from their ``name_or_path``: the folder is kept under the
    package cache (``cache_dir()/tokenizers/word-<hash of the vocabulary>``), never in a temporary
    folder left behind.
    """
    import shutil
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

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
    d = _cache_root(None) / "tokenizers" / f"word-{key}"
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
