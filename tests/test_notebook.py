"""experiments/quickstart.ipynb runs top to bottom (nbclient), so it cannot rot.

The kernel is this interpreter (a kernelspec written to a temporary JUPYTER_PATH), so the
notebook sees exactly the environment under test, with the repository on PYTHONPATH.
"""

import json
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "experiments" / "quickstart.ipynb"
KERNEL = "lth-jax-test"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
  spec_dir.mkdir(parents=True)
  env = {"PYTHONPATH": os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
         "MPLBACKEND": "Agg"}
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "lth_jax test kernel", "language": "python", "env": env}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                                   resources={"metadata": {"path": str(REPO)}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  assert "kept by the ticket" in text and "copies per input needed" in text
  assert any("image/png" in o.get("data", {}) for o in outputs), "the figure was not shown"
