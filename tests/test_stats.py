"""lth_jax.stats: Wilson intervals, copies needed, the log-law fit, against references."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lth_jax import stats


def _wilson_reference(k, n, z=1.959963984540054):
  # The textbook formula, term by term, in exact rationals where possible.
  p = Fraction(k, n)
  zz = Fraction(z * z)
  center = (p + zz / (2 * n)) / (1 + zz / n)
  half = z * math.sqrt(float(p * (1 - p) / n + zz / (4 * n * n))) / float(1 + zz / n)
  return float(center) - half, float(center) + half


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_matches_the_formula_and_contains_the_fraction(kn):
  k, n = kn
  res = stats.wilson_interval(k, n)
  lo, hi = _wilson_reference(k, n)
  assert res.low == pytest.approx(max(lo, 0.0), abs=1e-12)
  assert res.high == pytest.approx(min(hi, 1.0), abs=1e-12)
  assert 0.0 <= res.low <= res.fraction <= res.high <= 1.0


def test_wilson_known_values_and_coverage():
  # 0 of 32: the interval is [0, z^2 / (n + z^2)], not the degenerate [0, 0].
  res = stats.wilson_interval(0, 32)
  z2 = 1.959963984540054 ** 2
  assert res.low == 0.0 and res.high == pytest.approx(z2 / (32 + z2))
  # Coverage: over many binomial draws the 95% interval holds p about 95% of the time.
  rng = np.random.default_rng(0)
  p, n = 0.3, 40
  k = rng.binomial(n, p, size=20000)
  res = stats.wilson_interval(k, n)
  cover = np.mean((res.low <= p) & (p <= res.high))
  assert 0.93 < cover < 0.97
  with pytest.raises(ValueError):
    stats.wilson_interval(3, 2)
  with pytest.raises(ValueError):
    stats.wilson_interval(1, 2, confidence=1.0)


def test_success_fraction_counts_nan_as_failure():
  errors = np.array([[0.001, 0.2, np.nan, 0.01], [0.0, 0.0, 0.0, 0.0]])
  res = stats.success_fraction(errors, 0.01)
  np.testing.assert_array_equal(res.fraction, [0.5, 1.0])
  np.testing.assert_array_equal(res.trials, [4, 4])


def test_copies_needed_takes_the_tail_that_stays_above_the_level():
  widths = [4, 8, 12, 16, 20]
  assert stats.copies_needed(widths, [0.0, 0.6, 0.4, 0.9, 1.0], 0.5) == 16
  assert stats.copies_needed(widths, [0.9, 0.9, 0.9, 0.9, 0.9], 0.5) == 4
  assert stats.copies_needed(widths, [0.9, 0.9, 0.9, 0.9, 0.4], 0.5) == math.inf
  with pytest.raises(ValueError):
    stats.copies_needed([4, 4], [1.0, 1.0], 0.5)


def test_fit_log_law_recovers_an_exact_line_and_covers_a_noisy_slope():
  x = np.array([3.0, 5.0, 7.0, 9.0, 11.0])
  fit = stats.fit_log_law(x, 2.0 + 3.0 * x)
  assert fit.intercept == pytest.approx(2.0) and fit.slope == pytest.approx(3.0)
  assert fit.r_squared == pytest.approx(1.0)
  assert fit.slope_low == pytest.approx(3.0) and fit.slope_high == pytest.approx(3.0)
  # Noisy: the 95% t interval covers the true slope in about 95% of repetitions.
  rng = np.random.default_rng(1)
  hits = 0
  for _ in range(2000):
    y = 2.0 + 3.0 * x + rng.normal(0, 1.0, x.shape)
    f = stats.fit_log_law(x, y)
    hits += f.slope_low <= 3.0 <= f.slope_high
  assert 0.93 < hits / 2000 < 0.97
  with pytest.raises(ValueError, match="one value"):
    stats.fit_log_law([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
  with pytest.raises(ValueError):
    stats.fit_log_law([1.0, 2.0], [1.0, 2.0])
