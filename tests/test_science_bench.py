"""benchmarks/science.py end to end on a tiny model: every method at equal K, the paired table, the controls and
the result file with the harness's schema."""

from __future__ import annotations

import json
import random

import pytest
from helpers import make_model

from tl_neuronllm import Task


def _task(name: str, n: int, seed: int, context: bool = False) -> Task:
    rng = random.Random(seed)
    colours = ["red", "blue", "green", "yellow"]
    recs = [
        {
            "id": f"{name}{i}",
            "question": f"what is the colour of the {name} number {i} ?",
            "options": rng.sample(colours, 4),
            "answer": rng.randrange(4),
            **({"context": f"the sky is blue and the sea {i} is green"} if context else {}),
        }
        for i in range(n)
    ]
    return Task.from_records(recs, name=name)


def _tiny_science(monkeypatch, n_items: int):
    """The science benchmark on a tiny model and tiny tasks (``n_items`` CommonsenseQA stand-ins)."""
    from benchmarks import harness, science

    model = make_model("hf", False)
    monkeypatch.setattr(harness, "load_model", lambda *a, **k: model)
    tasks = {
        "commonsenseqa": _task("csqa", n_items, 0),
        "openbookqa": _task("obqa", 12, 1),
        "boolq": _task("bq", 6, 2, True),
    }
    monkeypatch.setattr(harness, "load_task", lambda name, limit=None: tasks[name])
    return science


@pytest.mark.slow
def test_science_benchmark_runs_and_writes_its_file(tmp_path, monkeypatch):
    science = _tiny_science(monkeypatch, 30)
    argv = ["--n-identify", "8", "--n-heldout", "8", "--k", "6", "--n-random", "3", "--n-control", "4"]
    argv += ["--n-passages", "2", "--steps", "1", "--n-boot", "100", "--out", str(tmp_path)]
    res = science.main(argv)
    doc = json.loads((tmp_path / "science" / "commonsenseqa.json").read_text())
    assert doc["schema"] == 1 and doc["environment"]["versions"] and doc["environment"]["date"]
    assert set(res["methods"]) == set(science.METHODS) | {"ace@layer_random"}
    # every method at the same K on the same held-out items
    for name, rows in res["methods"].items():
        sg = rows["suppress_good"]
        assert sg["n_good"] == 6, name
        assert res["per_item"][name]["item_ids"] == res["per_item"]["ace"]["item_ids"]
    assert res["methods"]["ace"]["suppress_good"]["control"]["text"]["n_passages"] == 2
    assert res["methods"]["ace@layer_random"]["suppress_good"]["match_ratio"] is not None
    # the paired table holds every other method against ace, Holm-corrected
    compared = {(r["method"], r["condition"]) for r in res["paired"]["rows"]}
    assert ("mean_ig", "suppress_good") in compared and ("ace_p1", "suppress_bad") in compared
    assert all(r["p_holm"] >= r["p"] for r in res["paired"]["rows"])
    assert res["jaccard_vs_ace"]["ace:good"] == 1.0
    assert (tmp_path / "science" / "commonsenseqa.md").read_text().count("| ace | suppress_") == 2


@pytest.mark.slow
def test_science_benchmark_resumes_from_its_state_folder(tmp_path, monkeypatch):
    science = _tiny_science(monkeypatch, 24)
    argv = ["--n-identify", "6", "--n-heldout", "6", "--k", "5", "--n-random", "2", "--n-control", "3"]
    argv += ["--n-passages", "2", "--steps", "1", "--n-boot", "50", "--methods", "ace,mean_ig,grad_x_act"]
    argv += ["--no-layer-random", "--state", str(tmp_path / "state"), "--out", str(tmp_path)]
    first = science.main(argv)
    assert (tmp_path / "state" / "identify" / "ace").is_dir() and (tmp_path / "state" / "evaluate" / "ace").is_dir()
    calls: list[str] = []
    monkeypatch.setattr(science, "identify", lambda *a, **k: calls.append("identify"))
    monkeypatch.setattr(science, "evaluate_many", lambda *a, **k: calls.append("evaluate_many") or [])
    second = science.main(argv)  # every stage kept: no identification, no evaluation runs again
    assert calls == []
    assert second["seconds"]["identify"]["ace"] == "kept" and second["seconds"]["evaluate"]["evaluate_P3"] == "kept"
    for name in ("ace", "mean_ig", "grad_x_act"):
        assert second["per_item"][name] == first["per_item"][name], name
    # another --methods list shares the folder: its kept methods are reused, only a new one runs
    argv_gxa = [*argv[: argv.index("--methods") + 1], "grad_x_act", *argv[argv.index("--methods") + 2 :]]
    only = science.main(argv_gxa)  # without ace: its stages only, no tables
    assert only["seconds"]["identify"]["grad_x_act"] == "kept" and only["evaluated"] == ["grad_x_act"] and calls == []
    with pytest.raises(SystemExit, match=r"holds another run's stages \(differs in \['k'\]\)"):
        science.main([*argv[:4], "--k", "6", *argv[6:]])


