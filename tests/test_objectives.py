"""Tests for lth_jax.objectives.blocked_solver (fixed-size blocks with progress)."""

import jax
import numpy as np
import pytest

from lth_jax import objectives
from lth_jax.progress import Progress

EPS = 0.01
N = 12  # as in test_run_experiment1: shares its compiled programs


def _instances(count, seed=0):
  rng = np.random.default_rng(seed)
  coefficients = rng.uniform(-1, 1, (count, N)).astype(np.float32)
  targets = rng.uniform(-0.5, 0.5, count).astype(np.float32)
  return targets, coefficients


@pytest.mark.parametrize("objective", objectives.OBJECTIVES)
def test_blocked_solver_is_the_objectives_solver(objective):
  # 600 instances: several blocks of 256 (the smallest block), the last one partial.
  targets, coefficients = _instances(600)
  progress = Progress(len(targets), what="test", unit="instances")
  res = objectives.blocked_solver(objective, EPS, block_keys=1, progress=progress)(
      targets, coefficients)
  ref = objectives.objective_solver(objective, EPS)(targets, coefficients)
  assert isinstance(res.mask, np.ndarray) and res.mask.dtype == bool
  assert res.mask.shape == (600, N) and res.error.shape == (600,)
  np.testing.assert_array_equal(res.mask, np.asarray(ref.mask))
  np.testing.assert_allclose(res.error, np.asarray(ref.error), atol=1e-6)
  sums = np.where(res.mask, coefficients, np.float32(0)).sum(-1)
  np.testing.assert_allclose(res.error, np.abs(sums - targets), atol=1e-5)
  assert progress.done == 600  # one add per block


def test_blocked_solver_one_compiled_shape():
  # A block's size depends on m only: any instance count reuses the same program.
  solve = objectives.blocked_solver("min_error", EPS, block_keys=1)
  solve(*_instances(10))
  before = objectives._solve_block._cache_size()
  for count in (1, 300, 513):
    assert solve(*_instances(count, seed=count)).error.shape == (count,)
  assert objectives._solve_block._cache_size() == before


def test_blocked_solver_checks_its_arguments():
  with pytest.raises(ValueError, match="objective"):
    objectives.blocked_solver("fastest", EPS)
  with pytest.raises(ValueError, match="block_keys"):
    objectives.blocked_solver("min_error", EPS, block_keys=0)
  targets, coefficients = _instances(5)
  with pytest.raises(ValueError, match="4 targets for 5"):
    objectives.blocked_solver("min_error", EPS)(targets[:4], coefficients)
