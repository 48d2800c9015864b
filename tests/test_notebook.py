"""docs/tutorial.ipynb runs from top to bottom (SmolLM2 from its PyPI wheel; a few minutes on one core).

The notebook is executed with nbclient in a kernel that runs this test's own interpreter (the virtual
environment's): a kernelspec pointing at ``sys.executable`` is written into a temporary Jupyter data folder
and put first on ``JUPYTER_PATH``, so no kernel installed elsewhere on the machine is picked up. The kernel runs
offline (no Hugging Face hub), with one torch thread, in a temporary folder (the report goes there). The
notebook in the repository keeps no outputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
KERNEL = "tl-neuronllm-test"


def test_tutorial_outputs_are_stripped():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, "strip the notebook's outputs"


def test_tutorial_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tl_neuronllm test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH", "")]))
    for var, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("OMP_NUM_THREADS", "1"),
        ("MKL_NUM_THREADS", "1"),
        ("MPLBACKEND", "Agg"),
    ):
        monkeypatch.setenv(var, value)
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name=KERNEL, resources={"metadata": {"path": str(run_dir)}}
    )
    client.execute()  # raises CellExecutionError naming the cell on the first error

    assert (run_dir / "tutorial_out" / "report.html").is_file()
    executable = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in executable)
    text = "".join(o.get("text", "") for c in executable for o in c.outputs if o.get("output_type") == "stream")
    assert "good:" in text and "held-out" in text.lower()
