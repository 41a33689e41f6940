"""The sweep's finished pieces on disk, so that a killed sweep resumes where it stopped.

Every target's grid result (``{method: SweepResult}``) is saved as
``<out_dir>/targets/<name>.npz`` the moment its program finishes, and every Lueker job as
``<out_dir>/lueker/<kind>_<n>.npz``; each file carries the run's fingerprint (a SHA-256 of
its config, the ``run.json`` of ``files.prepare_out_dir``) and is written atomically
(``files.atomic_savez``), so a file under its final name is always whole and of this run.
A rerun of the same config in the same directory loads them instead of recomputing
(``resumable_targets``, ``run_lueker``); a file with another fingerprint is refused
(``FileExistsError``, one line).

Arrays only (``files.load_npz`` never unpickles): a result's strings (method names) are
the keys, ``None`` fields are absent keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time

import numpy as np
from absl import logging

from lth_jax import files as files_lib
from lth_jax import lueker
from lth_jax import sweep as sweep_lib

TARGETS_DIR = "targets"
LUEKER_DIR = "lueker"
_FINGERPRINT = "fingerprint"


def fingerprint_digest(fingerprint) -> np.ndarray:
  """``(32,)`` uint8 SHA-256 of the canonical JSON of ``fingerprint`` (a config dict)."""
  text = json.dumps(files_lib.to_jsonable(fingerprint), sort_keys=True)
  return np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest(), np.uint8)


def _load(path: pathlib.Path, digest: np.ndarray) -> dict[str, np.ndarray] | None:
  """The arrays of ``path`` (None if absent); refuses a file of another run."""
  if not path.is_file():
    return None
  arrays = files_lib.load_npz(path)
  if not np.array_equal(arrays.pop(_FINGERPRINT, None), digest):
    raise FileExistsError(f"{path} was written by a run with other settings (its config "
                          "fingerprint differs); pass --overwrite or choose another directory")
  return arrays


def _result_arrays(per_method: dict) -> dict[str, np.ndarray]:
  out = {}
  for method, result in per_method.items():
    for field in dataclasses.fields(result):
      value = getattr(result, field.name)
      if field.name != "method" and value is not None:
        out[f"{method}.{field.name}"] = np.asarray(value)
  return out


def _result_from(arrays: dict[str, np.ndarray]) -> dict:
  fields = {f.name for f in dataclasses.fields(sweep_lib.SweepResult)}
  per_method: dict[str, dict] = {}
  for key, value in arrays.items():
    method, field = key.rsplit(".", 1)
    per_method.setdefault(method, {})[field] = value
  out = {}
  for method, values in per_method.items():
    kwargs = {f: values.get(f) for f in fields - {"method"}}
    kwargs.update(layer_sizes=tuple(int(d) for d in values["layer_sizes"]),
                  num_seeds=int(values["num_seeds"]), epsilon=float(values["epsilon"]),
                  target_params=int(values["target_params"]),
                  target_accuracy=(None if values.get("target_accuracy") is None
                                   else float(values["target_accuracy"])))
    out[method] = sweep_lib.SweepResult(method=method, **kwargs)
  return out


def save_target(out_dir, name: str, per_method: dict, fingerprint) -> pathlib.Path:
  """Saves one target's ``{method: SweepResult}`` (atomically, with the fingerprint)."""
  arrays = dict(_result_arrays(per_method), **{_FINGERPRINT: fingerprint_digest(fingerprint)})
  return files_lib.atomic_savez(pathlib.Path(out_dir) / TARGETS_DIR / f"{name}.npz", arrays)


def load_target(out_dir, name: str, fingerprint) -> dict | None:
  """The saved ``{method: SweepResult}`` of target ``name``, or None if not finished."""
  arrays = _load(pathlib.Path(out_dir) / TARGETS_DIR / f"{name}.npz",
                 fingerprint_digest(fingerprint))
  return None if arrays is None else _result_from(arrays)


def save_lueker(out_dir, coverage: lueker.Coverage, fingerprint) -> pathlib.Path:
  """Saves one Lueker job's ``Coverage`` (its ``kind`` is in the file name)."""
  arrays = {k: np.asarray(v) for k, v in coverage._asdict().items() if k != "kind"}
  arrays[_FINGERPRINT] = fingerprint_digest(fingerprint)
  return files_lib.atomic_savez(
      pathlib.Path(out_dir) / LUEKER_DIR / f"{coverage.kind}_{coverage.n}.npz", arrays)


def load_lueker(out_dir, kind: str, n: int, fingerprint) -> lueker.Coverage | None:
  """The saved ``Coverage`` of the Lueker job ``(kind, n)``, or None if not finished."""
  arrays = _load(pathlib.Path(out_dir) / LUEKER_DIR / f"{kind}_{n}.npz",
                 fingerprint_digest(fingerprint))
  if arrays is None:
    return None
  scalars = {k: v.item() for k, v in arrays.items() if v.ndim == 0}
  arrays = {k: v for k, v in arrays.items() if v.ndim}
  return lueker.Coverage(kind=kind, **scalars, **arrays)


def resumable_targets(named, compute, store, per_target: bool,
                      cost=None) -> list[tuple[str, dict]]:
  """Every target of ``named`` ([(name, kernels)]) with its ``{method: SweepResult}``:
  loaded when ``store`` (``(out_dir, fingerprint)``, or None: nothing saved) holds it, else
  computed by ``compute(indices) -> [results]`` (all missing targets in one call, or one
  call each if ``per_target``, cheapest first by ``cost(index)``, so that an interrupted
  run has finished as many targets as it could) and saved as soon as its call returns."""
  done = {name: load_target(store[0], name, store[1]) if store else None for name, _ in named}
  todo = [i for i, (name, _) in enumerate(named) if done[name] is None]
  if per_target and cost is not None:
    todo.sort(key=cost)
  if len(todo) < len(named):
    logging.info("sweep: %d of %d targets loaded from %s", len(named) - len(todo),
                 len(named), pathlib.Path(store[0]) / TARGETS_DIR)
  for group in ([[i] for i in todo] if per_target else [todo] * bool(todo)):
    t0 = time.perf_counter()
    results = compute(group)
    logging.info("sweep: %s done in %.1f s", ", ".join(named[i][0] for i in group),
                 time.perf_counter() - t0)
    for i, per_method in zip(group, results):
      done[named[i][0]] = per_method
      if store:
        save_target(store[0], named[i][0], per_method, store[1])
  return [(name, done[name]) for name, _ in named]
