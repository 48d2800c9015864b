"""benchmarks/controllability.py on the small trained testbed: the rescored ablation rows share one
attribution run and equal fresh identify runs, and the md / json / png come out (and merge back)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from tl_neuronllm import identify
from tl_neuronllm.testbed import load_testbed

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "controllability.py"


def _bench():
    spec = importlib.util.spec_from_file_location("controllability_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    out = tmp_path / "ctl"
    bench.write([run], out, {"date": "test", "torch": torch.__version__, "wall_seconds": 1.0})
    md = out.with_suffix(".md").read_text()
    assert "| testbed:facts-small letter | ablation: P=1 (no augmentation) |" in md and "| n/a |" in md
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    # merging two shards gives one table with both runs and summed wall time
    merged = tmp_path / "merged"
    monkeypatch.setattr(
        "sys.argv",
        [
            "controllability.py",
            "--merge",
            str(out.with_suffix(".json")),
            str(out.with_suffix(".json")),
            "--out",
            str(merged),
        ],
    )
    bench.main()
    data = json.loads(merged.with_suffix(".json").read_text())
    assert len(data["runs"]) == 2 and data["wall_seconds"] == 2.0
