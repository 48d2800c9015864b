#!/usr/bin/env bash
# Create (or reuse) a virtual environment in .venv and install tl_neuronllm with its test tools.
# CPU machines: torch 2.13.0 is installed first so pip does not pull several GB of CUDA packages.
# Override with TORCH_SPEC (e.g. TORCH_SPEC="torch" on a GPU machine), the venv with VENV,
# and the TransformerLens version with TL_SPEC (e.g. TL_SPEC="transformer-lens==3.9.0").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
if [ -n "${TL_SPEC:-}" ]; then
  "$VENV/bin/python" -m pip install -q "$TL_SPEC"
fi
"$VENV/bin/python" -m pip install -q -e ".[dev]" ${TL_SPEC:+"$TL_SPEC"}
echo "tl_neuronllm installed in $VENV ($("$VENV/bin/python" -c 'import transformer_lens, importlib.metadata as m; print("transformer-lens", m.version("transformer-lens"))'))"
