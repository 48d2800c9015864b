"""Augmented question sets (AQUA) and prompt rendering.

Every item is asked ``P`` times with its options permuted so that the gold option sits under a
different letter in each proxy: a model that always answers "A" is right on at most one of them,
so lucky guesses cannot pass as knowledge. Permutations are deterministic given the seed and the
item id.

Rendering produces, per proxy, a *prompt* (a string for text tasks, token ids for token tasks)
whose last token is the **site** (the position that predicts the answer), and per letter position
the option text (used by cloze scoring). Tokenization happens in :mod:`tl_neuronllm.model.adapter`.

Text layout (letter mode)::

    {instruction}

    {demo 1 rendered the same way, followed by " {gold letter}"}

    {context}
    Question: {question}
    A. {option}
    B. {option}
    Answer:

Cloze proxies (``mode="cloze"`` with ``show_options=False``): the options are not listed, so a permutation
alone would render the same prompt P times. Proxy ``p`` then varies the prompt while the scored option texts
stay the same: its instruction is template ``p mod 3`` of :func:`cloze_instructions` (template 0 is the
instruction in effect, so proxy 0, and P = 1, render exactly the plain prompt), and its demonstration(s) are
the ``p``-th block of ``n_shots`` items of the demonstration pool (:func:`demo_pool_size` items are drawn,
seeded; with fewer, the blocks wrap around). The option order still follows the proxy's permutation, so the
gold answer sits at a different position of the scored options. With ``cloze_listing=True`` the prompt also lists
the options **unlettered**, in the proxy's permuted order (an ``Options:`` line, then ``- option`` per line; token
tasks: each option followed by ``option_sep``, no letters), so the proxies differ by option order as well;
off by default, so the default run's prompt is the one measured.

Token layout (token tasks): ``[bos] demos... context question_prefix question (letter option
option_sep)* answer_prefix``, demos followed by their gold letter token and ``demo_sep``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

from tl_neuronllm.data.tasks import LETTERS, Item, Task, TaskError

DEFAULT_INSTRUCTION = "The following are multiple choice questions. Answer with the letter of the correct option."
DEFAULT_CLOZE_INSTRUCTION = "The following are multiple choice questions. Answer with the correct option."
#: The other instruction templates of cloze proxies (proxy ``p`` uses template ``p mod 3``, template 0 being
#: the instruction in effect; QR-Neuron also asks each query under three templates).
CLOZE_TEMPLATES = (
    "Answer the question with the right answer.",
    "Read the question below and complete the answer.",
)


@dataclass(frozen=True)
class AugmentConfig:
    """How the augmented question set is built.

    Attributes:
        n_proxies: Proxies per item (P). Clamped to the item's option count, since gold letters
            must be pairwise distinct.
        permutation: ``"cyclic"`` (cyclic shifts of the original order) or ``"random"`` (a seeded
            permutation per proxy with pairwise-distinct gold letters).
        include_original: Whether the unpermuted original is one of the P proxies. (choice)
        seed: Seed for the permutations (combined with the item id).
    """

    n_proxies: int = 3
    permutation: Literal["cyclic", "random"] = "cyclic"
    include_original: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_proxies < 1:
            raise ValueError(f"n_proxies must be >= 1, got {self.n_proxies}")
        if self.permutation not in ("cyclic", "random"):
            raise ValueError(f"permutation must be 'cyclic' or 'random', got {self.permutation!r}")


def proxy_permutations(item: Item, cfg: AugmentConfig) -> list[tuple[int, ...]]:
    """The option orders of the item's proxies: ``perm[j]`` is the original option shown at letter j.

    The gold letters ``perm.index(item.answer)`` are pairwise distinct across the returned proxies.
    """
    n, g = item.n_options, item.answer
    p = min(cfg.n_proxies, n)
    rng = random.Random(f"{cfg.seed}:{item.id}")
    if cfg.permutation == "cyclic":
        if cfg.include_original:
            shifts = [0] + rng.sample(range(1, n), p - 1)
        else:  # all shifts but 0 when possible; with P == n every shift is needed
            shifts = rng.sample(range(1, n), p) if p < n else rng.sample(range(n), n)
        # letter j shows original option (j - s) mod n, so the gold letter is (g + s) mod n
        return [tuple((j - s) % n for j in range(n)) for s in shifts]
    # random: choose distinct gold letters, then shuffle the distractors into the other slots
    others = [j for j in range(n) if j != g]
    if cfg.include_original:
        letters = [g] + rng.sample(others, p - 1)
    else:
        letters = rng.sample(others, min(p, n - 1)) if p < n else rng.sample(range(n), n)
    perms: list[tuple[int, ...]] = []
    for k, gl in enumerate(letters):
        if k == 0 and cfg.include_original:
            perms.append(tuple(range(n)))
            continue
        distractors = others[:]
        rng.shuffle(distractors)
        perm = distractors[:gl] + [g] + distractors[gl:]
        perms.append(tuple(perm))
    return perms


@dataclass(frozen=True)
class TokenFormat:
    """Token-level prompt format for models without a tokenizer (all fields are token ids).

    Attributes:
        letters: One token id per option letter (at least as many as the task's options).
        bos: Optional first token.
        question_prefix: Tokens before the question.
        option_sep: Tokens after each option.
        answer_prefix: Tokens after the options; the last prompt token (the site) is the last of
            these, or the last option token when empty.
        demo_sep: Tokens after each demo's gold letter.
    """

    letters: tuple[int, ...]
    bos: int | None = None
    question_prefix: tuple[int, ...] = ()
    option_sep: tuple[int, ...] = ()
    answer_prefix: tuple[int, ...] = ()
    demo_sep: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("letters", "question_prefix", "option_sep", "answer_prefix", "demo_sep"):
            object.__setattr__(self, name, tuple(int(t) for t in getattr(self, name)))
        if len(set(self.letters)) != len(self.letters):
            raise ValueError("TokenFormat.letters must be distinct token ids")


@dataclass(frozen=True)
class PromptConfig:
    """How proxies are rendered.

    Attributes:
        mode: ``"letter"`` (score = logit of the option letter, the paper's) or ``"cloze"``
            (score = mean log-probability of the option text after the prompt).
        instruction: First line of every prompt; ``None`` uses the task's instruction or the default.
        n_shots: Number of solved demonstration items (default 1), from items not being scored.
        token_format: Required for token tasks.
        show_options: In cloze mode, whether the lettered options are listed in the prompt (they
            always are in letter mode). Listing them is what makes the proxies differ.
        cloze_listing: Cloze mode without listed options only: list the options unlettered, in each proxy's
            permuted order (default off). (choice)

    Raises:
        ValueError: A mode other than letter / cloze, negative ``n_shots``, or ``cloze_listing`` outside cloze
            mode with ``show_options=False``.
    """

    mode: Literal["letter", "cloze"] = "letter"
    instruction: str | None = None
    n_shots: int = 1
    token_format: TokenFormat | None = None
    show_options: bool = True
    cloze_listing: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("letter", "cloze"):
            raise ValueError(f"mode must be 'letter' or 'cloze', got {self.mode!r}")
        if self.n_shots < 0:
            raise ValueError(f"n_shots must be >= 0, got {self.n_shots}")
        if self.cloze_listing and (self.mode != "cloze" or self.show_options):
            raise ValueError(
                "cloze_listing (options listed unlettered) applies to mode='cloze' with show_options=False, "
                f"got mode={self.mode!r}, show_options={self.show_options}"
            )


@dataclass(frozen=True)
class Proxy:
    """One rendered proxy question.

    Attributes:
        item_index: Index of the item in the scored task.
        proxy_index: Index of this proxy among the item's proxies.
        perm: ``perm[j]`` is the original option index shown under letter j.
        gold: The gold letter position (``perm.index(item.answer)``).
        prompt: The prompt text (text tasks) or token ids (token tasks); ends at the site.
        options: Option texts (or token ids) in letter order, for cloze scoring.
    """

    item_index: int
    proxy_index: int
    perm: tuple[int, ...]
    gold: int
    prompt: str | tuple[int, ...]
    options: tuple[str | tuple[int, ...], ...] = field(default=())

    @property
    def n_options(self) -> int:
        return len(self.perm)


def _render_text_block(item: Item, perm: Sequence[int], show_options: bool, listing: bool = False) -> str:
    parts = []
    if item.context:
        parts.append(str(item.context).strip())
    parts.append(f"Question: {str(item.question).strip()}")
    if show_options:
        for j, o in enumerate(perm):
            parts.append(f"{LETTERS[j]}. {str(item.options[o]).strip()}")
    elif listing:
        parts.append("Options:")
        parts += [f"- {str(item.options[o]).strip()}" for o in perm]
    parts.append("Answer:")
    return "\n".join(parts)


def _ids(x: str | Sequence[int]) -> Sequence[int]:
    """A token task's field as the token ids it holds."""
    return cast("Sequence[int]", x)


def _render_token_block(
    item: Item, perm: Sequence[int], fmt: TokenFormat, show_options: bool = True, listing: bool = False
) -> list[int]:
    if show_options and len(fmt.letters) < item.n_options:
        raise TaskError(
            f"item {item.id!r}: {item.n_options} options but TokenFormat.letters has only {len(fmt.letters)}"
        )
    # token tasks hold token ids in context, question and options (Item types them as text or ids)
    toks: list[int] = list(_ids(item.context or ())) + list(fmt.question_prefix) + list(_ids(item.question))
    for j, o in enumerate(perm if show_options else ()):
        toks += [fmt.letters[j], *_ids(item.options[o]), *fmt.option_sep]
    for o in perm if listing and not show_options else ():
        toks += [*_ids(item.options[o]), *fmt.option_sep]
    toks += list(fmt.answer_prefix)
    return toks


def cloze_proxies(prompt: PromptConfig) -> bool:
    """Whether proxies vary instruction and demonstrations (cloze mode without listed options)."""
    return prompt.mode == "cloze" and not prompt.show_options


def demo_pool_size(prompt: PromptConfig, augment: AugmentConfig) -> int:
    """How many demonstration items a run draws: ``n_shots``, times P for cloze proxies (one block per proxy)."""
    return prompt.n_shots * (augment.n_proxies if cloze_proxies(prompt) else 1)


def cloze_instructions(instruction: str) -> tuple[str, ...]:
    """The three instruction templates of cloze proxies: ``instruction`` (the one in effect), then
    :data:`CLOZE_TEMPLATES`."""
    return (instruction, *CLOZE_TEMPLATES)


class Renderer:
    """Renders items into proxies for a task, given the prompt and augmentation configs."""

    def __init__(self, task: Task, prompt: PromptConfig, augment: AugmentConfig, demos: Sequence[Item] = ()):
        if task.is_tokens and prompt.token_format is None:
            raise TaskError(
                f"task {task.name!r} has token-id items; pass PromptConfig(token_format=TokenFormat(letters=[...]))"
            )
        self.task = task
        self.prompt = prompt
        self.augment = augment
        self.demos = tuple(demos)
        instr = prompt.instruction if prompt.instruction is not None else task.instruction
        if instr is None:
            instr = DEFAULT_CLOZE_INSTRUCTION if prompt.mode == "cloze" else DEFAULT_INSTRUCTION
        self.instruction = instr
        self._demo_prefix = self._render_demos(self.demos[: prompt.n_shots], instr)
        self._prefixes: dict[int, str | list[int]] = {0: self._demo_prefix}

    def _proxy_prefix(self, p: int) -> str | list[int]:
        """The instruction and demonstrations of proxy ``p`` (the same for every proxy unless cloze proxies)."""
        if not cloze_proxies(self.prompt) or p == 0:
            return self._demo_prefix
        if p not in self._prefixes:
            n, pool = self.prompt.n_shots, self.demos
            demos = tuple(pool[(p * n + k) % len(pool)] for k in range(n)) if pool else ()
            instr = cloze_instructions(self.instruction)[p % 3] if self.instruction else ""
            self._prefixes[p] = self._render_demos(demos, instr)
        return self._prefixes[p]

    def _render_demos(self, demos: Sequence[Item], instruction: str) -> str | list[int]:
        show, listing = self.prompt.mode == "letter" or self.prompt.show_options, self.prompt.cloze_listing
        if self.task.is_tokens:
            fmt = self.prompt.token_format
            assert fmt is not None
            toks: list[int] = [] if fmt.bos is None else [fmt.bos]
            for d in demos:
                perm = tuple(range(d.n_options))
                toks += _render_token_block(d, perm, fmt, show, listing)
                toks += [fmt.letters[d.answer]] if self.prompt.mode == "letter" else list(_ids(d.options[d.answer]))
                toks += list(fmt.demo_sep)
            return toks
        blocks = [instruction] if instruction else []
        for d in demos:
            perm = tuple(range(d.n_options))
            ans = LETTERS[d.answer] if self.prompt.mode == "letter" else str(d.options[d.answer]).strip()
            blocks.append(_render_text_block(d, perm, show, listing) + " " + ans)
        return "\n\n".join(blocks) + ("\n\n" if blocks else "")

    def render(self, item_index: int, item: Item) -> list[Proxy]:
        """All proxies of one item."""
        perms = proxy_permutations(item, self.augment)
        out = []
        show, listing = self.prompt.mode == "letter" or self.prompt.show_options, self.prompt.cloze_listing
        for p, perm in enumerate(perms):
            if self.task.is_tokens:
                fmt = self.prompt.token_format
                assert fmt is not None
                block = _render_token_block(item, perm, fmt, show, listing)
                prompt: str | tuple[int, ...] = tuple(list(_ids(self._proxy_prefix(p))) + block)
                opts = tuple(item.options[o] for o in perm)
            else:
                prompt = str(self._proxy_prefix(p)) + _render_text_block(item, perm, show, listing)
                opts = tuple(" " + str(item.options[o]).strip() for o in perm)
            out.append(Proxy(item_index, p, tuple(perm), perm.index(item.answer), prompt, opts))
        return out

    def render_all(self) -> list[list[Proxy]]:
        """Proxies of every item, ``[item][proxy]``."""
        return [self.render(i, it) for i, it in enumerate(self.task.items)]
