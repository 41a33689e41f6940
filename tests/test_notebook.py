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
         "MPLBACKEND": "Agg",
         # The outputs are checked for presence, not value: XLA's backend optimisation off
         # (as the tests' and the quick preset's grids) cuts the kernel's compile time.
         "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""),
                                "--xla_backend_optimization_level=0"]).strip()}
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
  setup = "".join(o.get("text", "") for o in nb.cells[0].get("outputs", []))
  assert setup.startswith("lth_jax ") and "installed" not in setup  # importable: a no-op


def _setup_cell(source_override=None):
  """The notebook's first (setup) cell as plain Python (IPython's own transform of %pip)."""
  ipython = pytest.importorskip("IPython.core.inputtransformer2")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  cell = nb.cells[0]
  assert cell.cell_type == "code" and "LTH_JAX_SOURCE" in cell.source
  source = cell.source
  if source_override is not None:
    source = source.replace('LTH_JAX_SOURCE = ""', f"LTH_JAX_SOURCE = {source_override!r}", 1)
  return ipython.TransformerManager().transform_cell(source)


class _FakeIPython:
  """Records line magics, expanding ``{name}`` from the cell's namespace as IPython does."""

  def __init__(self, namespace):
    self.namespace, self.magics = namespace, []

  def run_line_magic(self, name, line, *args, **kwargs):
    self.magics.append((name, line.format(**self.namespace)))


@pytest.mark.parametrize("importable", [True, False])
@pytest.mark.parametrize("source", ["", "git+https://example.org/me/lth_jax.git"])
def test_setup_cell_installs_only_when_lth_jax_is_missing(monkeypatch, capsys, importable,
                                                          source):
  code = _setup_cell(source)
  if not importable:  # as on a fresh Colab runtime
    monkeypatch.setitem(sys.modules, "lth_jax", None)  # `import lth_jax` -> ImportError
  scope = {}
  fake = _FakeIPython(scope)
  scope["get_ipython"] = lambda: fake
  if importable:
    exec(code, scope)  # pylint: disable=exec-used
    assert fake.magics == []  # never installs over an importable lth_jax
    assert "lth_jax 0.1.0 from" in capsys.readouterr().out
  elif not source:
    with pytest.raises(ImportError, match="see the instructions above"):
      exec(code, scope)  # pylint: disable=exec-used
    out = capsys.readouterr().out
    assert "not on PyPI" in out and "LTH_JAX_SOURCE" in out and "pip install -e ." in out
    assert fake.magics == []
  else:
    # %pip with the user's source; the re-import still fails here (nothing was installed)
    with pytest.raises(ImportError):
      exec(code, scope)  # pylint: disable=exec-used
    assert fake.magics == [("pip", f"install {source}")]