@pytest.mark.slow
def test_science_merge_adds_a_state_folders_methods_and_equals_one_run_with_them(tmp_path, monkeypatch):
    science = _tiny_science(monkeypatch, 24)
    argv = ["--n-identify", "6", "--n-heldout", "6", "--k", "5", "--n-random", "2", "--n-control", "3"]
    argv += ["--n-passages", "2", "--steps", "1", "--n-boot", "50", "--random-methods", "ace", "--no-layer-random"]
    state = tmp_path / "state"
    saved = tmp_path / "saved" / "science" / "commonsenseqa.json"
    science.main([*argv, "--methods", "ace,mean_ig", "--state", str(state), "--out", str(tmp_path / "saved")])
    science.main([*argv, "--methods", "grad_x_act", "--state", str(state)])  # another session: its stages only
    before = json.loads(saved.read_text())
    assert "grad_x_act" not in before["results"]["per_item"]
    assert science.main(["--merge", str(state), str(saved)]) == {"merged": ["grad_x_act"]}
    merged = json.loads(saved.read_text())
    # the reference: one run with all three methods over the same (now complete) state folder
    science.main([*argv, "--methods", "ace,mean_ig,grad_x_act", "--state", str(state), "--out", str(tmp_path)])
    res, ref = merged["results"], json.loads((tmp_path / "science" / "commonsenseqa.json").read_text())["results"]
    for key in ("per_item", "methods", "paired", "paired_accuracy", "paired_markdown", "jaccard_vs_ace"):
        assert json.dumps(res[key], sort_keys=True) == json.dumps(ref[key], sort_keys=True), key  # NaN-safe
    assert {r["method"] for r in res["paired"]["rows"]} == {"mean_ig", "grad_x_act"}
    assert res["layer0_share"] == ref["layer0_share"] and res["identification_stats"] == ref["identification_stats"]
    assert merged["merged"][0]["methods"] == ["grad_x_act"] and merged["environment"] == before["environment"]
    assert "| grad_x_act | suppress_good |" in saved.with_suffix(".md").read_text()
    assert science.main(["--merge", str(state), str(saved)]) == {"merged": []}  # nothing new: file unchanged
    assert json.loads(saved.read_text()) == merged
    # a second merge: the page's header names both, the JSON keeps both records
    science.main([*argv, "--methods", "activation_contrast", "--state", str(state)])
    assert science.main(["--merge", str(state), str(saved)]) == {"merged": ["activation_contrast"]}
    head = saved.with_suffix(".md").read_text().splitlines()[0]
    assert "grad_x_act merged" in head and "activation_contrast merged" in head, head
    assert [m["methods"] for m in json.loads(saved.read_text())["merged"]] == [["grad_x_act"], ["activation_contrast"]]
    # bad input: not a state folder, another run's stages, other baseline values
    with pytest.raises(SystemExit, match="is not a --state folder"):
        science.merge(str(tmp_path / "saved"), str(saved))
    other = tmp_path / "other"
    other.mkdir()
    (other / "args.json").write_text(json.dumps({**json.loads((state / "args.json").read_text()), "k": 6}))
    with pytest.raises(SystemExit, match=r"holds another run's stages than .* \(differs in \['k'\]\)"):
        science.merge(str(other), str(saved))
    for name in ("grad_x_act", "mean_ig"):
        del merged["results"]["per_item"][name]
    merged["results"]["per_item"]["ace"]["conditions"]["baseline"]["gold_prob"][0] += 0.01
    saved.write_text(json.dumps(merged))
    with pytest.raises(SystemExit, match=r"mean_ig's baseline gold probabilities differ from .* by 0\.01"):
        science.merge(str(state), str(saved))


@pytest.mark.slow
def test_science_compares_a_smaller_method_with_ace_at_its_own_size_and_merges_it(tmp_path, monkeypatch):
    science = _tiny_science(monkeypatch, 24)
    argv = ["--n-identify", "6", "--n-heldout", "6", "--k", "40", "--n-random", "2", "--n-control", "3"]
    argv += ["--n-passages", "2", "--steps", "1", "--n-boot", "50", "--random-methods", "ace", "--no-layer-random"]
    argv += ["--methods", "ace,knowledge_neurons,qr_neuron", "--state", str(tmp_path / "state")]
    res = science.main([*argv, "--out", str(tmp_path)])
    sizes = {n: rows["suppress_good"]["n_good"] for n, rows in res["methods"].items()}
    small = {n: s for n, s in sizes.items() if n in ("knowledge_neurons", "qr_neuron") and s < 40}
    assert small, f"the tiny setup must give a method below K for this test: {sizes}"
    for size in small.values():
        assert sizes[f"ace@k{size}"] == size  # the default's top `size` good neurons, evaluated on the same items
        assert "suppress_bad" not in res["per_item"][f"ace@k{size}"]["conditions"]
    pairs = {(r["method"], r["reference"]) for r in res["paired_own_k"]["rows"]}
    assert pairs == {(n, f"ace@k{s}") for n, s in small.items()}
    assert all(r["reference"] == "ace" for r in res["paired"]["rows"])  # the K table compares with ace only
    md = (tmp_path / "science" / "commonsenseqa.md").read_text()
    assert "fewer than K good neurons" in md
    # a saved run without the own-size stage gets it from --own-k-only and --merge, equal to the one run
    path = tmp_path / "science" / "commonsenseqa.json"
    whole = json.loads(path.read_text())
    doc = json.loads(path.read_text())
    for n in [f"ace@k{s}" for s in set(small.values())]:
        del doc["results"]["per_item"][n], doc["results"]["methods"][n]
    for key in ("paired_own_k", "paired_own_k_markdown"):
        del doc["results"][key]
    path.write_text(json.dumps(doc))
    science.main([*argv, "--own-k-only"])  # every stage kept: nothing runs, no tables
    assert science.main(["--merge", str(tmp_path / "state"), str(path)])["merged"] == sorted(
        f"ace@k{s}" for s in set(small.values())
    )
    merged = json.loads(path.read_text())["results"]
    for key in ("per_item", "methods", "paired", "paired_own_k", "paired_own_k_markdown"):
        assert json.dumps(merged[key], sort_keys=True) == json.dumps(whole["results"][key], sort_keys=True), key
