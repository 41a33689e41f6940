"""Fewest terms within epsilon, against a float64 brute force over all 2^n subsets.

Most tests share one compiled program (batch 16, n = 11): inputs on a 2^-10 grid are exact
both in float64 and on the solver's fixed-point grid, so counts, errors and feasibility
are compared for equality, including errors exactly equal to epsilon.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from lth_jax import subset_sum
from lth_jax.fewest_terms import MAX_N, default_enumerated_terms, solve_fewest_terms
from lth_jax.subset_sum import solve_subset_sum

BATCH, N = 16, 11
STEP = 2.0**-10


def brute_force(targets, coefficients, epsilon):
  """float64 over all 2^n subsets: (feasible, min count, its min error, min error)."""
  n = coefficients.shape[-1]
  subsets = np.array(list(itertools.product([0, 1], repeat=n)), np.float64)  # (2^n, n)
  err = np.abs(np.asarray(targets, np.float64)[:, None]
               - np.asarray(coefficients, np.float64) @ subsets.T)
  ok = err <= np.asarray(epsilon, np.float64).reshape(-1, 1)
  counts = subsets.sum(1)[None]
  min_count = np.where(ok, counts, np.inf).min(1)
  best_err = np.where(ok & (counts == min_count[:, None]), err, np.inf).min(1)
  return ok.any(1), min_count, best_err, err.min(1)


def check(targets, coefficients, epsilon, res):
  """``res`` is the sparsest subset within epsilon (or solve_subset_sum's answer)."""
  t = np.asarray(targets, np.float32)
  c = np.asarray(coefficients, np.float32)
  e = np.broadcast_to(np.asarray(epsilon, np.float32), t.shape)
  feasible, min_count, best_err, _ = brute_force(t, c, e)
  mask, count = np.asarray(res.mask), np.asarray(res.count)
  np.testing.assert_array_equal(np.asarray(res.feasible), feasible)
  np.testing.assert_array_equal(count, mask.sum(-1))
  chosen = np.where(mask, c.astype(np.float64), 0.0).sum(-1)
  np.testing.assert_array_equal(np.asarray(res.value), chosen.astype(np.float32))
  np.testing.assert_array_equal(np.asarray(res.error),
                                np.abs(t - chosen).astype(np.float32))
  f = feasible
  np.testing.assert_array_equal(count[f], min_count[f])
  np.testing.assert_array_equal(np.abs(t - chosen)[f], best_err[f])  # minimal among min count
  assert np.all(np.abs(t - chosen)[f] <= e[f])
  assert not np.any(mask[f] & (c[f] == 0))  # a zero never helps a sparsest subset
  ref = solve_subset_sum(t, c)
  for ours, theirs in zip(res[:3], ref):
    np.testing.assert_array_equal(np.asarray(ours)[~f], np.asarray(theirs)[~f])


def on_grid(lo, hi):
  return st.integers(int(lo / STEP), int(hi / STEP)).map(lambda k: np.float32(k * STEP))


@pytest.mark.parametrize("n", [5, N])
@given(data=st.data())
def test_matches_brute_force(n, data):
  c = data.draw(hnp.arrays(np.float32, (BATCH, n), elements=on_grid(-1, 1)))
  t = data.draw(hnp.arrays(np.float32, (BATCH,), elements=on_grid(-3, 3)))
  eps = data.draw(on_grid(STEP, 64 * STEP))
  check(t, c, eps, solve_fewest_terms(t, c, eps))


@given(data=st.data())
def test_all_tiers_agree(data):
  """Tier 3 alone (no enumeration) gives the same counts and errors."""
  c = data.draw(hnp.arrays(np.float32, (BATCH, N), elements=on_grid(-1, 1)))
  t = data.draw(hnp.arrays(np.float32, (BATCH,), elements=on_grid(-3, 3)))
  eps = data.draw(on_grid(STEP, 8 * STEP))  # small: more instances need many terms
  res = solve_fewest_terms(t, c, eps, max_enumerated_terms=0)
  check(t, c, eps, res)
  default = solve_fewest_terms(t, c, eps)
  for name in ("error", "count", "feasible"):  # the value may be t + error or t - error
    np.testing.assert_array_equal(np.asarray(getattr(res, name)),
                                  np.asarray(getattr(default, name)))


def test_continuous_inputs_and_default_depth():
  rng = np.random.default_rng(0)
  c = rng.uniform(-1, 1, (BATCH, N)).astype(np.float32)
  t = rng.uniform(-1, 1, BATCH).astype(np.float32)
  for eps in (1e-4, 3e-3, 0.05):  # infeasible, mixed, easy
    res = solve_fewest_terms(t, c, eps)
    feasible, min_count, best_err, _ = brute_force(t, c, np.full(BATCH, np.float32(eps)))
    np.testing.assert_array_equal(np.asarray(res.feasible), feasible)
    np.testing.assert_array_equal(np.asarray(res.count)[feasible], min_count[feasible])
    np.testing.assert_allclose(np.asarray(res.error)[feasible], best_err[feasible],
                               rtol=1e-6, atol=1e-12)
  assert default_enumerated_terms(13) == 3 and default_enumerated_terms(2) == 2


def test_key_formats_identical():
  """Bit-identical results; n = 7 (odd: padded) keeps the int32x2 program small."""
  rng = np.random.default_rng(1)
  c = (rng.integers(-1024, 1025, (BATCH, 7)) * STEP).astype(np.float32)
  c[:, ::3] = rng.uniform(-1, 1, (BATCH, 3)).astype(np.float32)  # off-grid values too
  t = rng.uniform(-1.5, 1.5, BATCH).astype(np.float32)
  eps = np.float32(0.01)
  a = solve_fewest_terms(t, c, eps, key_format="int64", max_enumerated_terms=1)
  b = solve_fewest_terms(t, c, eps, key_format="int32x2", max_enumerated_terms=1)
  f, count = np.asarray(a.feasible), np.asarray(a.count)
  assert (~f).any() and (f & (count <= 1)).any() and (f & (count >= 2)).any()  # all tiers
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  check(t, c, eps, a)


def test_powers_of_two_need_many_terms():
  """c_i = 2^-(i+1): the only exact subset is t's binary expansion (up to all N terms)."""
  c = np.broadcast_to(2.0 ** -np.arange(1, N + 1), (BATCH, N)).astype(np.float32)
  rng = np.random.default_rng(2)
  k = rng.integers(0, 2**N, BATCH)
  k[:3] = [2**N - 1, 2**N - 2, 0]
  t = (k * 2.0**-N).astype(np.float32)
  eps = np.float32(2.0**-(N + 2))
  res = solve_fewest_terms(t, c, eps)
  bits = ((k[:, None] >> np.arange(N - 1, -1, -1)) & 1).astype(bool)
  np.testing.assert_array_equal(np.asarray(res.mask), bits)
  np.testing.assert_array_equal(np.asarray(res.error), 0)
  assert int(res.count[0]) == N and int(res.count[2]) == 0
  check(t, c, eps, res)


def test_error_exactly_epsilon_is_feasible():
  c = np.zeros((BATCH, N), np.float32)
  c[:, :3] = [0.25, 0.75, 0.375]
  t = np.full(BATCH, 0.5, np.float32)
  eps = np.full(BATCH, 0.125, np.float32)
  eps[1] = np.nextafter(np.float32(0.125), np.float32(0))
  res = solve_fewest_terms(t, c, eps)
  assert bool(res.feasible[0]) and int(res.count[0]) == 1 and float(res.error[0]) == 0.125
  # just below: no subset is that close (all errors are multiples of 0.125)
  assert not bool(res.feasible[1]) and float(res.error[1]) == 0.125
  check(t, c, eps, res)


def test_zero_coefficients_never_change_the_answer():
  rng = np.random.default_rng(3)
  c = (rng.integers(-1024, 1025, (BATCH, 5)) * STEP).astype(np.float32)
  t = (rng.integers(-2048, 2049, BATCH) * STEP).astype(np.float32)
  eps = np.float32(0.02)
  base = solve_fewest_terms(t, c, eps)
  appended = np.concatenate([c, np.zeros((BATCH, N - 5), np.float32)], -1)
  interleaved = np.zeros((BATCH, N), np.float32)
  interleaved[:, [1, 3, 6, 8, 10]] = c
  for padded in (appended, interleaved):
    res = solve_fewest_terms(t, padded, eps)
    for name in ("value", "error", "feasible"):
      np.testing.assert_array_equal(np.asarray(getattr(res, name)),
                                    np.asarray(getattr(base, name)))
    f = np.asarray(base.feasible)
    assert f.any() and not f.all()
    # infeasible: solve_subset_sum's subset, which may include zeros; feasible: never
    np.testing.assert_array_equal(np.asarray(res.count)[f], np.asarray(base.count)[f])
    assert not np.any(np.asarray(res.mask)[f] & (padded[f] == 0))


def test_batch_shapes_broadcasting_and_per_instance_epsilon():
  rng = np.random.default_rng(4)
  c = rng.uniform(-1, 1, (2, 2, 4, N)).astype(np.float32)
  t = rng.uniform(-1, 1, (2, 2, 4)).astype(np.float32)
  eps = rng.uniform(1e-3, 0.1, (2, 1, 4)).astype(np.float32)
  res = solve_fewest_terms(t, c, eps)
  assert res.mask.shape == (2, 2, 4, N) and res.count.shape == (2, 2, 4)
  assert res.count.dtype == jnp.int32 and res.feasible.dtype == bool
  flat = solve_fewest_terms(t.reshape(-1), c.reshape(-1, N),
                            np.broadcast_to(eps, t.shape).reshape(-1))
  for x, y in zip(res, flat):
    np.testing.assert_array_equal(np.asarray(x).reshape(np.asarray(y).shape), np.asarray(y))
  shared = solve_fewest_terms(t, c[0, 0, 0], 0.01)  # one coefficient vector for all
  check(t.reshape(-1), np.broadcast_to(c[0, 0, 0], (BATCH, N)), 0.01,
        type(shared)(*(np.asarray(x).reshape((BATCH,) + x.shape[3:]) for x in shared)))


def test_small_chunks_scalar_jit_and_vmap():
  rng = np.random.default_rng(5)
  c = jnp.asarray(rng.uniform(-1, 1, (3, 5, 6)).astype(np.float32))
  t = jnp.asarray(rng.uniform(-1, 1, (3, 5)).astype(np.float32))
  eager = solve_fewest_terms(t, c, 0.05)
  chunked = solve_fewest_terms(t, c, 0.05, chunk_keys=16)  # many chunks, ragged last one
  # vmap turns the tiers' lax.cond into selects: every tier runs, same answers
  jitted = jax.jit(jax.vmap(lambda t, c: solve_fewest_terms(t, c, 0.05)))(t, c)
  for other in (chunked, jitted):
    for x, y in zip(eager, other):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  scalar = solve_fewest_terms(t[0, 0], c[0, 0], 0.05)
  assert scalar.mask.shape == (6,) and scalar.count.shape == ()
  assert int(scalar.count) == int(eager.count[0, 0])
  assert eager.value.dtype == jnp.float32 and not jax.config.jax_enable_x64


def test_non_finite_inside_jit_gives_nan():
  # Row 3: finite, but |t| + sum|c| overflows float32 (no valid grid): NaN, not garbage.
  c = jnp.ones((4, 4), jnp.float32).at[1, 0].set(jnp.nan).at[3].set(3e38)
  eps = jnp.array([0.1, 0.1, -1.0, 0.1], jnp.float32)
  res = jax.jit(lambda c, e: solve_fewest_terms(jnp.full(4, 2.0), c, e))(c, eps)
  assert bool(res.feasible[0]) and int(res.count[0]) == 2
  for i in (1, 2, 3):
    assert np.isnan(float(res.error[i])) and not bool(res.feasible[i])
    assert int(res.count[i]) == 0


@pytest.mark.parametrize(
    "targets, coefficients, epsilon, message",
    [
        (np.float32(np.nan), np.ones(4, np.float32), 0.1, "non-finite"),
        (np.float32(0.5), np.array([1.0, np.inf], np.float32), 0.1, "non-finite"),
        (np.float32(0.5), np.ones(4, np.float32), 0.0, "epsilon"),
        (np.float32(0.5), np.ones(4, np.float32), -0.1, "epsilon"),
        (np.float32(0.5), np.ones(4, np.float32), np.inf, "epsilon"),
        (np.float32(0.5), np.ones(4, np.float32), np.nan, "epsilon"),
        (np.zeros(3, np.float32), np.ones((3, 4), np.float32), np.ones(2), "broadcast"),
        (np.zeros(3, np.float32), np.ones((4, 5), np.float32), 0.1, "broadcast"),
        (np.zeros((0,), np.float32), np.ones((0, 5), np.float32), 0.1, "empty batch"),
        (np.zeros(3, np.float32), np.ones((3, 0), np.float32), 0.1, "empty last axis"),
        (np.zeros(3, np.float32), np.ones((3, MAX_N + 1), np.float32), 0.1, "beyond"),
        (np.zeros(3, np.float32), np.float32(1.0), 0.1, "at least one axis"),
    ],
)
def test_bad_input_raises(targets, coefficients, epsilon, message):
  with pytest.raises(ValueError, match=message):
    solve_fewest_terms(targets, coefficients, epsilon)


def test_bad_options_raise():
  t, c = np.zeros(2, np.float32), np.ones((2, 3), np.float32)
  with pytest.raises(ValueError, match="key_format"):
    solve_fewest_terms(t, c, 0.1, key_format="int16")
  with pytest.raises(ValueError, match="max_enumerated_terms"):
    solve_fewest_terms(t, c, 0.1, max_enumerated_terms=-1)
