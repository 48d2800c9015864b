"""``python -m benchmarks NAME [options]``: run one benchmark; with no NAME, list them."""

from __future__ import annotations

import sys

from benchmarks.harness import benchmarks, run


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m benchmarks NAME [options]   (python -m benchmarks NAME --help for its options)")
        print("benchmarks: " + ", ".join(benchmarks()))
        return
    run(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
