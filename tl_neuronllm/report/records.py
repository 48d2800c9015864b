"""The data the HTML report embeds (:mod:`tl_neuronllm.report.html`), thinned to keep a 1,000-neuron report under
1 MB: one record per neuron (with its explanation), sent as one table of columns and rows; what the records share
(item texts, the traced prompts' tokens) once; numbers to :data:`DIGITS` significant digits; where a neuron fires
for the top :data:`FIRE_TOP` neurons of each role, as integers of 1/99 of its largest activation there."""

from __future__ import annotations

import json
import math
from typing import Any

from tl_neuronllm.result.neuron_result import NeuronResult

__all__ = [
    "DIGITS",
    "FIRE_TOKENS",
    "FIRE_TOP",
    "HIST_BINS",
    "TOP_TOKENS",
    "clean",
    "columns",
    "neuron_records",
    "shared_records",
    "to_json",
]

HIST_BINS = 12
#: Neurons per role whose activation on every token of the traced prompts (where it fires) the report embeds.
FIRE_TOP = 20
#: Tokens of each traced prompt the report shows, up to the answer position.
FIRE_TOKENS = 48
#: Promoted and suppressed tokens per neuron the report embeds (explanation.csv has them all).
TOP_TOKENS = 6
#: Significant digits of the numbers in the embedded data (the ACE score keeps all of its digits).
DIGITS = 4


def clean(x: Any) -> Any:
    """JSON-safe values, thinned: floats to :data:`DIGITS` significant digits, NaN / inf None, tuples lists."""
    if isinstance(x, float):
        return float(f"{x:.{DIGITS}g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def _histogram(values: list[float], correct: list[bool], bins: int = HIST_BINS) -> dict[str, Any]:
    """Shared-edge histogram of the activations on right and on wrong questions: ``bins`` equal bins from
    ``lo`` to ``hi`` (the report's script draws the edges), the counts of each."""
    if not values:
        return {"lo": None, "hi": None, "right": [], "wrong": []}
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    right, wrong = [0] * bins, [0] * bins
    for v, c in zip(values, correct):
        b = min(int((v - lo) / width), bins - 1)
        (right if c else wrong)[b] += 1
    return {"lo": lo, "hi": hi, "right": right, "wrong": wrong}


def neuron_records(result: NeuronResult, explanation: Any = None) -> list[dict[str, Any]]:
    """The rows of the interactive table: the result's neurons, with their explanation when given.

    Raises:
        ValueError: if the explanation is not of this result (other neurons).
    """
    roles = [("good", n) for n in result.good] + [("bad", n) for n in result.bad]
    if explanation is not None and [x.label for x in explanation.neurons] != [n.label for _, n in roles]:
        raise ValueError(
            "the explanation is not of this result: its neurons differ from the result's good and bad sets"
        )
    out = []
    counters = {"good": 0, "bad": 0}
    for j, (role, n) in enumerate(roles):
        counters[role] += 1
        rec: dict[str, Any] = {
            "label": n.label,
            "role": role,
            "layer": n.layer,
            "neuron": n.neuron,
            "score": n.score,
            "rank": counters[role],
            "stability": None,
        }
        if explanation is not None:
            x = explanation.neurons[j]
            acts = [float(v) for v in explanation.activations[:, j]]
            rec.update(
                stability=x.stability,
                membership=x.membership,
                gold_effect=x.gold_effect,
                distractor_effect=x.distractor_effect,
                dla_margin=x.dla_margin,
                act_right=x.act_right,
                act_wrong=x.act_wrong,
                d=x.act_effect_size,
                n_right=x.n_right,
                n_wrong=x.n_wrong,
                option_effects=x.option_effects,
                act_by_gold_letter=x.act_by_gold_letter,
                letter_dla=x.letter_dla,
                promoted=[list(t) for t in x.top_promoted[:TOP_TOKENS]],
                suppressed=[list(t) for t in x.top_suppressed[:TOP_TOKENS]],
                items=[[i, a] for i, a, _ in x.top_items],  # texts once, in the shared block
                hist=_histogram(acts, list(explanation.correct)),
            )
            if explanation.traces and counters[role] <= FIRE_TOP:
                rec.update(_fire(explanation, j))
        score = rec.pop("score")
        out.append(dict(clean(rec), score=float(score)))
    return out


def _fire(explanation: Any, j: int) -> dict[str, Any]:
    """Where neuron column ``j`` fires, thinned: per traced prompt its last :data:`FIRE_TOKENS` activations as
    integers in [-99, 99] of ``fire_scale`` (its largest ``|activation|`` there)."""
    rows = [[float(a) for a in t.acts[-FIRE_TOKENS:, j]] for t in explanation.traces]
    scale = max((abs(a) for r in rows for a in r if math.isfinite(a)), default=0.0)
    q = lambda a: round(99 * a / scale) if scale > 0 and math.isfinite(a) else 0
    return {"fire": [[q(a) for a in r] for r in rows], "fire_scale": scale}


def columns(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The records as one table, ``{"columns": [...], "rows": [[...], ...]}`` (a field a record lacks is
    ``null``): the keys once, not once per neuron; the report's script turns the rows back into records."""
    cols: list[str] = []
    for r in records:
        cols += [k for k in r if k not in cols]
    return {"columns": cols, "rows": [[r.get(c) for c in cols] for r in records]}


def to_json(x: Any, *, thin: bool = True) -> str:
    """``x`` as compact JSON that is safe inside a ``<script>`` block; ``thin``: through :func:`clean` first
    (:func:`neuron_records` are cleaned already, all but their ACE score)."""
    return json.dumps(clean(x) if thin else x, ensure_ascii=False, allow_nan=False, separators=(",", ":")).replace(
        "</", "<\\/"
    )


def shared_records(explanation: Any) -> dict[str, Any]:
    """What the neuron records share: the texts of the items they list, the traced prompts' tokens (the last
    :data:`FIRE_TOKENS`, with where they start and the answer position), and whether the gold and distractor
    direct effects are equal for every neuron (letter mode with every letter gold equally often), so that the
    cards say so instead of showing two equal numbers."""
    if explanation is None:
        return {}
    texts = {i: s for x in explanation.neurons for i, _, s in x.top_items}
    traces = []
    for t in explanation.traces:
        start = max(0, len(t.tokens) - FIRE_TOKENS)
        traces.append(
            {"item": t.item_id, "tokens": t.tokens[start:], "start": start, "site": t.site, "correct": t.correct}
        )
    equal = explanation.gold_equals_distractors
    return {"items": texts, "traces": traces, "gold_equals_distractors": equal, "fire_top": FIRE_TOP}
