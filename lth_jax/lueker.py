"""Lueker's coverage check: do the subset sums of n random numbers cover [-1, 1]?

For ``trials`` independent draws, the probability that EVERY ``z in [-1, 1]`` is within
``epsilon`` of some subset sum, for

* ``"uniform"``: ``n`` i.i.d. ``U[-1, 1]`` coefficients (the ``"direct"`` construction), and
* ``"products"``: one sign half of the network construction with ``n`` copies per input:
  ``n`` i.i.d. pairs ``(v, u)`` from ``U[-1, 1]^2``, of which the copies with ``u > 0`` give
  the coefficients ``v * u`` (``Binomial(n, 1/2)`` of them). This is what one SubsetSum
  instance of ``find_ticket(..., "network")`` sees (uncapped). It is also the reading that
  reproduces the SPEC's reference numbers (n = 20 -> 0.21, 28 -> 0.60); taking ``n`` as the
  half's own size instead gives ~0.97 at n = 20.

Method: a grid of ``z`` with spacing ``h << epsilon`` (default ``epsilon / 4``); the exact
solver gives every grid point's best subset-sum error, ALL grid points of ALL trials in one
``solve_subset_sum`` call (instance size: the largest half over the trials; smaller halves
are zero-padded, which never changes a subset sum). Any ``z`` is within ``h / 2`` of a grid
point, so a trial is certainly covered if its worst grid error is ``<= epsilon - h/2`` and
certainly not if it is ``> epsilon``; ``coverage`` reports both proportions (they bracket
the truth; with ``h = epsilon / 4`` they rarely differ).

Solver limit (``MAX_N = 36``): a products half of n = 44 copies has about 22 +- 3.3 members
(more than 36 with probability ~3e-6 per trial), so n = 44 is within reach of the solver
itself; only the cost grows (2^(m/2 + 1) keys per instance for the largest half m). Measured
with ``python -m experiments.sweep --config=lth_jax/configs/sweep.py:lueker`` (exactly these
sizes, 100 trials, epsilon 0.01, h = 0.0025): U[-1, 1] n = 12/16/20 -> 0.67-0.69 / 0.97 /
1.00; products n = 20/28/36/44 -> 0.17-0.18 / 0.61-0.63 / 0.85-0.87 / 0.91 (SPEC:
0.74/0.98/1.0 and 0.21/0.60/0.82/0.94: within sampling error); 18.6 minutes wall (6.3
CPU-minutes, peak RSS 0.55 GB) on 2 heavily shared CPU cores, 14 of them products n = 44.
The sweep's config accepts sizes up to ``max_size`` (expected instance within MAX_N). Larger
instances use an exact reduction: with the coefficients split into the first
``m <= solver_max_n`` and the ``e`` others, ``min over subsets |z - sum| = min over the
2^e subset sums s of the others of (best error for z - s over the first m)``, one solver
call over ``trials x grid x 2^e`` instances (exact up to float32 rounding of ``z - s``,
~1e-7), at ``2^e`` times the cost; it is tested at small sizes through ``solver_max_n``.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import subset_sum

KINDS = ("uniform", "products")
# SPEC section 2 (100 trials, epsilon = 0.01): n -> probability that all z are covered.
REFERENCE = {
    "uniform": {12: 0.74, 16: 0.98, 20: 1.0},
    "products": {20: 0.21, 28: 0.60, 36: 0.82, 44: 0.94},
}


class Coverage(NamedTuple):
  """Coverage of [-1, 1] for one (kind, n).

  Attributes:
    n, kind, epsilon, trials, spacing: the setting (``spacing`` = grid step ``h``).
    worst_error: ``(trials,)`` largest best-subset-sum error over the grid.
    covered: fraction of trials with ``worst_error <= epsilon - h/2`` (certainly covered).
    covered_upper: fraction with ``worst_error <= epsilon`` (no grid point uncovered).
  """

  n: int
  kind: str
  epsilon: float
  trials: int
  spacing: float
  worst_error: np.ndarray
  covered: float
  covered_upper: float


def draw_coefficients(key: chex.PRNGKey, kind: str, trials: int, n: int) -> jax.Array:
  """``(trials, n)`` coefficients of the given kind (see module doc). For ``"products"``,
  each row holds its ``u > 0`` members' products first, then zeros (non-members)."""
  if kind == "uniform":
    return jax.random.uniform(key, (trials, n), jnp.float32, -1.0, 1.0)
  if kind == "products":
    key_v, key_u = jax.random.split(key)
    v = jax.random.uniform(key_v, (trials, n), jnp.float32, -1.0, 1.0)
    u = jax.random.uniform(key_u, (trials, n), jnp.float32, -1.0, 1.0)
    member = u > 0
    prods = jnp.where(member, v * u, 0.0)
    order = jnp.argsort(~member, axis=-1, stable=True)  # members first, in copy order
    return jnp.take_along_axis(prods, order, axis=-1)
  raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def grid(epsilon: float, spacing: float | None = None) -> np.ndarray:
  """Equally spaced ``z`` covering [-1, 1] (both ends included), step ``<= spacing``."""
  spacing = epsilon / 4 if spacing is None else spacing
  points = int(math.ceil(2.0 / spacing)) + 1
  return np.linspace(-1.0, 1.0, points, dtype=np.float32)


