"""Where the time of ``identify`` goes on SmolLM2-135M-Instruct (default run's setup: CommonsenseQA, cloze,
options not listed, 1-shot, IG with 2 Gauss-Legendre steps), by cProfile's internal time per function,
grouped into the dense layers' matrix products, the backward pass, attention, and the rest.

    python benchmarks/profile_ig.py --n-items 3 --out benchmarks/results/profile_ig_smollm2.json

If the dense products and the backward pass take nearly all of the time, the run is bound by arithmetic:
packing more rows into each forward (fewer calls) cannot make it much faster on a CPU; only fewer
multiply-adds can.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import time

import torch

GROUPS = {
    "dense products (nn.Linear)": ("torch._C._nn.linear", "{built-in method torch._C._nn.linear}"),
    "backward pass": ("run_backward",),
    "attention products and softmax": ("torch.matmul", "softmax", "scaled_dot_product_attention", "baddbmm", "bmm"),
}


def group_of(name: str) -> str:
    for group, keys in GROUPS.items():
        if any(k in name for k in keys):
            return group
    return "everything else (Python, hooks, norms, rotary, copies)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="commonsenseqa")
    ap.add_argument("--n-items", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import tl_neuronllm
    from tl_neuronllm import Task, identify
    from tl_neuronllm.data.real_tasks import load_real_task_records
    from tl_neuronllm.data.smollm2 import load_smollm2

    model = load_smollm2()
    task = Task.from_records(load_real_task_records(args.task), name=args.task)
    ident, _, demo = task.split(args.n_items + 1, 1, n_demo=1, seed=0)
    opts = dict(k=500, demos=demo, progress=False, mode="cloze", show_options=False, steps=args.steps, ig_rule="gauss")
    identify(model, ident.subset([0]), **opts)  # warm-up: the one-time exactness checks
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    identify(model, ident.subset(list(range(1, args.n_items + 1))), **opts)
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    by_group: dict[str, float] = {}
    for (file, line, fn), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        name = f"{file}:{line}({fn})" if file != "~" else fn
        by_group[group_of(name)] = by_group.get(group_of(name), 0.0) + tottime
    total = sum(by_group.values())
    out = {
        "what": "cProfile internal time of identify, grouped",
        "setup": {**vars(args), "mode": "cloze", "show_options": False, "ig_rule": "gauss", "k": 500},
        "wall_s": wall,
        "s_per_item": wall / args.n_items,
        "seconds": dict(sorted(by_group.items(), key=lambda kv: -kv[1])),
        "share": {g: s / total for g, s in sorted(by_group.items(), key=lambda kv: -kv[1])},
        "versions": {
            "tl_neuronllm": tl_neuronllm.__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "transformer_lens": __import__("importlib.metadata").metadata.version("transformer-lens"),
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    for g, s in out["share"].items():
        print(f"{g:60s} {out['seconds'][g]:8.1f} s  {100 * s:5.1f}%")
    print(f"wall {wall:.1f} s, {out['s_per_item']:.1f} s per item")


if __name__ == "__main__":
    main()
