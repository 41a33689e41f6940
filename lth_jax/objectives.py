"""SubsetSum objectives as interchangeable solvers, and grouped solving.

A solver (``SolveFn``) maps ``targets (B,)`` and ``coefficients (B, m)`` to a result with
``.mask`` bool ``(B, m)`` and ``.error`` ``(B,)``; per-instance results never depend on
the batch. Named objectives: ``"min_error"`` (``subset_sum.solve_subset_sum``, the subset
closest to the target) and ``"fewest_terms"`` (``fewest_terms.solve_fewest_terms``, the
fewest terms within ``epsilon``). ``solve_grouped`` solves the instances of many problems
(layers, grid specs) with one solver call per instance size; ``blocked_solver`` solves very
many instances in fixed-size blocks with progress (Experiment 1: every weight of a target).

Solve stage: imports only the solvers below it (and ``progress`` from infrastructure).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import _checks
from lth_jax import fewest_terms
from lth_jax import progress as progress_lib
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


class BlockedResult(NamedTuple):
  """What a ``blocked_solver`` returns (host arrays)."""

  mask: np.ndarray  # bool (B, m)
  error: np.ndarray  # float32 (B,)


@functools.partial(jax.jit, static_argnames=("objective",))
def _solve_block(targets, coefficients, epsilon, objective):
  res = objective_solver(objective, epsilon)(targets, coefficients)
  return res.mask, res.error


def _block_size(m: int, block_keys: int) -> int:
  # Depends on m only: one compiled program per (m, objective), whatever the number of
  # instances (a compile costs far more than a block of padding).
  keys_per_instance = 2 ** ((m + 1) // 2 + 1)
  return int(np.clip(block_keys // keys_per_instance, 256, 1 << 16))


def _solve_in_blocks(targets, coefficients, objective, epsilon, block_keys, progress):
  targets = np.asarray(targets, np.float32).reshape(-1)
  coefficients = np.asarray(coefficients, np.float32)
  total, m = coefficients.shape
  if targets.shape[0] != total:
    raise ValueError(f"{targets.shape[0]} targets for {total} coefficient rows")
  block = _block_size(m, block_keys)
  mask = np.zeros((total, m), bool)
  error = np.zeros((total,), np.float32)
  eps = jnp.float32(epsilon)

  def collect(start, stop, result):
    mask[start:stop] = np.asarray(result[0])[:stop - start]
    error[start:stop] = np.asarray(result[1])[:stop - start]
    if progress is not None:
      progress.add(stop - start)

  pending = None
  for start in range(0, total, block):
    stop = min(start + block, total)
    t = np.zeros((block,), np.float32)
    c = np.zeros((block, m), np.float32)
    t[:stop - start] = targets[start:stop]
    c[:stop - start] = coefficients[start:stop]
    result = _solve_block(t, c, eps, objective)  # dispatched asynchronously
    if pending is not None:
      collect(*pending)  # the previous block, while this one runs
    pending = (start, stop, result)
  if pending is not None:
    collect(*pending)
  return BlockedResult(mask, error)


def blocked_solver(objective: str, epsilon: float, block_keys: int = 1 << 24,
                   progress: progress_lib.Progress | None = None) -> SolveFn:
  """A host-side ``solve_fn`` for very many instances: fixed-size blocks, one compiled shape.

  Each call pads its instances into blocks of a size that depends on ``m`` only, so one
  program per ``(m, objective)`` is compiled whatever the number of instances; the next
  block is dispatched while the previous one is copied back.

  Args:
    objective: one of ``OBJECTIVES``.
    epsilon: the tolerance of ``"fewest_terms"`` (passed to every objective).
    block_keys: about this many meet-in-the-middle keys per block (progress granularity;
      the solvers bound their own memory by chunking).
    progress: optional; ``progress.add(count)`` is called after each block.

  Returns:
    ``solve_fn(targets (B,), coefficients (B, m))`` -> ``BlockedResult`` with numpy
    ``.mask`` bool ``(B, m)`` and ``.error`` float32 ``(B,)``.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
  if not _checks.is_int(block_keys) or block_keys < 1:
    raise ValueError(f"block_keys must be a positive int, got {block_keys!r}")

  def solve(targets, coefficients):
    return _solve_in_blocks(targets, coefficients, objective, epsilon, block_keys, progress)

  return solve