def solver_keys(n: int, trials: int, grid_points: int, solver_max_n: int = subset_sum.MAX_N
                ) -> float:
  """Approximate work (sort keys) of one coverage check with instances of ``n``
  coefficients (for ``"products"`` pass the expected largest half, about
  ``n/2 + 1.3 sqrt(n)`` for 100 trials): the cost model for planning and ETAs."""
  m = min(n, solver_max_n)
  extra = n - m
  return float(trials) * grid_points * 2 ** extra * 2 ** ((m + 1) // 2 + 1)


def instance_size(kind: str, n: int) -> int:
  """The (expected) solver instance size of one draw: ``n`` for ``"uniform"``; for
  ``"products"`` the largest of ~100 trials' sign halves, about ``n/2 + 1.3 sqrt(n)``
  (``Binomial(n, 1/2)``: mean plus ~2.6 standard deviations)."""
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  return int(n) if kind == "uniform" else int(n / 2 + 1.3 * math.sqrt(n)) + 1


def max_size(kind: str, solver_max_n: int = subset_sum.MAX_N) -> int:
  """The largest ``n`` whose ``instance_size`` fits ``solver_max_n`` (36 for ``"uniform"``,
  53 for ``"products"``): larger ``n`` are exact too, but each extra coefficient doubles the
  cost (the module doc's reduction), so the sweep's config rejects them."""
  n = 1
  while instance_size(kind, n + 1) <= solver_max_n:
    n += 1
  return n


@functools.partial(jax.jit, static_argnames=("solver_max_n",))
def _worst_errors(coefficients, z, solver_max_n):
  """``(trials,)`` max over ``z`` of the best subset-sum error (one solver call)."""
  n = coefficients.shape[-1]
  m = min(n, solver_max_n)
  head, tail = coefficients[:, :m], coefficients[:, m:]
  e = n - m
  # All 2^e subset sums of the tail: (trials, 2^e).
  if e:
    choice = np.asarray(list(itertools.product((0.0, 1.0), repeat=e)), np.float32)  # (2^e, e)
    shifts = tail @ choice.T
  else:
    shifts = jnp.zeros((coefficients.shape[0], 1), jnp.float32)
  targets = z[None, :, None] - shifts[:, None, :]  # (trials, G, 2^e)
  res = subset_sum.solve_subset_sum(targets, head[:, None, None, :])
  best = jnp.min(res.error, axis=-1)  # (trials, G)
  return jnp.max(best, axis=-1)


def coverage(key: chex.PRNGKey, n: int, kind: str = "uniform", *, trials: int = 100,
             epsilon: float = 0.01, spacing: float | None = None,
             solver_max_n: int = subset_sum.MAX_N, pad_to: int | None = None) -> Coverage:
  """Empirical probability that the subset sums of ``n`` draws cover [-1, 1] within eps.

  Args:
    key: PRNG key (the draws are ``draw_coefficients(key, kind, trials, n)``).
    n: coefficients per draw (``> solver_max_n`` uses the exact reduction of the module doc).
    kind: ``"uniform"`` or ``"products"``.
    trials: independent draws.
    epsilon: coverage radius, in (0, 1).
    spacing: grid step (default ``epsilon / 4``); must be ``< epsilon``.
    solver_max_n: largest instance handed to the solver (``<= MAX_N``).
    pad_to: zero-pad the instances to this size when they are smaller, so that several
      ``n`` (and kinds) with the same ``trials`` share one compiled program.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  if n < 1 or trials < 1:
    raise ValueError(f"n and trials must be positive, got n={n}, trials={trials}")
  if not 0.0 < epsilon < 1.0:
    raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
  spacing = epsilon / 4 if spacing is None else float(spacing)
  if not 0.0 < spacing < epsilon:
    raise ValueError(f"grid spacing must be in (0, epsilon), got {spacing}")
  if not 1 <= solver_max_n <= subset_sum.MAX_N:
    raise ValueError(f"solver_max_n must be in [1, {subset_sum.MAX_N}], got {solver_max_n}")
  z = grid(epsilon, spacing)
  h = float(z[1] - z[0])
  coefs = draw_coefficients(key, kind, trials, n)
  if kind == "products":  # drop the all-zero columns: instance size = the largest half
    width = max(1, int(np.max(np.sum(np.asarray(coefs) != 0, axis=-1))))
    coefs = coefs[:, :width]
  if pad_to is not None and coefs.shape[-1] < pad_to:
    coefs = jnp.pad(coefs, ((0, 0), (0, pad_to - coefs.shape[-1])))
  worst = np.asarray(_worst_errors(coefs, jnp.asarray(z), solver_max_n=solver_max_n))
  return Coverage(n, kind, float(epsilon), trials, h, worst,
                  float(np.mean(worst <= epsilon - h / 2)), float(np.mean(worst <= epsilon)))


def binomial_tolerance(p_ref: float, trials: int, reference_trials: int = 100,
                       sigmas: float = 3.0) -> float:
  """``sigmas`` standard deviations of the difference of two independent proportions (ours
  with ``trials``, the reference's with ``reference_trials``), floored at one trial's share."""
  var = p_ref * (1 - p_ref) * (1.0 / trials + 1.0 / reference_trials)
  return max(sigmas * math.sqrt(var), 1.0 / min(trials, reference_trials))
