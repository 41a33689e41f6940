"""Progress of long work: one ``Progress`` (done/total with a linear ETA) and a ``Heartbeat``.

Every long loop of the package (sweeps, streaming, Experiment 1's blocks, edge-popup
training, the Lueker check) reports through ``Progress``; a single blocking XLA call that
cannot report itself runs inside a ``Heartbeat``. Messages go to absl logging (INFO).

Infrastructure stage: imports no lth_jax module.
"""

from __future__ import annotations

import math
import threading
import time

from absl import logging


def format_seconds(seconds: float) -> str:
  """``"?"`` for NaN/Inf, else e.g. ``"42s"``, ``"3m07s"``, ``"1h05m"``."""
  if not math.isfinite(seconds):
    return "?"
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
  """``done`` of ``total`` units of work, logged with elapsed time and a linear ETA.

  ``skip(n)`` counts work finished by an earlier (interrupted) process: it is done, but it
  cost this process nothing, so it does not enter the measured time per unit. ``add(n)``
  counts work done now. A line is logged at most every ``every`` seconds and always when
  the work completes; ``every=math.inf`` logs only the completion.
  """

  def __init__(self, total: float, what: str = "work", unit: str = "units",
               every: float = 10.0):
    self.total = max(float(total), 0.0)
    self.what, self.unit, self.every = what, unit, every
    self.start = time.perf_counter()
    self.skipped = 0.0
    self.worked = 0.0
    self._last = self.start

  @property
  def done(self) -> float:
    return self.skipped + self.worked

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def eta_seconds(self) -> float:
    """Seconds left at this process's rate so far (NaN before any work is done)."""
    if self.worked <= 0:
      return math.nan
    return self.elapsed() / self.worked * max(self.total - self.done, 0.0)

  def describe(self) -> str:
    """E.g. ``"37.5% (300/800 steps), 12s elapsed, ETA 1m43s"``."""
    percent = 100.0 * self.done / self.total if self.total else 100.0
    return (f"{percent:.1f}% ({self.done:.0f}/{self.total:.0f} {self.unit}), "
            f"{format_seconds(self.elapsed())} elapsed, "
            f"ETA {format_seconds(self.eta_seconds())}")

  def skip(self, count: float) -> None:
    self.skipped += count

  def add(self, count: float = 1, note: str = "", force: bool = False) -> None:
    self.worked += count
    self._maybe_log(note, force)

  def update(self, done: float, note: str = "", force: bool = False) -> None:
    """Sets the work done so far (this process's share: ``done - skipped``)."""
    self.worked = done - self.skipped
    self._maybe_log(note, force)

  def _maybe_log(self, note: str, force: bool) -> None:
    now = time.perf_counter()
    if force or self.done >= self.total or now - self._last >= self.every:
      self._last = now
      logging.info("%s: %s%s", self.what, self.describe(), f" ({note})" if note else "")


class Heartbeat:
  """Context manager: while one long blocking call runs (e.g. a whole XLA program),
  logs ``what: still running, N s elapsed (estimate ~M s)`` every ``interval`` seconds
  from a daemon thread, and the total when it ends (``seconds`` holds it)."""

  def __init__(self, what: str, estimate: float | None = None, interval: float = 10.0):
    self.what, self.estimate, self.interval = what, estimate, interval
    self._stop = threading.Event()
    self._thread = None
    self.start = 0.0
    self.seconds = math.nan

  def _beat(self) -> None:
    while not self._stop.wait(self.interval):
      est = "" if self.estimate is None else f" (estimate ~{self.estimate:.0f} s)"
      logging.info("%s: still running, %.0f s elapsed%s", self.what,
                   time.perf_counter() - self.start, est)

  def __enter__(self):
    self.start = time.perf_counter()
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.seconds = time.perf_counter() - self.start
    logging.info("%s: %s after %.1f s", self.what, "failed" if exc[0] else "done",
                 self.seconds)
    return False
