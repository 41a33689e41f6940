"""Experiment outputs on disk: atomic files, JSON lines, figures, the output-directory guard.

* ``atomic_write_bytes`` / ``atomic_write_text`` / ``write_jsonl`` / ``save_figure``: write to
  a temporary file in the destination directory, then ``os.replace`` it into place, so a
  killed run never leaves a half-written file under the final name.
* ``prepare_out_dir``: THE output-directory guard of every writer: refuses an existing
  non-empty directory unless ``overwrite`` (then empties it) or, with a ``fingerprint``,
  the directory holds an unfinished run with the same fingerprint (then it is resumed).
* ``check_finite_rows``: the NaN/Inf check applied to every logged measurement.
* ``load_npz`` / ``load_npy``: arrays from files a user names, refused (``ValueError``
  naming the file and key) unless they are real numeric arrays: nothing is ever unpickled.
* ``check_state_file``: a run's JSON state file (manifest, fingerprint) is a JSON object,
  or the directory is refused (or, with ``overwrite``, the unreadable file removed).

Infrastructure stage: imports no lth_jax module.
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give (mkstemp makes 0600 files)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """Writes ``data`` to ``path`` via a temporary file in the same directory and a rename
  (atomic on POSIX); creates the parent directories. The file gets the mode ``open()``
  would give it."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Writes ``text`` (UTF-8) to ``path`` atomically, like ``atomic_write_bytes``."""
  return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
  """numpy/JAX scalars and arrays, tuples and ConfigDict-like mappings -> plain JSON types.

  Non-finite floats become ``None`` (JSON has no NaN/Inf); use ``check_finite_rows`` first
  when they are errors rather than "not applicable".
  """
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if hasattr(value, "to_dict"):  # ml_collections.ConfigDict
    return to_jsonable(value.to_dict())
  if isinstance(value, (str, bool)) or value is None:
    return value
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
    arr = np.asarray(value)
    if arr.ndim:
      return [to_jsonable(v) for v in arr.tolist()]
    value = arr.item()
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, int):
    return value
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  return str(value)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping]) -> pathlib.Path:
  """Writes one JSON object per line (keys sorted, values through ``to_jsonable``) and
  returns the path. The library's only JSON-lines writer.

  Atomic: all rows are serialised first, then written to a temporary file in the
  destination directory and renamed over ``path``, so readers (and a resumed run) see
  the previous complete file or the new one, never a partial one. A run that grows its
  results rewrites the whole file each time (``write_jsonl(path, old_rows + new_rows)``).
  """
  lines = [json.dumps(to_jsonable(r), sort_keys=True) + "\n" for r in rows]
  return atomic_write_text(path, "".join(lines))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The rows of a JSON-lines file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def save_figure(fig, path: str | os.PathLike, dpi: int = 120,
                bbox_inches: str | None = "tight") -> pathlib.Path:
  """Saves a matplotlib figure as PNG atomically (temporary file, then rename);
  ``bbox_inches=None`` keeps the figure's own size instead of cropping it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=dpi, format="png", bbox_inches=bbox_inches)
  return atomic_write_bytes(path, buffer.getvalue())


RUN_FILE = "run.json"  # the fingerprint of the run an output directory holds
DONE_FILE = "done.json"  # written last: the run in the directory finished


def atomic_savez(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                 compressed: bool = False) -> pathlib.Path:
  """Writes ``arrays`` as an ``.npz`` at exactly ``path`` (no ``.npz`` appended),
  atomically like ``atomic_write_bytes``."""
  buffer = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
  return atomic_write_bytes(path, buffer.getvalue())


def _empty(directory: pathlib.Path) -> None:
  for child in directory.iterdir():
    if child.is_dir() and not child.is_symlink():
      shutil.rmtree(child)
    else:
      child.unlink()


def check_writable(directory: str | os.PathLike) -> pathlib.Path:
  """Creates ``directory`` (and parents) and proves it writable by creating and removing a
  file in it, so a run fails before any expensive work, not at its first result.

  Raises:
    OSError (``FileExistsError``, ``NotADirectoryError``, ``PermissionError``, ...): the
      message names the directory and why.
  """
  directory = pathlib.Path(directory).expanduser()
  if directory.exists() and not directory.is_dir():
    raise FileExistsError(f"output path {directory} exists and is not a directory")
  try:
    directory.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".write_probe.")
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise type(e)(e.errno, f"output directory {directory} is not writable "
                  f"({e.strerror or e})") from e
  return directory


def prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool = False,
                    fingerprint: Mapping | None = None, *,
                    resumable: bool = True) -> tuple[pathlib.Path, bool]:
  """THE output-directory guard: readies ``out_dir`` for a run and says if it resumes one.

  * A missing or empty directory is created (and checked writable): a fresh run.
  * ``overwrite``: a non-empty directory is emptied first: a fresh run.
  * With a ``fingerprint`` (the settings that make two runs the same, JSON-able): a
    non-empty directory whose ``run.json`` equals it and that has no ``done.json`` is an
    unfinished run of the same settings: it is kept and resumed (``resumable=False``, for
    a program that cannot resume: refused, saying it is unfinished). A finished run, or
    one with other settings, is refused.
  * Without one, any non-empty directory is refused.
  The fingerprint is written to ``run.json`` (atomically) before the run's first result.

  Returns:
    ``(directory, resumed)``.
  Raises:
    FileExistsError: a non-empty directory that may not be used (says why), or a file
      where the directory should be. OSError: the directory is not writable.
  """
  out_dir = pathlib.Path(out_dir).expanduser()
  if out_dir.exists() and not out_dir.is_dir():
    raise FileExistsError(f"output path {out_dir} exists and is not a directory")
  resumed = False
  if out_dir.is_dir() and any(out_dir.iterdir()):
    if overwrite:
      _empty(out_dir)
    else:
      why = "holds other files"
      if fingerprint is not None:
        run_file = out_dir / RUN_FILE
        try:
          previous = json.loads(run_file.read_text()) if run_file.is_file() else None
        except (OSError, ValueError):
          previous = "unreadable"
        unfinished = not (out_dir / DONE_FILE).exists()
        if previous == to_jsonable(fingerprint) and unfinished and resumable:
          resumed = True
        elif previous == to_jsonable(fingerprint) and unfinished:
          why = ("holds an unfinished run of the same settings (killed or failed: no "
                 f"{DONE_FILE}), which this program cannot resume")
        elif previous is None:
          why = "does not hold a run of this program"
        elif (out_dir / DONE_FILE).exists() and previous == to_jsonable(fingerprint):
          why = "holds a finished run"
        else:
          why = ("holds an unfinished run" if unfinished else "holds a run") + (
              " with other settings")
      if not resumed:
        raise FileExistsError(f"output directory {out_dir} is not empty and {why}; pass "
                              "--overwrite to replace its contents, or choose another "
                              "directory")
  check_writable(out_dir)
  if fingerprint is not None and not resumed:
    atomic_write_text(out_dir / RUN_FILE,
                      json.dumps(to_jsonable(fingerprint), indent=1, sort_keys=True))
  if resumed:
    logging.info("resuming the unfinished run in %s", out_dir)
  return out_dir, resumed


def mark_done(out_dir: str | os.PathLike, info: Mapping | None = None) -> pathlib.Path:
  """Writes ``done.json`` (last, atomically): the run in ``out_dir`` finished."""
  return atomic_write_text(pathlib.Path(out_dir) / DONE_FILE,
                           json.dumps(to_jsonable(dict(info or {})), indent=1, sort_keys=True))


def check_finite_rows(rows: Sequence[Mapping], keys: Sequence[str]) -> None:
  """Raises FloatingPointError naming the first row/key whose value is NaN or Inf.

  ``None`` values (a measurement that does not apply) are allowed.
  """
  for i, row in enumerate(rows):
    for k in keys:
      v = row.get(k)
      if v is None:
        continue
      if not np.all(np.isfinite(np.asarray(v, dtype=np.float64))):
        raise FloatingPointError(f"row {i}: non-finite {k} = {v!r} in {dict(row)}")


def check_state_file(path: str | os.PathLike, overwrite: bool = False) -> None:
  """A run's JSON state file (``manifest.json``, ``run.json``), if present, must hold a JSON
  object; a corrupt or foreign one is refused up front (``FileExistsError`` naming it),
  or, with ``overwrite``, removed (the run replaces the directory's contents anyway)."""
  path = pathlib.Path(path).expanduser()
  if not path.exists():
    return
  try:
    ok = isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
  except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
    ok = False
  if ok:
    return
  if overwrite and path.is_file():
    path.unlink()
    return
  raise FileExistsError(f"{path} is not a run's JSON state (corrupt or written by another "
                        "program); pass --overwrite to replace the directory's contents, or "
                        "choose another directory")


def _check_array(path, key: str, array: np.ndarray) -> np.ndarray:
  if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
    raise ValueError(f"{path}: {key} has non-real dtype {array.dtype}; only real numeric "
                     "arrays are read")
  return array


def _load_error(path, key: str, e: Exception) -> ValueError:
  """numpy's refusal of pickled data, in words that do not invite unpickling it."""
  if "pickle" in str(e).lower() or "object" in str(e).lower():
    return ValueError(f"{path}: {key} holds Python objects (an object array or pickled "
                      "data); refused: only numeric arrays are read, nothing is unpickled")
  return ValueError(f"{path}: {key}: corrupt or not a numpy array ({e})")


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every array of an ``.npz`` file, each a real numeric array.

  Raises:
    FileNotFoundError: no such file. ValueError (naming the file, and the key): not a zip
      archive of ``.npy`` arrays, corrupt or truncated, an object (pickled) array, a
      non-numeric dtype. Never unpickles.
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(2, "No such file", str(path))
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path}: not an .npz file (not a zip archive of .npy arrays)")
  try:
    with np.load(path, allow_pickle=False) as npz:
      keys = list(npz.files)
      arrays = {}
      for key in keys:
        try:
          array = npz[key]
          if not isinstance(array, np.ndarray):  # a member that is not an .npy file
            raise ValueError(f"{path}: {key} is not a .npy array")
          arrays[key] = _check_array(path, key, array)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
          if str(e).startswith(str(path)):
            raise
          raise _load_error(path, key, e) from None
  except (OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: corrupt .npz file ({e})") from None
  return arrays


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
  """The array of an ``.npy`` file (memory-mapped if ``mmap``), a real, finite numeric array.

  Raises FileNotFoundError, or ValueError naming the file for anything that is not a
  numeric ``.npy`` array (another format, truncated, object arrays: never unpickled).
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(2, "No such file", str(path))
  with open(path, "rb") as f:
    if f.read(6) != b"\x93NUMPY":
      raise ValueError(f"{path}: not an .npy file (no NUMPY header)")
  try:
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise _load_error(path, "the array", e) from None
  _check_array(path, "the array", array)
  if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
    raise ValueError(f"{path}: contains NaN or infinite values")
  return array
