"""The package's architecture as a test: one direction of imports through the stages.

infra -> sample -> solve -> mask -> evaluate -> programs -> report -> run: a module imports
only from its own stage or lower ones (module-level and function-level imports alike);
configs are pure data; nothing in lth_jax imports a driver; figures are the only matplotlib
user; every module and entry point has its place in the table below (a new module must be
given a stage here, which is the point).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lth_jax"

STAGES = ("infra", "sample", "solve", "mask", "evaluate", "programs", "report", "run")
STAGE_OF = {
    "_checks": "infra", "files": "infra", "progress": "infra", "checkpoints": "infra",
    "sharding": "infra",
    "targets": "sample", "random_net": "sample", "data": "sample", "models": "sample",
    "mitm": "solve", "mitm_keys": "solve", "subset_sum": "solve", "fewest_terms": "solve", "objectives": "solve",
    "distributed": "solve",
    "constructions": "mask", "construction": "mask", "masks": "mask", "supermask": "mask",
    "evaluation": "evaluate", "theory": "evaluate", "lueker": "evaluate", "sizing": "evaluate",
    "stats": "evaluate",
    "grid_program": "programs", "sweep": "programs", "streaming": "programs",
    "stream_sources": "programs",
    "edge_popup": "programs", "training": "programs",
    "report": "report",
    "run": "run",
}


def _modules():
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    yield path, parts


def _lth_imports(path):
  """(line, top-level lth_jax submodule, dotted name) of every lth_jax import in a file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for name in names:
      bits = name.split(".")
      if bits[0] == "lth_jax" and len(bits) > 1:
        yield node.lineno, bits[1], name


def _third_party(path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield node.module.split(".")[0]


def test_every_module_has_a_stage():
  missing = sorted({parts[0] for _, parts in _modules()
                    if parts and parts[0] not in STAGE_OF and parts[0] != "configs"})
  assert not missing, f"give these modules a stage in tests/test_layout.py: {missing}"


@pytest.mark.parametrize("path,parts", [(p, q) for p, q in _modules() if q],
                         ids=lambda x: ".".join(x) if isinstance(x, tuple) else "")
def test_imports_point_down(path, parts):
  if parts[0] == "configs":
    bad = [name for _, _, name in _lth_imports(path)]
    assert not bad, f"configs are pure data; {path.name} imports {bad}"
    return
  rank = STAGES.index(STAGE_OF[parts[0]])
  upward = [(line, name) for line, top, name in _lth_imports(path)
            if top != "configs" and STAGES.index(STAGE_OF[top]) > rank]
  assert not upward, f"{'/'.join(parts)} ({STAGE_OF[parts[0]]}) imports upward: {upward}"


def test_only_figures_import_matplotlib():
  users = sorted(str(p.relative_to(ROOT)) for p, _ in _modules()
                 if "matplotlib" in set(_third_party(p)))
  assert users == ["lth_jax/report/figures.py"]


def test_entry_points_are_thin_and_call_the_drivers():
  for path in sorted((ROOT / "experiments").glob("*.py")):
    if path.name == "__init__.py":
      continue
    lines = path.read_text().splitlines()
    assert len(lines) <= 60, f"{path.name} has {len(lines)} lines (entry points: <= 60)"


def test_no_import_cycles():
  modules = {".".join(("lth_jax",) + parts): path for path, parts in _modules()}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for _, _, imported in _lth_imports(path):
      # "lth_jax.a.b" may name a module or a name inside module "lth_jax.a".
      while imported and imported not in modules:
        imported = imported.rpartition(".")[0]
      if imported and imported not in (name, "lth_jax") and not name.startswith(imported + "."):
        edges.add(imported)
    graph[name] = edges
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    stack.append(node)
    for nxt in graph[node]:
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = "done"

  for node in graph:
    if node not in state:
      visit(node, [])
  assert not cycles, f"import cycles: {cycles}"
