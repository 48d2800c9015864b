"""The fixed cost of one forward through a ``TransformerBridge``: seconds per call of SmolLM2 at 1..256 tokens.

    python -m benchmarks forward_cost --threads 1

Why it matters: packing rows, option trees and several questions into one forward (issue 14) pays only if a
call costs more than its tokens. Writes ``results/forward_cost/<run>.json`` (run ``smollm2``; the harness
records versions and load average; the load average at the start and end is in the results too).
"""

from __future__ import annotations

import os
import time

import torch

from benchmarks import harness


def main(argv: list[str] | None = None) -> None:
    ap = harness.parser(__doc__, task=None, run="smollm2")
    ap.set_defaults(threads=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    harness.setup(args)
    model = harness.load_model()
    load0 = os.getloadavg()
    rows = []
    gen = torch.Generator().manual_seed(0)
    for T in (1, 8, 32, 128, 256):
        x = torch.randint(100, 1000, (1, T), generator=gen)
        with torch.no_grad():
            model(x)
            t = time.perf_counter()
            for _ in range(args.repeat):
                model(x)
        rows.append({"tokens": T, "seconds": (time.perf_counter() - t) / args.repeat})
        print(rows[-1], flush=True)
    # least squares: seconds = fixed + per_token * tokens
    n = len(rows)
    mx = sum(r["tokens"] for r in rows) / n
    my = sum(r["seconds"] for r in rows) / n
    slope = sum((r["tokens"] - mx) * (r["seconds"] - my) for r in rows) / sum((r["tokens"] - mx) ** 2 for r in rows)
    out = {
        "model": "SmolLM2-135M-Instruct (TransformerBridge)",
        "rows": rows,
        "fit": {"fixed_s": my - slope * mx, "per_token_s": slope},
        "loadavg": [load0, os.getloadavg()],
    }
    harness.write_result("forward_cost", args.run, out, args=args, out=args.out)
    print(out["fit"])


if __name__ == "__main__":
    main()
