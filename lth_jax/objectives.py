"""SubsetSum objectives as interchangeable solvers, and grouped solving.

A solver (``SolveFn``) maps ``targets (B,)`` and ``coefficients (B, m)`` to a result with
``.mask`` bool ``(B, m)`` and ``.error`` ``(B,)``; per-instance results never depend on
the batch. Named objectives: ``"min_error"`` (``subset_sum.solve_subset_sum``, the subset
closest to the target) and ``"fewest_terms"`` (``fewest_terms.solve_fewest_terms``, the
fewest terms within ``epsilon``). ``solve_grouped`` solves the instances of many problems
(layers, grid specs) with one solver call per instance size.

Solve stage: imports only the solvers below it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from lth_jax import fewest_terms
from lth_jax import subset_sum

OBJECTIVES = ("min_error", "fewest_terms")

# solve_fn(targets (B,), coefficients (B, m)) -> result with .mask bool (B, m) and
# .error (B,) (like subset_sum.SubsetSumResult / fewest_terms.FewestTermsResult).
SolveFn = Callable[[jax.Array, jax.Array], Any]


def objective_max_n(objective: str = "min_error") -> int:
  """The largest instance size ``m`` (coefficients per instance) ``objective`` solves."""
  if objective == "min_error":
    return subset_sum.MAX_N
  if objective == "fewest_terms":
    return fewest_terms.MAX_N
  raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


@jax.jit
def _min_error(targets, coefficients):
  # jit: no host round trip for the finiteness check (inputs are checked or sampled)
  return subset_sum.solve_subset_sum(targets, coefficients)


@jax.jit
def _fewest_terms(targets, coefficients, epsilon):
  return fewest_terms.solve_fewest_terms(targets, coefficients, epsilon)


def objective_solver(objective: str = "min_error", epsilon: float | None = None) -> SolveFn:
  """The ``solve_fn`` of a named objective.

  Args:
    objective: ``"min_error"`` (``subset_sum.solve_subset_sum``: the subset closest to the
      target) or ``"fewest_terms"`` (``fewest_terms.solve_fewest_terms``: among subsets
      within ``epsilon``, one with the fewest terms; where none is, the closest one).
    epsilon: the tolerance of ``"fewest_terms"`` (required there; ignored otherwise).

  Returns:
    ``solve_fn(targets (B,), coefficients (B, m))`` -> result with ``.mask``,
    ``.value``, ``.error``.
  """
  objective_max_n(objective)  # validates the name
  if objective == "min_error":
    return _min_error
  if epsilon is None:
    raise ValueError("objective 'fewest_terms' needs epsilon")
  if not isinstance(epsilon, jax.core.Tracer) and not 0.0 < float(epsilon) < math.inf:
    raise ValueError(f"epsilon must be finite and positive, got {epsilon}")
  return functools.partial(_fewest_terms, epsilon=jnp.float32(epsilon))


def solve_grouped(problems, solve_fn: SolveFn, size_multiple: int = 1):
  """Solves many problems with one ``solve_fn`` call per instance size.

  Args:
    problems: list of ``(targets, coefficients)``, coefficients ``targets.shape + (m,)``
      (``m`` may differ between problems), e.g. one per layer and grid spec.
    solve_fn: ``(targets (B,), coefficients (B, m)) -> .mask (B, m), .error (B,)``.
    size_multiple: instance sizes are padded with zero coefficients (which never change a
      subset sum) up to a multiple of this, so fewer distinct sizes are compiled.
  Returns:
    list of ``(mask, error)``, shaped like each problem's coefficients and targets.
  """
  padded = lambda m: -(-m // size_multiple) * size_multiple
  out = [None] * len(problems)
  for size in sorted({padded(c.shape[-1]) for _, c in problems}):
    members = [i for i, (_, c) in enumerate(problems) if padded(c.shape[-1]) == size]
    t = jnp.concatenate([problems[i][0].reshape(-1) for i in members])
    c = jnp.concatenate([
        jnp.pad(problems[i][1].reshape(-1, problems[i][1].shape[-1]),
                ((0, 0), (0, size - problems[i][1].shape[-1]))) for i in members])
    res = solve_fn(t, c)
    start = 0
    for i in members:
      tgt, coef = problems[i]
      count = tgt.size
      mask = res.mask[start:start + count, :coef.shape[-1]].reshape(coef.shape)
      out[i] = (mask, res.error[start:start + count].reshape(tgt.shape))
      start += count
  return out


def solve_masks(problems, solve_fn: SolveFn):
  """``solve_grouped``'s masks only."""
  return [mask for mask, _ in solve_grouped(problems, solve_fn)]
