"""tl_neuronllm.evaluation.stats: the one accuracy implementation against naive loops (and the statistics' edge cases)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tl_neuronllm.evaluation.stats import accuracy_stats, item_accuracy, score_predictions, spread


@dataclass
class _Q:
    gold: int


def _random_answers(seed: int, n_items: int = 40):
    """Items with 1-4 proxies of 2-5 options each, some probabilities tied, as float32 tensors."""
    rng = np.random.default_rng(seed)
    queries, probs = [], []
    for _ in range(n_items):
        qs, ps = [], []
        for _ in range(int(rng.integers(1, 5))):
            n_opt = int(rng.integers(2, 6))
            p = rng.dirichlet(np.ones(n_opt)).astype(np.float32)
            if rng.random() < 0.2:  # a tie for the first place: the first option wins
                p[:] = 1.0 / n_opt
            qs.append(_Q(int(rng.integers(0, n_opt))))
            ps.append(torch.tensor(p))
        queries.append(qs)
        probs.append(ps)
    return queries, probs


def _naive(queries, probs):
    """The plain loop: argmax (first of ties), gold probability, all-proxies-right per item."""
    right, gold_p, consistent = [], [], []
    for qs, ps in zip(queries, probs):
        ok = []
        for q, p in zip(qs, ps):
            vals = [float(x) for x in p]
            best = max(range(len(vals)), key=lambda i: (vals[i], -i))
            ok.append(best == q.gold)
            gold_p.append(vals[q.gold])
        right += ok
        consistent.append(all(ok))
    return {
        "accuracy": sum(right) / len(right),
        "gold_prob": float(np.mean(gold_p)),
        "consistent_accuracy": sum(consistent) / len(consistent),
    }


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_stats_equals_the_naive_loop(seed):
    queries, probs = _random_answers(seed)
    want = _naive(queries, probs)
    got = item_accuracy(queries, probs)
    assert got == want  # exact: the same numbers, not just close
    flat_p = [p for ps in probs for p in ps]
    gold = [q.gold for qs in queries for q in qs]
    item_of = [i for i, qs in enumerate(queries) for _ in qs]
    assert accuracy_stats(flat_p, gold, item_of) == want
    # the evaluation's per-condition scoring gives the same three numbers
    sc = score_predictions(flat_p, gold, item_of)
    assert {k: sc.metrics[k] for k in want} == want
    # the identification statistics' old loop (a Python sum of the gold probabilities) agrees to rounding
    assert got["gold_prob"] == pytest.approx(sum(float(p[g]) for p, g in zip(flat_p, gold)) / len(gold), rel=1e-13)


def test_accuracy_stats_hand_case_and_edges():
    probs = [[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.3, 0.7]]
    # item 0: ties go to option 0 (right), option 1 (right); item 1: wrong, right; item 2: no questions
    got = accuracy_stats(probs, [0, 1, 1, 1], [0, 0, 1, 1], n_items=3)
    assert got == {"accuracy": 0.75, "gold_prob": (0.5 + 0.8 + 0.1 + 0.7) / 4, "consistent_accuracy": 1 / 3}
    assert accuracy_stats([], [], []) == {"accuracy": 0.0, "gold_prob": 0.0, "consistent_accuracy": 0.0}
    with pytest.raises(ValueError, match="differ in length: 2, 1, 2"):
        accuracy_stats(probs[:2], [0], [0, 0])
    with pytest.raises(ValueError, match="item 0 has 2 questions but 1 answers"):
        item_accuracy([[_Q(0), _Q(1)]], [[torch.tensor([0.6, 0.4])]])
    with pytest.raises(ValueError, match="2 items of questions but 1 of answers"):
        item_accuracy([[_Q(0)], [_Q(1)]], [[torch.tensor([0.6, 0.4])]])
    with pytest.raises(ValueError, match="at least one question"):
        score_predictions([], [], [])


def test_spread_of_one_and_several_values():
    assert spread([0.25]) == {"mean": 0.25, "sd": 0.0, "min": 0.25, "max": 0.25, "values": [0.25]}
    s = spread([1.0, 2.0, 4.0])
    assert s["mean"] == 7 / 3 and s["sd"] == pytest.approx(np.std([1, 2, 4], ddof=1)) and (s["min"], s["max"]) == (1, 4)
