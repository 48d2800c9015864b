"""benchmarks.controllability on the small trained testbed: the rescored ablation rows share one
attribution run and equal fresh identify runs, and the md / json / png come out (and merge back)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import load_benchmark

from tl_neuronllm import identify
from tl_neuronllm.studies.testbed import load_testbed


def _bench():
    return load_benchmark("controllability")


@pytest.mark.slow
def test_controllability_rows_and_outputs(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    bench = _bench()
    tb = load_testbed("facts-small")
    ident, held, demos = tb.splits(0)
    base = {"token_format": tb.token_format, "n_shots": 1}
    only = {"neuronllm z=0.05 amb=0.25", "ablation: P=1 (no augmentation)", "sweep: K=12", "knowledge neurons"}
    methods = bench.run_task(tb.model, ident, held, demos, 25, base, "testbed", "letter", True, 1, only)
    assert [m["method"] for m in methods] == [
        "neuronllm z=0.05 amb=0.25",
        "ablation: P=1 (no augmentation)",
        "sweep: K=12",
        "knowledge neurons",
    ]
    # the scoring ablations come from one shared attribution run ...
    assert methods[0]["identify_seconds"] == methods[1]["identify_seconds"] == methods[2]["identify_seconds"]
    # ... and select what a fresh identify with those options selects
    fresh = identify(tb.model, ident, k=25, demos=demos, progress=False, z=0.05, ambiguity=0.25, n_proxies=1, **base)
    assert methods[1]["n_good"] == len(fresh.good) and methods[1]["n_bad"] == len(fresh.bad)
    assert methods[2]["k"] == 12 and methods[2]["n_good"] <= 12
    assert methods[3]["n_bad"] == 0 and not methods[3]["rows"][2]["available"]  # KN: positive only
    good = next(r for r in methods[0]["rows"] if r["condition"] == "suppress_good")
    assert good["d_acc"] is not None and good["d_acc_ci"][0] <= good["d_acc"] <= good["d_acc_ci"][1]

    run = {
        "task": "testbed:facts-small",
        "mode": "letter",
        "k": 25,
        "n_identify": len(ident),
        "n_heldout": len(held),
        "methods": methods,
        "base_accuracy": methods[0]["rows"][0]["accuracy"],
    }
    meta = {"date": "test", "torch": torch.__version__, "wall_seconds": 1.0}
    out = bench.write([run], meta, run="ctl", out=tmp_path).with_suffix("")  # tmp_path/controllability/ctl
    md = out.with_suffix(".md").read_text()
    assert "| testbed:facts-small letter | ablation: P=1 (no augmentation) |" in md and "| n/a |" in md
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    # merging two shards gives one table with both runs and summed wall time
    merged = tmp_path / "controllability" / "merged"
    monkeypatch.setattr(
        "sys.argv",
        [
            "controllability.py",
            "--merge",
            str(out.with_suffix(".json")),
            str(out.with_suffix(".json")),
            "--out",
            str(tmp_path),
        ],
    )
    bench.main()
    data = json.loads(merged.with_suffix(".json").read_text())["results"]  # the harness's schema
    assert len(data["runs"]) == 2 and data["wall_seconds"] == 2.0


# ------------------------------------------------------------------------------------------------
# --instances: independently trained copies, their spread, and wins that hold on every instance
# ------------------------------------------------------------------------------------------------
def _row(cond, d_gold, ci=None, rnd=-0.01, available=True):
    return {
        "condition": cond,
        "available": available,
        "d_acc": None if not available else d_gold * 2,
        "d_acc_ci": None if not available else [d_gold * 2 - 0.1, d_gold * 2 + 0.1],
        "d_gold": None if not available else d_gold,
        "d_gold_ci": None if not available else (ci or [d_gold - 0.05, d_gold + 0.05]),
        "random_d_acc": rnd * 2,
        "random_d_gold": rnd,
        "accuracy": 1.0,
        "gold_prob": 0.9,
        "changed": 0.1,
        "n_good": 3,
        "n_bad": 2,
    }


def _run(inst, effects):
    """effects: method -> (suppress_good d_gold, suppress_bad d_gold or None)."""
    methods = []
    for name, (good, bad) in effects.items():
        rows = [{"condition": "baseline", "available": True, "accuracy": 1.0}, _row("suppress_good", good)]
        rows.append(_row("suppress_bad", 0.0 if bad is None else bad, available=bad is not None))
        methods.append(
            {"method": name, "n_good": 3, "n_bad": 0 if bad is None else 2, "rows": rows, "identify_seconds": 0.0}
        )
    return {
        "task": f"testbed:tb#{inst}",
        "testbed": "tb",
        "instance": inst,
        "mode": "letter",
        "k": 3,
        "n_identify": 4,
        "n_heldout": 5,
        "methods": methods,
        "base_accuracy": 1.0,
    }


DEF = "neuronllm (defaults: z=1%, strict filter)"


def _runs():
    return [
        _run(2, {DEF: (-0.30, 0.02), "knowledge neurons": (-0.10, None), "grad x act": (-0.29, 0.05)}),
        _run(0, {DEF: (-0.20, 0.05), "knowledge neurons": (-0.05, None), "grad x act": (-0.25, 0.01)}),
        _run(1, {DEF: (-0.25, 0.06), "knowledge neurons": (-0.05, None), "grad x act": (-0.20, 0.00)}),
    ]


def test_across_instances_spread_and_order():
    bench = _bench()
    across_instances = bench.ci.across_instances

    agg = across_instances(_runs())
    e = next(x for x in agg if x["method"] == DEF and x["condition"] == "suppress_good")
    assert e["instances"] == [0, 1, 2]  # sorted by instance, whatever the run order
    assert e["d_gold"] == [-0.20, -0.25, -0.30]
    st = e["stats"]["d_gold"]
    assert st["mean"] == pytest.approx(-0.25) and st["sd"] == pytest.approx(0.05)
    assert (st["min"], st["max"]) == (-0.30, -0.20)
    assert e["stats"]["random_d_gold"]["mean"] == pytest.approx(-0.01)
    kn_bad = next(x for x in agg if x["method"] == "knowledge neurons" and x["condition"] == "suppress_bad")
    assert kn_bad["available"] is False and "stats" not in kn_bad
    with pytest.raises(ValueError, match="repeated instances"):
        across_instances(_runs() + [_run(0, {DEF: (-0.2, 0.0)})])
    assert bench.parse_args(["--instances", "2"]).instances == 2


def test_verdict_needs_every_instance():
    bench = _bench()
    across_instances, verdict = bench.ci.across_instances, bench.ci.verdict

    agg = across_instances(_runs())
    # good set: lower is better; the default beats knowledge neurons on all three instances
    v = verdict(agg, "tb", "suppress_good", DEF, "knowledge neurons")
    assert v["result"] == "win" and v["diffs"] == pytest.approx([0.15, 0.20, 0.20])
    assert v["separated"] == 3  # intervals +-0.05 around points 0.10+ apart
    assert verdict(agg, "tb", "suppress_good", "knowledge neurons", DEF)["result"] == "loss"
    # against grad x act it wins on two instances and loses on one: a tie
    v = verdict(agg, "tb", "suppress_good", DEF, "grad x act")
    assert v["result"] == "tie" and v["diffs"] == pytest.approx([-0.05, 0.05, 0.01]) and v["separated"] == 0
    # bad set: higher is better; 0.05/0.06/0.02 vs 0.01/0.00/0.05 -> mixed
    assert verdict(agg, "tb", "suppress_bad", DEF, "grad x act")["result"] == "tie"
    # against its matched random sets (-0.01 on every instance); the interval must exclude the mean
    v = verdict(agg, "tb", "suppress_bad", DEF, "random")
    assert v["result"] == "win" and v["separated"] == 2  # 0.02 +- 0.05 covers -0.01
    assert verdict(agg, "tb", "suppress_bad", "knowledge neurons", "random") is None
    assert verdict(agg, "tb", "suppress_bad", DEF, "knowledge neurons") is None
    with pytest.raises(KeyError):
        verdict(agg, "tb", "baseline", DEF, "random")


def test_instances_markdown_tables(tmp_path):
    bench = _bench()
    instances_markdown = bench.ci.instances_markdown

    md = "\n".join(instances_markdown(_runs()))
    assert "| neuronllm (defaults: z=1%, strict filter) | suppress_good | 3/2 3/2 3/2 |" in md
    assert "-0.250 ± 0.050 (-0.300 … -0.200) | -0.200 [-0.25, -0.15], -0.250 [-0.30, -0.20]" in md
    assert "| tb | suppress_good | neuronllm (defaults: z=1%, strict filter) | tie (0/3) | n/a | win (3/3) |" in md
    assert "vs knowledge neurons: 1 W / 0 T / 0 L" in md
    assert instances_markdown(_runs()[:1]) == []  # one instance: no across-instance section
    meta = {"date": "test", "torch": "x", "machine": "m", "versions": {"numpy": "1"}}
    out = bench.write(_runs(), meta, run="inst", out=tmp_path).with_suffix("")
    text = out.with_suffix(".md").read_text()
    assert "Machine: m; numpy 1; ? torch thread(s)." in text and "## Across independently trained instances" in text


def test_testbed_runs_train_one_config_seed_per_instance(monkeypatch):
    torch.set_num_threads(1)
    bench = _bench()
    import tl_neuronllm.studies.testbed as testbed

    real = testbed.load_testbed("facts-small")
    seen = []

    def fake_load(cfg):
        seen.append(cfg)
        return real

    monkeypatch.setattr(testbed, "load_testbed", fake_load)
    runs = bench.testbed_runs(["facts-small"], 2, 25, 1, {"grad x act"})
    assert [c.seed for c in seen] == [0, 1] and seen[0] == testbed.TESTBEDS["facts-small"]
    assert [(r["task"], r["testbed"], r["instance"], r["seed"]) for r in runs] == [
        ("testbed:facts-small#0", "facts-small", 0, 0),
        ("testbed:facts-small#1", "facts-small", 1, 1),
    ]
    assert runs[0]["train"]["converged"] is True
    # the same model twice: the same numbers (evaluation is deterministic given the weights)
    strip = lambda ms: [{k: v for k, v in m.items() if k != "identify_seconds"} for m in ms]
    assert strip(runs[0]["methods"]) == strip(runs[1]["methods"])


def test_testbed_repro_run_specs():
    repro = load_benchmark("testbed_repro")
    assert repro.parse_runs("a:1, b:2:X=1+Y=avx2") == [("a", 1, {}), ("b", 2, {"X": "1", "Y": "avx2"})]
    assert [r[1] for r in repro.parse_runs(repro.DEFAULT_RUNS)] == [1, 1, 2, 2, 1, 1]
    with pytest.raises(ValueError, match="is not ENV=VALUE"):
        repro.parse_runs("a:1:X")
    with pytest.raises(ValueError, match="expected label:threads"):
        repro.parse_runs("a")
