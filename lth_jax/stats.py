"""Statistics over random seeds that a referee can trust (evaluate stage; numpy/scipy only).

* ``wilson_interval``: a binomial success fraction with its Wilson score interval (never a
  median of a handful of seeds: sup errors over seeds are bimodal, ~1e-3 when every
  SubsetSum instance succeeds and 0.05-0.3 when one fails).
* ``copies_needed``: the fewest copies from which the success fraction stays at or above a
  level for every larger width of the grid.
* ``fit_log_law``: least squares ``copies = a + C * log2(d * l / eps)`` with C's interval
  (Student t) and R^2: the logarithmic law of Pensia et al.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as sp_stats


class Proportion(NamedTuple):
  """A success fraction and its two-sided Wilson interval (arrays broadcast together)."""

  fraction: np.ndarray
  low: np.ndarray
  high: np.ndarray
  trials: np.ndarray


def wilson_interval(successes, trials, confidence: float = 0.95) -> Proportion:
  """Wilson score interval of ``successes / trials``.

  Args:
    successes, trials: integer arrays (broadcastable), ``0 <= successes <= trials``,
      ``trials >= 1``.
    confidence: two-sided level, in (0, 1).
  Returns:
    ``Proportion`` of float64 arrays; the interval always lies in [0, 1] and contains the
    fraction (unlike the normal approximation at 0 or all successes).
  Raises:
    ValueError: counts out of range or a confidence outside (0, 1).
  """
  k = np.asarray(successes, np.float64)
  n = np.asarray(trials, np.float64)
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
    raise ValueError("need trials >= 1 and 0 <= successes <= trials")
  z = sp_stats.norm.ppf(0.5 + confidence / 2)
  p = k / n
  denom = 1.0 + z * z / n
  center = (p + z * z / (2 * n)) / denom
  half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  # At k = 0 (k = n) the bound is exactly 0 (1); rounding would leave ~1e-17 instead.
  low = np.where(k == 0, 0.0, np.clip(center - half, 0.0, 1.0))
  high = np.where(k == n, 1.0, np.clip(center + half, 0.0, 1.0))
  return Proportion(p, low, high, n.astype(np.int64))


def success_fraction(errors, epsilon: float, confidence: float = 0.95) -> Proportion:
  """Per row of ``errors (..., S)`` (S seeds): the fraction with error <= ``epsilon`` and
  its Wilson interval. NaN errors count as failures."""
  errors = np.asarray(errors, np.float64)
  ok = np.sum(errors <= epsilon, axis=-1)
  return wilson_interval(ok, np.full(ok.shape, errors.shape[-1]), confidence)


def first_sustained(widths, ok) -> np.ndarray:
  """The smallest width from which ``ok`` holds at that width and every larger one.

  Args:
    widths: ``(W,)`` increasing; ok: bool ``(W, ...)``.
  Returns:
    float ``ok.shape[1:]``: that width, ``inf`` where the widest width fails.
  """
  widths = np.asarray(widths, np.float64)
  ok = np.asarray(ok, bool)
  stays = np.flip(np.logical_and.accumulate(np.flip(ok, 0), 0), 0)  # reached, stays reached
  first = np.argmax(stays, axis=0)  # the first True of the suffix (0 if none)
  return np.where(stays[-1], widths[first], np.inf)


def copies_needed(widths: Sequence[int], fraction, level: float) -> float:
  """The smallest width ``w`` of the grid such that ``fraction >= level`` at ``w`` and at
  every larger width (so one lucky width below a failing one does not count); ``inf``
  when the widest width fails.

  Args:
    widths: ``(W,)`` increasing; fraction: ``(W,)`` success fractions.
  """
  widths = np.asarray(widths)
  fraction = np.asarray(fraction, np.float64)
  if widths.shape != fraction.shape or widths.ndim != 1 or np.any(np.diff(widths) <= 0):
    raise ValueError("need increasing widths and one fraction per width")
  return float(first_sustained(widths, fraction >= level))


class LogLawFit(NamedTuple):
  """``copies ≈ intercept + slope * log2(d * l / eps)`` by least squares."""

  intercept: float
  slope: float
  slope_low: float
  slope_high: float
  r_squared: float
  num_points: int


def fit_log_law(log_term, copies, confidence: float = 0.95) -> LogLawFit:
  """Ordinary least squares of ``copies`` on ``log_term`` with the slope's t interval.

  Args:
    log_term: ``(P,)`` values of ``log2(d * l / eps)``; copies: ``(P,)`` copies needed
      (finite: points whose grid never succeeded must be dropped by the caller, and
      reported). Needs at least 3 points and two distinct ``log_term`` values.
  """
  x = np.asarray(log_term, np.float64)
  y = np.asarray(copies, np.float64)
  if x.shape != y.shape or x.ndim != 1 or x.size < 3 or not np.all(np.isfinite(x + y)):
    raise ValueError("need >= 3 finite (log_term, copies) points of equal length")
  if np.ptp(x) == 0:
    raise ValueError("log_term takes one value only: the slope is not identified")
  design = np.stack([np.ones_like(x), x], axis=1)
  (a, c), *_ = np.linalg.lstsq(design, y, rcond=None)
  resid = y - (a + c * x)
  ss_res = float(resid @ resid)
  ss_tot = float(((y - y.mean()) ** 2).sum())
  dof = x.size - 2
  se = np.sqrt(ss_res / dof / float(((x - x.mean()) ** 2).sum()))
  t = sp_stats.t.ppf(0.5 + confidence / 2, dof)
  r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan  # constant copies: undefined
  return LogLawFit(float(a), float(c), float(c - t * se), float(c + t * se), float(r2), x.size)
