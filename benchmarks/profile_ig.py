"""Where the time of ``identify`` goes on SmolLM2-135M-Instruct (default run's setup: CommonsenseQA, cloze,
options not listed, 1-shot, IG with 2 Gauss-Legendre steps), by cProfile's internal time per function,
grouped into the dense layers' matrix products, the backward pass, attention, and the rest.

    python -m benchmarks profile_ig --n-items 3          # results/profile_ig/smollm2.json

If the dense products and the backward pass take nearly all of the time, the run is bound by arithmetic:
packing more rows into each forward (fewer calls) cannot make it much faster on a CPU; only fewer
multiply-adds can.
"""

from __future__ import annotations

import cProfile
import pstats
import time

from benchmarks import harness

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


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, run="smollm2")
    ap.set_defaults(threads=1)
    ap.add_argument("--n-items", type=int, default=3, help="profiled items (the split's identification items)")
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args(argv)
    harness.setup(args)

    from tl_neuronllm import identify

    model = harness.load_model()
    task = harness.load_task(args.task)
    ident, _, demo = harness.split(task, args.n_items + 1, 1, n_shots=args.n_shots, seed=args.seed)
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
    }
    harness.write_result("profile_ig", args.run, out, args=args, out=args.out)
    for g, s in out["share"].items():
        print(f"{g:60s} {out['seconds'][g]:8.1f} s  {100 * s:5.1f}%")
    print(f"wall {wall:.1f} s, {out['s_per_item']:.1f} s per item")


if __name__ == "__main__":
    main()
