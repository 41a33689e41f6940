"""Small helpers for experiment outputs: atomic files, an output-directory guard, ETA logs.

* ``atomic_write_bytes`` / ``atomic_write_text`` / ``write_jsonl`` / ``save_figure``: write to
  a temporary file in the destination directory, then ``os.replace`` it into place, so a
  killed run never leaves a half-written file under the final name.
* ``prepare_out_dir``: refuses to write into an existing non-empty directory unless
  ``overwrite`` is set (then the directory's contents are removed first).
* ``check_finite_rows``: the NaN/Inf check applied to every logged measurement.
* ``Progress``: absl logging of done/total work with elapsed time and an ETA.
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import shutil
import tempfile
import time
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


def prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
  """Creates ``out_dir``; an existing non-empty directory is an error unless ``overwrite``.

  Raises:
    FileExistsError: ``out_dir`` is non-empty and ``overwrite`` is false, or it is a file.
  """
  out_dir = pathlib.Path(out_dir).expanduser()
  if out_dir.exists() and not out_dir.is_dir():
    raise FileExistsError(f"output path {out_dir} exists and is not a directory")
  if out_dir.is_dir() and any(out_dir.iterdir()):
    if not overwrite:
      raise FileExistsError(f"output directory {out_dir} is not empty; pass --overwrite to "
                            "replace its contents, or choose another directory")
    for child in out_dir.iterdir():
      if child.is_dir() and not child.is_symlink():
        shutil.rmtree(child)
      else:
        child.unlink()
  out_dir.mkdir(parents=True, exist_ok=True)
  return out_dir


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


class Progress:
  """Logs ``done/total`` units of work with elapsed time and a linear ETA (absl INFO).

  ``update(done)`` logs at most every ``min_interval`` seconds unless ``force``; the final
  update (``done == total``) is always logged.
  """

  def __init__(self, total: float, what: str = "work", min_interval: float = 5.0):
    self.total = float(total)
    self.what = what
    self.min_interval = min_interval
    self.start = time.perf_counter()
    self._last = -math.inf

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def eta(self, done: float) -> float:
    if done <= 0:
      return math.nan
    return self.elapsed() * (self.total - done) / done

  def update(self, done: float, note: str = "", force: bool = False) -> None:
    now = time.perf_counter()
    final = done >= self.total
    if not (force or final or now - self._last >= self.min_interval):
      return
    self._last = now
    frac = done / self.total if self.total else 1.0
    eta = self.eta(done)
    eta_s = "?" if not math.isfinite(eta) else f"{eta:.0f} s"
    logging.info("%s: %.0f%% done, %.1f s elapsed, ETA %s%s", self.what, 100 * frac,
                 self.elapsed(), eta_s, f" ({note})" if note else "")


class Heartbeat:
  """Context manager: while a long blocking call runs (e.g. one XLA program that cannot
  report progress itself), logs ``what: still running, N s elapsed (estimate ~M s)`` every
  ``interval`` seconds from a daemon thread, and the total when it ends."""

  def __init__(self, what: str, estimate: float | None = None, interval: float = 10.0):
    self.what = what
    self.estimate = estimate
    self.interval = interval
    self._stop = None
    self._thread = None
    self.start = 0.0
    self.seconds = math.nan

  def __enter__(self):
    import threading
    self.start = time.perf_counter()
    self._stop = threading.Event()

    def beat():
      while not self._stop.wait(self.interval):
        est = "" if self.estimate is None else f" (estimate ~{self.estimate:.0f} s)"
        logging.info("%s: still running, %.0f s elapsed%s", self.what,
                     time.perf_counter() - self.start, est)

    self._thread = threading.Thread(target=beat, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.seconds = time.perf_counter() - self.start
    logging.info("%s: %s after %.1f s", self.what, "failed" if exc[0] else "done",
                 self.seconds)
    return False
