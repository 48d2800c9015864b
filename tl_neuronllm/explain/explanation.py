"""The explanation objects :func:`tl_neuronllm.explain.explainer` returns, with their tables and exports."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from tl_neuronllm.html_view import esc, grid, num, panel, require_pandas, task_base, token_strip, visible


@dataclass
class PromptTrace:
    """Where the explained neurons fire on one identification prompt.

    Attributes:
        item_id: The item the prompt renders.
        tokens: The prompt's tokens as text, through the answer position (``#id`` without a tokenizer).
        site: The answer position (the scored one; the last token here).
        acts: ``[positions, neurons]`` activations at every token (column order of ``Explanation.neurons``).
        correct: Whether the model answered this question right.
    """

    item_id: str
    tokens: list[str]
    site: int
    acts: Float[Tensor, "pos neurons"]
    correct: bool


@dataclass
class NeuronExplanation:
    """What one good or bad neuron does (see :mod:`tl_neuronllm.explain.explainer` for every quantity).

    Attributes:
        label, role, layer, neuron, score, rank: Identity (``rank`` 1 = strongest of its role).
        membership: Share of scored items with the neuron among their candidates of its sign.
        stability: Share of bootstrap resamples that select it in the same role (``None`` without
            kept attributions).
        option_effects: Letter mode: direct effect on each option letter (``{"A": ..., ...}``).
        gold_effect / distractor_effect: Mean direct effect on the gold option / the distractors.
        top_promoted / top_suppressed: ``(token, effect)`` of the largest / smallest effects.
        n_right / n_wrong: Questions answered right / wrong.
        act_mean, act_right, act_wrong, act_effect_size: Site activation: overall mean, mean on
            right and wrong questions, Cohen's d (right minus wrong).
        act_by_gold_letter: Mean activation by the gold option's letter.
        letter_dla: Letter mode: mean activation x effect on each letter (the direct push on its logit).
        dla_gold / dla_distractors / dla_margin: Mean activation x effect on gold, on distractors, and
            their difference.
        top_items: ``(item id, mean activation, question snippet)`` of the items where it fires most.
    """

    label: str
    role: str
    layer: int
    neuron: int
    score: float
    rank: int
    membership: float
    stability: float | None
    option_effects: dict[str, float]
    gold_effect: float
    distractor_effect: float
    top_promoted: list[tuple[str, float]]
    top_suppressed: list[tuple[str, float]]
    n_right: int
    n_wrong: int
    act_mean: float
    act_right: float
    act_wrong: float
    act_effect_size: float
    act_by_gold_letter: dict[str, float]
    letter_dla: dict[str, float]
    dla_gold: float
    dla_distractors: float
    dla_margin: float
    top_items: list[tuple[str, float, str]]

    def flat(self) -> dict[str, Any]:
        """One flat row (dicts spread into ``effect_A`` / ``act_gold_A`` columns, lists joined)."""
        d = asdict(self)
        for k in ("option_effects", "act_by_gold_letter", "letter_dla", "top_promoted", "top_suppressed", "top_items"):
            d.pop(k)
        for letter, v in self.option_effects.items():
            d[f"effect_{letter}"] = v
        for letter, v in self.act_by_gold_letter.items():
            d[f"act_gold_{letter}"] = v
        for letter, v in self.letter_dla.items():
            d[f"dla_{letter}"] = v
        d["top_promoted"] = " ".join(f"{t!r}:{v:+.3g}" for t, v in self.top_promoted)
        d["top_suppressed"] = " ".join(f"{t!r}:{v:+.3g}" for t, v in self.top_suppressed)
        d["top_items"] = " | ".join(f"{i} ({a:+.3g}): {s}" for i, a, s in self.top_items)
        return d


@dataclass
class Explanation:
    """Per-neuron explanations of a result's good and bad neurons (good first, then bad).

    Attributes:
        neurons: One :class:`NeuronExplanation` per neuron.
        activations: ``[questions, neurons]`` site activations (float32, column order of ``neurons``).
        correct: ``[questions]`` whether the model answered each question right.
        item_ids: The item id of each question.
        info: Model, task, mode, option tokens, how the direct effect was computed.
        traces: Where the neurons fire: their activation on every token of a few identification prompts
            (:class:`PromptTrace`; :meth:`fires` gives one neuron's).
    """

    neurons: list[NeuronExplanation]
    activations: Float[Tensor, "questions neurons"]
    correct: list[bool]
    item_ids: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    traces: list[PromptTrace] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.neurons)

    def __getitem__(self, label: str) -> NeuronExplanation:
        for n in self.neurons:
            if n.label == label:
                return n
        raise KeyError(f"no neuron {label!r} in this explanation")

    def column(self, label: str) -> int:
        """The column of a neuron in ``activations`` and the traces.

        Raises:
            KeyError: for a neuron not in this explanation.
        """
        for j, n in enumerate(self.neurons):
            if n.label == label:
                return j
        raise KeyError(f"no neuron {label!r} in this explanation")

    def fires(self, label: str) -> list[tuple[list[str], list[float], int]]:
        """Where a neuron fires: ``(tokens, activation on each token, answer position)`` per traced prompt.

        Raises:
            KeyError: for a neuron not in this explanation.
        """
        j = self.column(label)
        return [(list(t.tokens), [float(a) for a in t.acts[:, j]], t.site) for t in self.traces]

    def fire_html(self, label: str, last: int | None = 48) -> str:
        """:meth:`fires` as coloured token strips (the last ``last`` tokens of each prompt; ``None``: all)."""
        strips = []
        fires = self.fires(label)
        scale = max((abs(a) for _, acts, _ in fires for a in acts), default=0.0)
        for tokens, acts, site in fires:
            start = 0 if last is None else max(0, len(tokens) - last)
            strips.append(token_strip(tokens[start:], acts[start:], site, scale=scale, start=start))
        return "".join(strips)

    def _repr_html_(self) -> str:
        n = 8
        head = ["neuron", "role", "ACE", "stability", "gold eff.", "distr. eff.", "DLA margin", "d", "promotes"]
        rows = [
            [
                x.label,
                x.role,
                num(x.score, ".3g"),
                num(x.stability, ".2f"),
                num(x.gold_effect, "+.3f"),
                num(x.distractor_effect, "+.3f"),
                num(x.dla_margin, "+.3f"),
                num(x.act_effect_size, "+.2f"),
                " ".join(visible(t) for t, _ in x.top_promoted[:3]),
            ]
            for role in ("good", "bad")
            for x in [x for x in self.neurons if x.role == role][:n]
        ]
        drop = {5} if self.gold_equals_distractors else set()  # equal columns: one, named for both
        if drop:
            head[4] = "gold = distr. eff."
        if all(x.stability is None for x in self.neurons):
            drop.add(3)
        keep = [i for i in range(len(head)) if i not in drop]
        head, rows = [head[i] for i in keep], [[r[i] for i in keep] for r in rows]
        body = grid(head, rows, classes=[""] * (len(head) - 1) + ["txt"])
        shown = [next(x for x in self.neurons if x.role == role) for role in ("good", "bad") if self._has(role)]
        if self.traces:
            for x in shown:
                body += f"<h4>where {esc(x.label)} ({esc(x.role)}) fires</h4>" + self.fire_html(x.label)
        i = self.info
        note = (
            f"{len(self)} neurons explained on {i.get('n_questions', '?')} questions of {i.get('n_items', '?')} "
            f"items of {i.get('task', '?')} (top {n} per role shown; to_pandas() has them all). Token strips: "
            "activation on each token (blue +, red −), the answer position outlined."
            + (EQUAL_NOTE if self.gold_equals_distractors else "")
        )
        return panel(f"Explanation: {i.get('model', '?')} on {task_base(i.get('task', '?'))}", body, note)

    @property
    def gold_equals_distractors(self) -> bool:
        """Whether every neuron's gold and distractor direct effects are equal: in letter mode, when every letter
        was gold equally often (the cyclic proxies of items with as many proxies as options), the two averages
        run over the same letters, and only the effect on each letter tells the neurons apart."""
        return bool(self.neurons) and all(
            math.isclose(x.gold_effect, x.distractor_effect, rel_tol=1e-6, abs_tol=1e-9) for x in self.neurons
        )

    def _has(self, role: str) -> bool:
        return any(x.role == role for x in self.neurons)

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows (see :meth:`NeuronExplanation.flat`)."""
        return [n.flat() for n in self.neurons]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per neuron (pandas ships with TransformerLens).

        Raises:
            MissingDependency: (an ``ImportError``) if pandas is not installed.
        """
        return require_pandas().DataFrame(self.rows())

    def to_csv(self, path: str | Path) -> Path:
        """Write the flat rows as CSV (no pandas needed); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        cols: list[str] = []
        for r in rows:
            cols += [c for c in r if c not in cols]
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        return path

    def save_json(self, path: str | Path) -> Path:
        """Write everything (neurons, activations, answers, info) as JSON, which :meth:`load_json` reads back
        (the CLI writes it beside ``explanation.csv`` so that ``report --no-explain`` can reuse it)."""
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "format": "tl_neuronllm.Explanation/1",
            "neurons": [asdict(n) for n in self.neurons],
            "activations": self.activations.tolist(),
            "correct": list(self.correct),
            "item_ids": list(self.item_ids),
            "info": self.info,
            "traces": [
                {
                    "item_id": t.item_id,
                    "tokens": t.tokens,
                    "site": t.site,
                    "acts": t.acts.tolist(),
                    "correct": t.correct,
                }
                for t in self.traces
            ],
        }
        path.write_text(json.dumps(body, default=str))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> Explanation:
        """Read an explanation written by :meth:`save_json`.

        Raises:
            ResultFileError: naming the file, when it is not such an explanation.
        """
        import json

        import torch

        from tl_neuronllm.errors import ResultFileError

        path = Path(path)
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            assert body["format"] == "tl_neuronllm.Explanation/1"
            neurons = []
            for d in body["neurons"]:
                for key in ("top_promoted", "top_suppressed", "top_items"):
                    d[key] = [tuple(x) for x in d[key]]
                neurons.append(NeuronExplanation(**d))
            acts = torch.tensor(body["activations"], dtype=torch.float32).reshape(-1, len(neurons))
            traces = [  # absent in files of 0.6.0
                PromptTrace(
                    t["item_id"], list(t["tokens"]), int(t["site"]), _tensor(t["acts"], len(neurons)), t["correct"]
                )
                for t in body.get("traces", [])
            ]
            return cls(neurons, acts, list(body["correct"]), list(body["item_ids"]), dict(body["info"]), traces)
        except (OSError, ValueError, KeyError, TypeError, AssertionError, RuntimeError) as e:
            raise ResultFileError(
                f"{path}: not a saved explanation ({type(e).__name__}: {e}); explain again (report without --no-explain)"
            ) from None

    def to_markdown(self, n: int = 10) -> str:
        """A markdown table of the top ``n`` neurons of each role."""
        mode = self.info.get("mode", "letter")
        head = [
            "neuron",
            "role",
            "ACE",
            "stability",
            "gold eff.",
            "distr. eff.",
            "DLA margin",
            "act right",
            "act wrong",
            "d",
            "promotes",
            "suppresses",
        ]
        equal = self.gold_equals_distractors
        if equal:
            head.remove("distr. eff.")
            head[head.index("gold eff.")] = "gold = distr. eff."
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for role in ("good", "bad"):
            for x in [x for x in self.neurons if x.role == role][:n]:
                stab = "" if x.stability is None else f"{x.stability:.2f}"
                toks = lambda ts: " ".join(repr(t) for t, _ in ts[:3]).replace("|", "\\|")
                distr = "" if equal else f"{x.distractor_effect:+.3f} | "
                lines.append(
                    f"| {x.label} | {x.role} | {x.score:.3g} | {stab} | {x.gold_effect:+.3f} | "
                    f"{distr}{x.dla_margin:+.3f} | {x.act_right:.3f} | {x.act_wrong:.3f} | "
                    f"{_fmt(x.act_effect_size, '+.2f')} | {toks(x.top_promoted)} | {toks(x.top_suppressed)} |"
                )
        note = (
            f"Direct effects (logit lens of W_out through the final norm, direct path only) on the option "
            f"{'letters' if mode == 'letter' else 'texts’ first tokens'}; activations on "
            f"{self.info.get('n_questions', '?')} questions of {self.info.get('n_items', '?')} items "
            f"({self.info.get('n_right', '?')} answered right)." + (EQUAL_NOTE if equal else "")
        )
        return "\n".join(lines) + "\n\n" + note + "\n"

    def summary(self) -> dict[str, Any]:
        """Per role: mean gold and distractor effects, DLA margin, and (letter mode) the effect and the
        activation-weighted effect on each letter."""
        out: dict[str, Any] = {}
        for role in ("good", "bad"):
            xs = [x for x in self.neurons if x.role == role]
            if not xs:
                continue
            m = lambda vals: float(sum(vals) / len(vals))
            s: dict[str, Any] = {
                "n": len(xs),
                "gold_effect": m([x.gold_effect for x in xs]),
                "distractor_effect": m([x.distractor_effect for x in xs]),
                "dla_margin": m([x.dla_margin for x in xs]),
                "share_gold_above_distractors": m([float(x.gold_effect > x.distractor_effect) for x in xs]),
            }
            letters = list(xs[0].option_effects)
            if letters:
                s["letter_effects"] = {k: m([x.option_effects[k] for x in xs]) for k in letters}
                s["letter_dla"] = {k: m([x.letter_dla[k] for x in xs]) for k in letters}
            out[role] = s
        return out


EQUAL_NOTE = (
    " Gold and distractor effects are equal for every neuron: every letter was gold equally often (cyclic "
    "proxies), so both average the same letters; the effect on each letter (effect_A, ...) tells them apart."
)


def _tensor(rows: Any, n: int) -> Tensor:
    import torch

    return torch.tensor(rows, dtype=torch.float32).reshape(-1, n)


def _fmt(v: float, spec: str) -> str:
    return "nan" if v != v else format(v, spec)


__all__ = ["Explanation", "NeuronExplanation", "PromptTrace"]
