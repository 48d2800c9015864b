"""The fixed cost of one forward through a ``TransformerBridge``: seconds per call of SmolLM2 at 1..256 tokens.

    python benchmarks/forward_cost.py --threads 1

Why it matters: packing rows, option trees and several questions into one forward (issue 14) pays only if a
call costs more than its tokens. Writes ``results/forward_cost_smollm2.json`` (versions, load average).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tl_neuronllm.data.smollm2 import load_smollm2

    model = load_smollm2()
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
        "threads": args.threads,
        "versions": {d: importlib.metadata.version(d) for d in ("torch", "transformers", "transformer-lens")},
        "python": platform.python_version(),
        "loadavg": [load0, os.getloadavg()],
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "forward_cost_smollm2.json").write_text(json.dumps(out, indent=1))
    print(out["fit"])


if __name__ == "__main__":
    main()
