#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install tl_neuronllm with its test tools.
#
# By default the tested dependency set in constraints.txt is installed (PIN=1), so the README's numbers
# reproduce. PIN=0 lets pip resolve the newest versions the package's ranges allow (CI's "newest" leg).
# CPU machines: torch 2.13.0 is installed first so pip does not pull several GB of CUDA packages.
# Environment: VENV (default .venv), PYTHON (default python3), TORCH_SPEC (e.g. "torch" on a GPU machine),
# EXTRA_SPEC (extra requirement specs, e.g. "transformer-lens==3.9.0" or "transformers==5.9.0"; implies PIN=0).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
EXTRA="${EXTRA_SPEC:-}"
PIN="${PIN:-1}"
[ -n "$EXTRA" ] && PIN=0
CONSTRAINTS=()
[ "$PIN" = 1 ] && CONSTRAINTS=(-c constraints.txt)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# shellcheck disable=SC2086 # EXTRA holds several specs on purpose
"$VENV/bin/python" -m pip install -q "${CONSTRAINTS[@]}" -e ".[dev]" $EXTRA
"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as m
print("tl_neuronllm installed with " + ", ".join(f"{d} {m.version(d)}" for d in ("torch", "transformers", "transformer-lens")))
PYEOF
