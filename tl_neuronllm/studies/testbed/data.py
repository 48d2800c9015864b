"""Testbed data: the token vocabulary, the seeded facts, the task, and the training-prompt sampler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tl_neuronllm.data.tasks import LETTERS, Item, Task
from tl_neuronllm.prompts.proxies import TokenFormat
from tl_neuronllm.studies.testbed.config import N_LETTERS, POPULAR_VALUE, TestbedConfig, config_of

__all__ = ["Vocab", "make_task"]


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
class Facts:
    """The facts of a testbed as arrays (index f = item index in the task)."""

    questions: np.ndarray  # [F, qlen] token ids
    true_answer: np.ndarray  # [F] value index
    train_answer: np.ndarray  # [F] value index the model is trained on (differs under label noise)
    biased: np.ndarray  # [F] bool
    ids: tuple[str, ...]


def vocab_of(cfg: TestbedConfig) -> Vocab:
    return Vocab(cfg.n_values, cfg.n_entities)


def make_facts(cfg: TestbedConfig, vocab: Vocab) -> Facts:
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
    return Facts(questions, true, train, biased, ids)


def make_task_from_facts(cfg: TestbedConfig, vocab: Vocab, facts: Facts) -> Task:
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
class Sampler:
    """Draws training prompts in the exact token layout of :class:`~tl_neuronllm.prompts.proxies.Renderer`."""

    def __init__(self, cfg: TestbedConfig, vocab: Vocab, facts: Facts, rng: np.random.Generator):
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


def prompt_len(cfg: TestbedConfig, shots: int) -> int:
    block = 1 + 2 + 2 * cfg.n_options + 1
    return 1 + shots * (block + 2) + block


def make_task(name: str | TestbedConfig = "facts-small") -> tuple[Task, TokenFormat]:
    """The task of a testbed and its token format, without training or loading a model.

    Raises:
        KeyError: for an unknown testbed name.
    """
    cfg = config_of(name)
    vocab = vocab_of(cfg)
    return make_task_from_facts(cfg, vocab, make_facts(cfg, vocab)), vocab.token_format()
