"""tl_neuronllm.evaluation.conditions: the Condition record and the plan of an evaluation's conditions."""

from __future__ import annotations

import pytest
import torch

from tl_neuronllm.evaluation.conditions import (
    INTERVENTIONS,
    Condition,
    matched_random_sets,
    plan_conditions,
)
from tl_neuronllm.result.interventions import Intervention
from tl_neuronllm.result.neuron_result import build_result
from tl_neuronllm.scoring.ace import ACEState


def _result(good, bad, L=3, d=12, stats=None):
    scores = torch.zeros(L, d)
    for i, (layer, n) in enumerate(good):
        scores[layer, n] = 1.0 + 0.01 * i
    for i, (layer, n) in enumerate(bad):
        scores[layer, n] = -1.0 - 0.01 * i
    k = max(len(good), len(bad), 1)
    return build_result(scores, ACEState.zeros(L, d), k, config={"hook": "hook_post"}, stats=stats)


def _old_plan(result, interventions, factor, positions, n_random, seed):
    """The parallel lists and ``"name@random<s>"`` keys the evaluation built before the Condition record."""
    ident = {"good": [(n.layer, n.neuron) for n in result.good], "bad": [(n.layer, n.neuron) for n in result.bad]}
    counts = {"good": result.layer_counts("good"), "bad": result.layer_counts("bad")}
    random_sets = [
        matched_random_sets(counts, result.d_mlp, seed=seed + s, exclude=result.mask("both"))[0]
        for s in range(n_random)
    ]

    def ivs(neurons, spec):
        return [Intervention(tuple(neurons[r]), m, factor, None, positions) for r, m in spec if neurons[r]]

    names, conds, na = ["baseline"], [[]], {}
    for name in interventions:
        spec = INTERVENTIONS[name][1]
        missing = [r for r in {r for r, _ in spec} if not ident[r]]
        if missing:
            na[name] = sorted(missing)
            continue
        names.append(name)
        conds.append(ivs(ident, spec))
        for s, sets in enumerate(random_sets):
            names.append(f"{name}@random{s}")
            conds.append(ivs(sets, spec))
    return names, conds, na


@pytest.mark.parametrize("positions", ["site", "all"])
def test_plan_keys_and_interventions_equal_the_old_parallel_lists(positions):
    result = _result([(0, 1), (0, 5), (2, 3)], [(1, 2), (2, 7)])
    names = list(INTERVENTIONS)
    plan = plan_conditions(result, names, factor=3.0, positions=positions, n_random=3, seed=5)
    old_names, old_conds, old_na = _old_plan(result, names, 3.0, positions, 3, 5)
    assert [c.key for c in plan.conditions] == old_names
    assert [list(c.interventions) for c in plan.conditions] == old_conds
    assert plan.unavailable == {} == old_na
    assert plan.seeds == [5, 6, 7] and plan.excluded_identified
    # the record carries what the key encoded, and the rest
    c = plan.conditions[plan.index("enhance_bad_suppress_good", 2)]
    assert (c.name, c.random_index, c.seed, c.is_random) == ("enhance_bad_suppress_good", 2, 7, True)
    assert c.key == "enhance_bad_suppress_good@random2" and c.paper_name == "Degrade"
    assert c.actions == (("bad", "scale"), ("good", "zero")) and c.roles == {"good", "bad"}
    assert [iv.mode for iv in c.interventions] == ["scale", "zero"] and c.interventions[0].factor == 3.0
    ident = plan.conditions[plan.index("suppress_good")]
    assert not ident.is_random and ident.neurons["good"] == ((2, 3), (0, 5), (0, 1))  # best-scored first
    assert plan.random_indices("suppress_good") == [plan.index("suppress_good", s) for s in range(3)]
    base = plan.conditions[0]
    assert base.key == "baseline" and base.interventions == () and base.description == "baseline"


def test_plan_without_bad_set_records_why():
    result = _result([(0, 1), (1, 4)], [], stats={"positive_only": True})
    result.bad = []
    plan = plan_conditions(result, list(INTERVENTIONS), factor=2.0, positions="site", n_random=2, seed=0)
    assert [c.key for c in plan.conditions] == [
        "baseline",
        "suppress_good",
        "suppress_good@random0",
        "suppress_good@random1",
    ]
    assert set(plan.unavailable) == {"suppress_bad", "enhance_good_suppress_bad", "enhance_bad_suppress_good"}
    assert all(v == "positive-only method: no bad set" for v in plan.unavailable.values())
    result.stats["positive_only"] = False
    plan = plan_conditions(result, ["suppress_bad"], factor=2.0, positions="site", n_random=0, seed=0)
    assert plan.unavailable == {"suppress_bad": "no bad neurons"} and len(plan.conditions) == 1


def test_condition_validation_and_lookup_errors():
    with pytest.raises(ValueError, match="unknown condition 'nope'"):
        Condition("nope")
    with pytest.raises(ValueError, match="both random_index and seed"):
        Condition("suppress_good", {"good": [(0, 1)]}, random_index=1)
    plan = plan_conditions(
        _result([(0, 1)], [(1, 1)]), ["suppress_good"], factor=2, positions="site", n_random=1, seed=0
    )
    with pytest.raises(KeyError, match="random set 4"):
        plan.index("suppress_good", 4)
    with pytest.raises(ValueError, match="unknown intervention"):
        plan_conditions(_result([(0, 1)], []), ["x"], factor=2, positions="site", n_random=0, seed=0)
