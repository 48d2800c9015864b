"""Does a testbed train to the same weights twice? Thread count and CPU kernels against the weights and the benchmark.

    python -m benchmarks testbed_repro                          # facts-small, the default set of runs
    python -m benchmarks testbed_repro --runs "a:1,b:1,c:2"     # label:threads[:ENV=VALUE[+ENV=VALUE]]

Each run trains the testbed from scratch in a fresh process (``train_testbed(cfg, num_threads=threads)``,
with the given environment variables set before torch is imported, e.g. ``ATEN_CPU_CAPABILITY=avx2`` for
the vectorised kernels of a CPU without AVX-512, ``MKL_CBWR=AVX2`` for MKL's code path, or this script's
``TORCH_MKLDNN=0`` to switch oneDNN off), saves the
weights, then runs some methods of ``benchmarks/controllability.py`` on it with 1 torch thread (same splits
as the benchmark). The parent compares every run's weights with the first run's (bitwise, max |difference|)
and prints the held-out effects side by side. Writes ``results/testbed_repro/<run>.{md,json}`` (run: the
testbed's name).

Internals used: ``studies.testbed.TESTBEDS`` / ``make_task`` / ``train_testbed`` (training a testbed from
scratch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import controllability as ctl
from benchmarks import harness

DEFAULT_RUNS = (
    "1 thread:1,1 thread again:1,2 threads:2,2 threads again:2,"
    "1 thread ATEN avx2:1:ATEN_CPU_CAPABILITY=avx2,1 thread MKL avx2:1:MKL_CBWR=AVX2"
)
METHODS = (
    "neuronllm (defaults: z=1%, strict filter)",
    "neuronllm z=0.05 amb=0.25",
    "ablation: no ambiguity filter",
    "grad x act",
    "knowledge neurons",
)


def parse_runs(spec: str) -> list[tuple[str, int, dict[str, str]]]:
    """``label:threads[:ENV=VALUE[+ENV=VALUE]]`` entries, comma-separated."""
    out = []
    for entry in [e for e in spec.split(",") if e.strip()]:
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"run {entry!r}: expected label:threads[:ENV=VALUE[+ENV=VALUE]]")
        env = {}
        if len(parts) == 3:
            for kv in parts[2].split("+"):
                k, sep, v = kv.partition("=")
                if not sep or not k:
                    raise ValueError(f"run {entry!r}: {kv!r} is not ENV=VALUE")
                env[k] = v
        out.append((parts[0].strip(), int(parts[1]), env))
    return out


def train_one(testbed: str, threads: int, folder: Path) -> None:
    """Child process: train, save weights and stats, run the methods with 1 thread."""
    import torch
    from safetensors.torch import save_file

    from tl_neuronllm.studies.testbed import TESTBEDS, make_task, train_testbed

    torch.set_num_threads(1)
    if os.environ.get("TORCH_MKLDNN") == "0":  # this script's switch: oneDNN off (no env var of torch's own)
        torch.backends.mkldnn.enabled = False
    cfg = TESTBEDS[testbed]
    t0 = time.perf_counter()
    model, stats = train_testbed(cfg, num_threads=threads)
    stats["wall_seconds"] = time.perf_counter() - t0
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "weights.safetensors"))
    task, fmt = make_task(cfg)
    ident, held, demos = task.split(0.4, None, n_demo=4, seed=0)  # = Testbed.splits(0)
    base = {"token_format": fmt, "n_shots": 1}
    methods = ctl.run_task(model, ident, held, demos, 25, base, "testbed", "letter", False, 5, set(METHODS))
    stats["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    stats.pop("probe_history", None)
    (folder / "run.json").write_text(json.dumps({"stats": stats, "methods": methods}, indent=1))


def compare(folders: list[Path]) -> list[dict[str, Any]]:
    """Per run: weight hash, bitwise equality with the first run and max |difference| per tensor kind."""
    from safetensors.torch import load_file

    ref = load_file(str(folders[0] / "weights.safetensors"))
    out = []
    for f in folders:
        sd = load_file(str(f / "weights.safetensors"))
        h = hashlib.sha256()
        for k in sorted(sd):
            h.update(sd[k].numpy().tobytes())
        diffs = {k: float((sd[k].double() - ref[k].double()).abs().max()) for k in sorted(sd)}
        out.append(
            {
                "sha256": h.hexdigest()[:16],
                "bitwise_equal_first": all(bool((sd[k] == ref[k]).all()) for k in sd),
                "max_abs_diff": max(diffs.values()),
                "max_abs_diff_mlp_out": max(v for k, v in diffs.items() if "mlp" in k and "out" in k.lower()),
            }
        )
    return out


def to_markdown(testbed: str, runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# Testbed training reproducibility: {testbed}",
        "",
        f"{meta['date']}, {meta['machine']}, torch {meta['torch']}, transformer-lens {meta['transformer_lens']}. "
        "Every run trains from scratch in a fresh process; the methods then run with 1 torch thread on "
        "`splits(0)` (k = 25, 5 random sets). Weights are compared with the first run's.",
        "",
        "| run | train threads | env | kernels | steps | final loss | weights (sha256) | = first run | "
        "max abs diff | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r["stats"]
        env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "-"
        lines.append(
            f"| {r['label']} | {r['threads']} | {env} | {s['cpu_capability']} | {s['steps']} | "
            f"{s['final_loss']:.4f} | {r['sha256']} | {'yes' if r['bitwise_equal_first'] else 'no'} | "
            f"{r['max_abs_diff']:.3g} | {s['wall_seconds']:.0f} |"
        )
    lines += ["", "Held-out Δ accuracy (Δ gold probability) when suppressing the set:", ""]
    head = "| method | condition | " + " | ".join(r["label"] for r in runs) + " |"
    lines += [head, "|---|---|" + "---|" * len(runs)]
    for mi, m in enumerate(runs[0]["methods"]):
        for cond in ("suppress_good", "suppress_bad"):
            cells = []
            for r in runs:
                row = next(x for x in r["methods"][mi]["rows"] if x["condition"] == cond)
                cells.append("n/a" if not row["available"] else f"{row['d_acc']:+.3f} ({row['d_gold']:+.3f})")
            lines.append(f"| {m['method']} | {cond} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None)
    ap.add_argument("--testbed", default="facts-small")
    ap.add_argument("--runs", default=DEFAULT_RUNS)
    ap.add_argument("--work", default="/tmp/testbed_repro", help="scratch folder for the weights")
    ap.add_argument("--train-one", nargs=2, metavar=("THREADS", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.run = args.run or args.testbed
    if args.train_one:
        train_one(args.testbed, int(args.train_one[0]), Path(args.train_one[1]))
        return
    runs = parse_runs(args.runs)
    folders = []
    for i, (label, threads, env) in enumerate(runs):
        folder = Path(args.work) / f"run{i}"
        print(f"{label}: {threads} thread(s) {env}", flush=True)
        cmd, cmd_env = harness.command(
            "testbed_repro", "--testbed", args.testbed, "--train-one", str(threads), str(folder)
        )
        subprocess.run(cmd, env={**cmd_env, **env}, cwd=harness.ROOT, check=True)
        folders.append(folder)
    out_runs = []
    for (label, threads, env), f, cmp in zip(runs, folders, compare(folders)):
        data = json.loads((f / "run.json").read_text())
        out_runs.append({"label": label, "threads": threads, "env": env, **cmp, **data})
    vs = harness.environment()["versions"]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": ctl.run_meta()["machine"],
        "torch": vs["torch"],
        "transformer_lens": vs.get("transformer_lens", "?"),
        "numpy": vs.get("numpy", "?"),
        "testbed": args.testbed,
    }
    md = to_markdown(args.testbed, out_runs, meta)
    harness.write_result("testbed_repro", args.run, {**meta, "runs": out_runs}, args=args, markdown=md, out=args.out)
    print(md)


if __name__ == "__main__":
    main()
