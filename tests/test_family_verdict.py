"""benchmarks/family_verdict.py: interval wins / ties / losses, runs of one split merged, cv_real rows joined."""

from __future__ import annotations

from helpers import load_benchmark


def _fv():
    return load_benchmark("family_verdict")


def _method(name, good, bad=None, random_bad=0.0):
    rows = [{"condition": "baseline", "available": True, "accuracy": 0.5, "d_acc": None}]
    rows.append({"condition": "suppress_good", "available": True, "d_gold": good[0], "d_gold_ci": good[1:]})
    rows[-1]["d_acc"] = 0.0
    if bad is not None:
        rows.append(
            {
                "condition": "suppress_bad",
                "available": True,
                "d_gold": bad[0],
                "d_gold_ci": bad[1:],
                "d_acc": 0.0,
                "random_d_gold": random_bad,
            }
        )
    return {"method": name, "rows": rows}


def _run(task, n, methods):
    return {"task": f"smollm2:{task}", "mode": "cloze", "n_heldout": n, "methods": methods}


def test_compare_by_interval_overlap():
    fv = _fv()
    assert fv.compare([-0.3, -0.2], [-0.1, 0.0]) == "win"
    assert fv.compare([-0.1, 0.0], [-0.3, -0.2]) == "loss"
    assert fv.compare([-0.2, -0.1], [-0.15, 0.0]) == "tie"


def test_merge_and_judge_another_default():
    fv = _fv()
    first = _run(
        "commonsenseqa",
        200,
        [
            _method("neuronllm (defaults)", [-0.04, -0.05, -0.03], [0.01, -0.01, 0.02]),
            _method("grad x act", [-0.04, -0.06, -0.02]),
        ],
    )
    later = _run("commonsenseqa", 200, [_method(fv.SHIPPED, [-0.12, -0.16, -0.08], [0.02, 0.01, 0.03])])
    other_split = _run("commonsenseqa", 40, [_method(fv.SHIPPED, [0.0, -0.1, 0.1])])
    merged = fv.merge_runs([first, later, other_split], [])
    assert [len(r["methods"]) for r in merged] == [3, 1]  # one run per split; the 40-item run stays apart
    v = fv.verdict(merged[0], fv.SHIPPED)
    assert v["good"]["grad x act"]["result"] == "win" and v["good"]["neuronllm (defaults)"]["result"] == "win"
    assert v["good_no_loss"] and v["bad"]["beats_random"]  # [0.01, 0.03] lies above the random mean 0.0
    old = fv.verdict(merged[0])
    assert old["good"][fv.SHIPPED]["result"] == "loss" and not old["bad"]["beats_random"]
    assert fv.verdict(merged[1]) is None  # no row of the judged default there
    assert f"The default here: **{fv.SHIPPED}**" in fv.markdown([v], fv.SHIPPED)


def test_cv_real_rows_join_their_split_under_the_shipped_label_only_for_that_setting():
    fv = _fv()
    cond = {"d_gold": -0.1, "d_gold_ci": [-0.2, -0.05], "d_acc": -0.1, "random_d_gold": 0.0}
    variant = {"base_accuracy": 0.4, **dict.fromkeys(fv._CV_CONDS, cond)}
    cv = {
        "task": "boolq",
        "n_heldout": 200,
        "cv_setting": {"z": 0.05, "ambiguity": 0.25},
        "variants": {"shipped default (z=1%, strict filter)": variant, "CV-chosen (z=0.05, ambiguity=0.25)": variant},
    }
    run = _run("boolq", 200, [_method("neuronllm (defaults)", [-0.03, -0.04, -0.01])])
    merged = fv.merge_runs([run], [cv, {**cv, "task": "imdb"}])
    names = [m["method"] for m in merged[0]["methods"]]
    assert names == ["neuronllm (defaults)", "CV-chosen (z=0.05, ambiguity=0.25) (select_cv)"]
    cv["cv_setting"] = {"z": 0.1, "ambiguity": None}
    assert [m["method"] for m in fv.cv_real_methods(cv)] == [fv.SHIPPED]
