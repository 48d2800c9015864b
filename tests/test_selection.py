"""Issue 12, part 5: cross-validated choice of the scoring setting on the identification items only."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import make_model, token_task

from tl_neuronllm import TaskError, identify, rescore
from tl_neuronllm.evaluation.evaluate import evaluate
from tl_neuronllm.studies.selection import CVSelection, make_folds, select_cv

GRID = [{"z": 0.02, "ambiguity": 0.0}, {"z": 0.1, "ambiguity": None}, {"z": 0.05, "ambiguity": 0.25, "k": 4}]


def test_make_folds_partition_the_items():
    folds = make_folds(11, 3, seed=4)
    assert sorted(i for f in folds for i in f) == list(range(11))
    assert sorted(len(f) for f in folds) == [3, 4, 4] and all(f == sorted(f) for f in folds)
    assert folds == make_folds(11, 3, seed=4) != make_folds(11, 3, seed=5)
    with pytest.raises(ValueError, match="n_folds = 12 is more than the 11"):
        make_folds(11, 12, seed=0)
    with pytest.raises(ValueError, match="n_folds"):
        make_folds(11, 1, seed=0)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = make_model("native", False)
    task, fmt = token_task(20)
    ident, held, demo = task.split(12, 6, n_demo=1, seed=0)
    res = identify(
        model, ident, k=8, demos=demo, token_format=fmt, method="grad_x_act", keep_attributions=True, progress=False
    )
    return model, res, ident, held, demo


@pytest.mark.slow
def test_select_cv_equals_a_naive_fold_loop(setup, tmp_path):
    model, res, ident, held, demo = setup
    cv = select_cv(model, res, ident, demos=demo, grid=GRID, n_folds=3, seed=1, n_boot=50)
    assert cv.folds == make_folds(12, 3, seed=1) and len(cv.effects) == 3 and all(len(e) == 3 for e in cv.effects)
    for s, setting in enumerate(GRID):
        for f, fold in enumerate(cv.folds):
            train = [i for i in range(12) if i not in fold]
            # naive: a result rebuilt from the training folds' attributions, evaluated on the left-out items
            r = rescore(
                dataclasses.replace(res, attributions=res.attributions[train], proxy_mask=res.proxy_mask[train]),
                **setting,
            )
            ev = evaluate(
                model,
                r,
                ident.subset(fold),
                demos=demo,
                n_random=0,
                n_boot=50,
                progress=False,
                interventions=("suppress_good", "suppress_bad"),
                allow_overlap=True,
            )
            e = cv.effects[s][f]
            # select_cv evaluates a fold's settings in one pass (evaluate_many): other batches, float rounding
            assert e["d_gold_good"] == pytest.approx(ev.row("suppress_good").delta["gold_prob"], abs=1e-6)
            assert e["d_gold_bad"] == pytest.approx(ev.row("suppress_bad").delta["gold_prob"], abs=1e-6)
            assert e["objective"] == pytest.approx(-e["d_gold_good"] + e["d_gold_bad"])
            assert (e["n_good"], e["n_bad"]) == (len(r.good), len(r.bad))
    means = [sum(e["objective"] for e in eff) / 3 for eff in cv.effects]
    assert cv.mean_objective == pytest.approx(means) and cv.best == max(range(3), key=lambda i: (means[i], -i))
    want = rescore(res, **GRID[cv.best])
    assert torch.equal(cv.result.scores, want.scores) and cv.result.good == want.good and cv.result.bad == want.bad
    assert cv.result.config["selection"]["setting"] == GRID[cv.best] and cv.setting == GRID[cv.best]
    # only identification items were evaluated
    assert cv.config["item_ids"] == res.config["task"]["item_ids"]
    assert not set(cv.config["item_ids"]) & {it.id for it in held}
    assert "| z=0.1, ambiguity=None |" in cv.to_markdown() and "**yes**" in cv.to_markdown()
    cv.save(tmp_path / "cv")
    back = CVSelection.load(tmp_path / "cv")
    assert back.effects == cv.effects and back.best == cv.best and back.result.good == cv.result.good
    good_only = select_cv(model, res, ident, demos=demo, grid=GRID, n_folds=3, seed=1, n_boot=50, objective="good")
    assert good_only.mean_objective == pytest.approx([sum(-e["d_gold_good"] for e in eff) / 3 for eff in cv.effects])


def test_select_cv_bad_input(setup):
    model, res, ident, held, demo = setup
    with pytest.raises(ValueError, match="keep_attributions=True"):
        select_cv(model, dataclasses.replace(res, attributions=None), ident, demos=demo)
    with pytest.raises(ValueError, match=r"grid\[1\] has unknown option\(s\) \['zz'\]"):
        select_cv(model, res, ident, demos=demo, grid=[{"z": 0.1}, {"zz": 1}])
    with pytest.raises(ValueError, match="grid must be a non-empty list"):
        select_cv(model, res, ident, demos=demo, grid=[])
    with pytest.raises(ValueError, match="objective"):
        select_cv(model, res, ident, demos=demo, objective="accuracy")
    with pytest.raises(TaskError, match="identification item .* is not in task"):
        select_cv(model, res, held, demos=demo)
