"""Answer scoring: tokenized proxies (:class:`ProxyPrompt`), option scores, the target F and batched predictions.

Two answer modes:

* **letter** (the paper's): the score of option ``o`` is the logit of its letter token at the
  site, ``logsumexp`` over the letter's single-token forms ("A", " A").
* **cloze**: the score of option ``o`` is the mean log-probability of its text continuing the
  prompt (length-normalised), for models that cannot bind letters.

Target, per proxy: ``F = log softmax_o(z)[gold]`` (``target="ce"``, the default: minus the
cross-entropy over the options), ``softmax_o(z)[gold]`` (``target="prob"``) or the gold option's
probability under the full vocabulary (``target="vocab_prob"``, what knowledge neurons and
QR-Neuron attribute: the letter's softmax probability, or in cloze mode ``exp`` of the mean
token log-probability of the gold text). A positive
attribution to F means the neuron raises the gold option against the distractors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_neuronllm.errors import ContextLengthError, ModelError
from tl_neuronllm.model.adapter import ModelAdapter
from tl_neuronllm.model.protocol import HookFn
from tl_neuronllm.prompts.proxies import Proxy

Mode = Literal["letter", "cloze"]
Target = Literal["ce", "prob", "vocab_prob"]
TARGETS = ("ce", "prob", "vocab_prob")


#: Rules for the scored position of a prompt: ``"last"`` (the last prompt token, which predicts the answer).
SITE_RULES = ("last",)
SiteRule = Literal["last"]


@dataclass(frozen=True)
class ProxyPrompt:
    """A tokenized proxy: one rendered prompt of an item, its answer options and the scored position.

    Attributes:
        prompt: Prompt token ids; by ``site_rule="last"`` the last one is the site.
        gold: Gold letter position.
        n_options: Number of options.
        item_index / proxy_index: Where the proxy came from.
        letter_ids: Per letter, its single-token ids (letter mode).
        continuations: Per letter, the option text's token ids (cloze mode).
        site_rule: Which position is scored (see :data:`SITE_RULES`); recorded in the result as ``site``.
    """

    prompt: tuple[int, ...]
    gold: int
    n_options: int
    item_index: int = 0
    proxy_index: int = 0
    letter_ids: tuple[tuple[int, ...], ...] | None = None
    continuations: tuple[tuple[int, ...], ...] | None = None
    site_rule: SiteRule = "last"

    @property
    def mode(self) -> Mode:
        return "letter" if self.continuations is None else "cloze"

    @property
    def site(self) -> int:
        """Index of the scored position in :attr:`prompt`."""
        return len(self.prompt) - 1

    def suffixes(self) -> list[list[int]]:
        """Token rows that follow the prompt prefix: ``[site]`` (letter) or ``[site] + option[:-1]`` (cloze:
        the option's last token predicts nothing the score needs, so it is not run)."""
        s = self.prompt[-1]
        if self.continuations is None:
            return [[s]]
        return [[s, *c[:-1]] for c in self.continuations]


#: The former name of :class:`ProxyPrompt` (it reads as the attention query to a TransformerLens user).
Query = ProxyPrompt


@dataclass
class AnswerTally:
    """Running sums of how the model answers the scored proxies (clean run), additive over items and shards.

    Attributes:
        n_proxies: Proxies seen.
        n_correct: Proxies whose predicted option (argmax) is the gold one.
        gold_prob: Sum of the gold option's probability.
        n_consistent: Items with every proxy correct.
        n_items: Items seen.
    """

    n_proxies: int = 0
    n_correct: int = 0
    gold_prob: float = 0.0
    n_consistent: int = 0
    n_items: int = 0

    def add(self, queries: Sequence[Sequence[ProxyPrompt]], probs: Sequence[Sequence[Tensor]]) -> None:
        """Count a batch of items: their proxies and the clean option probabilities of each."""
        for qs, ps in zip(queries, probs):
            ok = [int(p.argmax()) == q.gold for q, p in zip(qs, ps)]
            for q, p in zip(qs, ps):
                self.gold_prob += float(p[q.gold])
            self.n_proxies += len(ok)
            self.n_correct += sum(ok)
            self.n_consistent += all(ok)
            self.n_items += 1

    def stats(self) -> dict[str, float]:
        """Accuracy, mean gold probability and consistent accuracy (every proxy of an item right)."""
        n = max(self.n_proxies, 1)
        return {
            "accuracy": self.n_correct / n,
            "gold_prob": self.gold_prob / n,
            "consistent_accuracy": self.n_consistent / max(self.n_items, 1),
        }

    def to_tensor(self) -> Float[Tensor, " 5"]:
        """The sums as one float64 tensor (for checkpoints and all-reduce; exact for counts below 2**53)."""
        return torch.tensor(
            [self.n_proxies, self.n_correct, self.gold_prob, self.n_consistent, self.n_items], dtype=torch.float64
        )

    @classmethod
    def from_tensor(cls, t: Tensor) -> AnswerTally:
        a, b, g, c, n = (float(x) for x in t.tolist())
        return cls(int(a), int(b), g, int(c), int(n))


def context_length(adapter: ModelAdapter) -> int | None:
    """The model's context ``model.cfg.n_ctx`` (``None`` when the config does not set one)."""
    n = getattr(adapter.model.cfg, "n_ctx", None)
    try:
        n = int(n) if n is not None else None
    except (TypeError, ValueError):
        return None
    return n if n and n > 0 else None


def check_vocab(
    d_vocab: int,
    prompt: Sequence[int],
    conts: Sequence[Sequence[int]] | None,
    letter_ids: Sequence[Sequence[int]] | None,
) -> None:
    """Refuse token ids outside the model's vocabulary ``0 .. d_vocab - 1`` (token-level tasks and
    ``TokenFormat`` letters give ids directly); the caller names the item.

    Raises:
        ModelError: naming the field, the id and ``d_vocab``.
    """
    parts: list[tuple[str, Sequence[int]]] = [
        (f"letter {j} (TokenFormat.letters)", i) for j, i in enumerate(letter_ids or ())
    ]
    parts += [(f"option {j}", c) for j, c in enumerate(conts or ())]
    parts += [("prompt (question, context, demonstrations or format tokens)", prompt)]  # shows the above too
    for what, ids in parts:
        bad = [t for t in ids if not 0 <= t < d_vocab]
        if bad:
            raise ModelError(
                f"token id {bad[0]} in the {what} is outside the model's vocabulary (d_vocab = {d_vocab}, ids "
                f"0..{d_vocab - 1})"
            )


def make_queries(
    adapter: ModelAdapter,
    proxies: Sequence[Proxy],
    mode: Mode,
    *,
    letters: Sequence[int] | None = None,
) -> list[ProxyPrompt]:
    """Tokenize proxies into queries.

    Args:
        adapter: The model adapter (tokenizer, letter ids).
        proxies: Rendered proxies.
        mode: ``"letter"`` or ``"cloze"``.
        letters: Token ids of the letters for token-level tasks (``TokenFormat.letters``).

    Raises:
        ContextLengthError: if a prompt (plus, in cloze mode, its longest option) is longer than the
            model's context ``model.cfg.n_ctx``; prompts are never truncated.
        ModelError: if a letter is not a single token, or a prompt or option is empty.
    """
    if not proxies:
        return []
    n_max = max(p.n_options for p in proxies)
    letter_ids: list[tuple[int, ...]] | None = None
    if mode == "letter":
        if letters is not None:
            letter_ids = [(int(t),) for t in letters]
        else:
            letter_ids = [tuple(f) for f in adapter.letter_token_ids(n_max)]
        if len(letter_ids) < n_max:
            raise ModelError(f"{n_max} options but only {len(letter_ids)} letter tokens")
    out = []
    n_ctx = context_length(adapter)
    for p in proxies:
        prompt = adapter.tokenize(p.prompt)
        if len(prompt) < 1:
            raise ModelError(f"item {p.item_index}: the prompt is empty after tokenization")
        prompt_len = len(prompt)  # untruncated (ModelAdapter.tokenize never truncates)
        conts = None
        if mode == "cloze":
            conts = []
            for j, o in enumerate(p.options):
                c = adapter.tokenize(o, bos=False) if isinstance(o, str) else [int(t) for t in o]
                if not c:
                    raise ModelError(f"item {p.item_index}: option {j} is empty after tokenization")
                conts.append(tuple(c))
            conts = tuple(conts)
        check_vocab(adapter.d_vocab, prompt, conts, letter_ids[: p.n_options] if letter_ids is not None else None)
        if n_ctx is not None:
            longest = max((len(c) for c in conts), default=0) if conts else 0
            if prompt_len + longest > n_ctx:
                what = (
                    f"the prompt is {prompt_len} tokens + {longest} for its longest option = {prompt_len + longest}"
                    if longest
                    else f"the prompt is {prompt_len} tokens"
                )
                raise ContextLengthError(
                    f"{what} (instruction, demonstrations and question, proxy {p.proxy_index}), longer than the "
                    f"model's context of {n_ctx} tokens (model.cfg.n_ctx); shorten the item or use fewer "
                    "demonstrations (n_shots)"
                )
        out.append(
            ProxyPrompt(
                prompt=tuple(prompt),
                gold=p.gold,
                n_options=p.n_options,
                item_index=p.item_index,
                proxy_index=p.proxy_index,
                letter_ids=tuple(letter_ids[: p.n_options]) if letter_ids is not None else None,
                continuations=conts,
            )
        )
    return out


# ------------------------------------------------------------------------------------------------
# option scores and target
# ------------------------------------------------------------------------------------------------
def letter_scores(
    site_logits: Float[Tensor, "rows d_vocab"], letter_ids: Sequence[Sequence[int]], vocab_norm: bool = False
) -> Float[Tensor, "rows n_options"]:
    """Option scores in letter mode: logsumexp of each letter's token forms (of the log-softmax
    over the vocabulary with ``vocab_norm``)."""
    lg = torch.log_softmax(site_logits.float(), dim=-1) if vocab_norm else site_logits.float()
    cols = [torch.logsumexp(lg[:, list(ids)], dim=-1) for ids in letter_ids]
    return torch.stack(cols, dim=-1)


def cloze_scores(
    logits: Float[Tensor, "n_options pos d_vocab"], conts: Sequence[Sequence[int]], start: int = 0
) -> Float[Tensor, " n_options"]:
    """Option scores in cloze mode: mean log-prob of each continuation.

    ``logits[o, start + j]`` predicts ``conts[o][j]`` (``start`` is the site's position in ``logits``).
    """
    out = []
    for o, c in enumerate(conts):
        lp = torch.log_softmax(logits[o, start : start + len(c)].float(), dim=-1)
        idx = torch.as_tensor(list(c), device=lp.device)
        out.append(lp.gather(-1, idx[:, None]).squeeze(-1).mean())
    return torch.stack(out)


def target_fn(z: Float[Tensor, "... n_options"], gold: int, target: Target = "ce") -> Float[Tensor, ...]:
    """F: log-softmax (``"ce"``) or softmax (``"prob"``) over the options, at the gold option."""
    if target == "ce":
        return torch.log_softmax(z, dim=-1)[..., gold]
    if target == "prob":
        return torch.softmax(z, dim=-1)[..., gold]
    if target == "vocab_prob":  # z are vocabulary-normalised log-probabilities
        return torch.exp(z[..., gold])
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def suffix_scores(
    logits: Float[Tensor, "rows pos d_vocab"], q: ProxyPrompt, n_groups: int, vocab_norm: bool = False
) -> Float[Tensor, "n_groups n_options"]:
    """Option scores of ``n_groups`` repetitions of a query's suffix rows (``V`` rows each)."""
    if q.continuations is None:
        assert q.letter_ids is not None
        return letter_scores(logits[:, 0], q.letter_ids, vocab_norm).reshape(n_groups, q.n_options)
    V = len(q.continuations)
    lg = logits.reshape(n_groups, V, logits.shape[1], logits.shape[2])
    return torch.stack([cloze_scores(lg[g], q.continuations, 0) for g in range(n_groups)])


def suffix_scores_at(
    logits: Float[Tensor, "positions d_vocab"],
    where: Int[Tensor, "rows pos"],
    q: ProxyPrompt,
    n_groups: int,
    vocab_norm: bool = False,
) -> Float[Tensor, "n_groups n_options"]:
    """:func:`suffix_scores` from logits stored once per computed position: row ``r``'s position ``i``
    is ``logits[where[r, i]]`` (packed rows that share a token share its logits, which are then
    normalised once, not once per row)."""
    if q.continuations is None:
        assert q.letter_ids is not None
        return letter_scores(logits[where[:, 0]], q.letter_ids, vocab_norm).reshape(n_groups, q.n_options)
    conts = q.continuations
    V, Tc, dev = len(conts), max(len(c) for c in conts), logits.device
    tok = torch.zeros(V, Tc, dtype=torch.long, device=dev)
    valid = torch.zeros(V, Tc, dtype=torch.bool, device=dev)
    for o, c in enumerate(conts):
        tok[o, : len(c)] = torch.as_tensor(list(c), device=dev)
        valid[o, : len(c)] = True
    w = where.reshape(n_groups, V, -1)[..., :Tc].to(dev)
    used, inv = torch.unique(w, return_inverse=True)
    if len(used) < len(logits):  # else ``used`` is every position in order (packed rows): no copy
        logits = logits[used]
    vals = token_log_probs(logits, inv.reshape(-1), tok.expand_as(inv).reshape(-1)).view(inv.shape)
    return torch.where(valid, vals, 0.0).sum(-1) / valid.sum(-1)


class _TokenLogProbs(torch.autograd.Function):
    """``log_softmax(logits[pos])[tok]`` without the log-softmax tensor: the forward keeps one
    log-sum-exp per position; the backward writes ``-softmax * g`` and the ``+g`` of each token in one
    buffer (the plain chain allocates and fills several vocabulary-wide tensors per position)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: Tensor, pos: Tensor, tok: Tensor) -> Tensor:
        lf = logits.float()
        lse = torch.logsumexp(lf, dim=-1)
        ctx.save_for_backward(logits, lse, pos, tok)
        return lf[pos, tok] - lse[pos]

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        logits, lse, pos, tok = ctx.saved_tensors  # type: ignore[attr-defined]
        g = g.float()
        per_pos = torch.zeros_like(lse).index_add_(0, pos, g)
        grad = torch.sub(logits.float(), lse[:, None]).exp_().mul_(-per_pos[:, None])
        grad.index_put_((pos, tok), g, accumulate=True)
        return grad.to(logits.dtype), None, None


def token_log_probs(
    logits: Float[Tensor, "positions d_vocab"], pos: Int[Tensor, " n"], tok: Int[Tensor, " n"]
) -> Float[Tensor, " n"]:
    """``log_softmax(logits[pos[i]].float())[tok[i]]`` for each ``i`` (positions may repeat), in float32,
    differentiable in ``logits``; equal to the plain log-softmax to float rounding."""
    return _TokenLogProbs.apply(logits, pos, tok)  # type: ignore[no-any-return]


def full_rows(q: ProxyPrompt) -> tuple[list[list[int]], int]:
    """Full-sequence rows of a query (prompt, or prompt + each option) and the site position."""
    if q.continuations is None:
        return [list(q.prompt)], q.site
    return [list(q.prompt) + list(c) for c in q.continuations], q.site


def full_scores(
    logits: Float[Tensor, "rows pos d_vocab"], q: ProxyPrompt, site: int | Sequence[int], vocab_norm: bool = False
) -> Float[Tensor, " n_options"]:
    """Option scores of one query from the logits of its full rows (see :func:`full_rows`)."""
    if q.continuations is None:
        assert q.letter_ids is not None
        s = site if isinstance(site, int) else site[0]
        return letter_scores(logits[:, s], q.letter_ids, vocab_norm)[0]
    s = site if isinstance(site, int) else site[0]
    return cloze_scores(logits, q.continuations, s)


def batch_full_rows(queries: Sequence[ProxyPrompt]) -> tuple[list[list[int]], list[int], list[int]]:
    """All full rows of several queries, with each row's site and each query's first row."""
    rows: list[list[int]] = []
    sites: list[int] = []
    starts: list[int] = []
    for q in queries:
        starts.append(len(rows))
        r, s = full_rows(q)
        rows += r
        sites += [s] * len(r)
    return rows, sites, starts


@torch.no_grad()
def predict(
    adapter: ModelAdapter,
    queries: Sequence[ProxyPrompt],
    *,
    fwd_hooks: Sequence[tuple[str, HookFn]] | Callable[[Tensor], Sequence[tuple[str, HookFn]]] = (),
    batch_size: int = 16,
) -> list[Float[Tensor, " n_options"]]:
    """Option probabilities (softmax over the options) of each query, in batches of full rows.

    ``fwd_hooks`` may be a function of the per-row site positions (a ``[rows]`` tensor), for
    interventions that act at the site.
    """
    out: list[Tensor] = []
    for b in range(0, len(queries), batch_size):
        qs = queries[b : b + batch_size]
        rows, sites, starts = batch_full_rows(qs)
        toks, _ = adapter.pad_batch(rows)
        site_t = torch.tensor(sites, device=toks.device)
        hooks = fwd_hooks(site_t) if callable(fwd_hooks) else fwd_hooks
        logits = adapter.forward(toks, fwd_hooks=hooks)
        for i, q in enumerate(qs):
            n = 1 if q.continuations is None else len(q.continuations)
            lg = logits[starts[i] : starts[i] + n]
            out.append(torch.softmax(full_scores(lg, q, sites[starts[i]]), dim=-1).cpu())
    return out


def check_finite_probs(probs: Sequence[Sequence[Tensor]], item_ids: Sequence[str], what: str) -> None:
    """Refuse ``nan``/``inf`` option probabilities, naming the item.

    Raises:
        ModelError: for a non-finite probability.
    """
    for i, ps in enumerate(probs):
        for p, pr in enumerate(ps):
            if not bool(torch.isfinite(pr).all()):
                name = repr(item_ids[i]) if i < len(item_ids) else f"#{i}"
                raise ModelError(
                    f"{what}: the model's option probabilities are non-finite ({pr.tolist()}) for item "
                    f"{name} (proxy {p}); the model produces nan/inf logits (check its weights and dtype)"
                )
