"""The exact SubsetSum solver against a float64 brute force over all 2^n subsets."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from lth_jax import MAX_N, solve_subset_sum

BATCH = 8  # one compiled program per n in these tests


def brute_force(targets, coefficients):
  """float64 optimum over all 2^n subsets: (errors (B,), masks (B, n))."""
  n = coefficients.shape[-1]
  subsets = np.array(list(itertools.product([0, 1], repeat=n)), np.float64)  # (2^n, n)
  sums = coefficients.astype(np.float64) @ subsets.T  # (B, 2^n)
  err = np.abs(targets.astype(np.float64)[:, None] - sums)
  best = np.argmin(err, axis=1)
  return err[np.arange(len(targets)), best], subsets[best].astype(bool)


def check_optimal(targets, coefficients, result):
  """Our subset is optimal (float64 re-evaluation) and value/error are consistent."""
  targets = np.asarray(targets, np.float32)
  coefficients = np.asarray(coefficients, np.float32)
  mask = np.asarray(result.mask)
  assert mask.dtype == bool and mask.shape == coefficients.shape
  best_err, _ = brute_force(targets, coefficients)
  ours = np.where(mask, coefficients.astype(np.float64), 0.0).sum(-1)
  our_err = np.abs(targets.astype(np.float64) - ours)
  # Fixed-point grid is ~2^-50 of |t| + sum|c|: optimal up to that rounding.
  scale = np.abs(targets).astype(np.float64) + np.abs(coefficients).astype(np.float64).sum(-1)
  # XLA flushes subnormal float32 inputs to zero, so each term may be off by float32 tiny.
  tol = 1e-12 * scale + (coefficients.shape[-1] + 1) * np.finfo(np.float32).tiny
  np.testing.assert_array_less(our_err, best_err + tol)
  assert np.all(np.abs(np.asarray(result.error) - our_err) <= 1e-6 * our_err + tol)
  assert np.all(np.abs(np.asarray(result.value) - ours) <= 1e-6 * np.abs(ours) + tol)


coef_values = st.floats(-1, 1, width=32, allow_subnormal=False)


@pytest.mark.parametrize("n", [1, 2, 7, 12, 16])
@given(data=st.data())
def test_matches_brute_force(n, data):
  c = data.draw(hnp.arrays(np.float32, (BATCH, n), elements=coef_values))
  t = data.draw(hnp.arrays(np.float32, (BATCH,), elements=st.floats(-3, 3, width=32)))
  check_optimal(t, c, solve_subset_sum(t, c))


@pytest.mark.parametrize("sign", ["positive", "negative", "mixed"])
def test_sign_patterns_and_out_of_range_targets(sign):
  rng = np.random.default_rng(0)
  c = rng.uniform(0, 1, (BATCH, 12)).astype(np.float32)
  if sign == "negative":
    c = -c
  elif sign == "mixed":
    c = c * rng.choice([-1, 1], c.shape).astype(np.float32)
  # targets far outside the reachable range, inside it, and at zero
  t = np.array([-100, -5, -0.3, 0, 0.3, 5, 100, 2.5], np.float32)
  res = solve_subset_sum(t, c)
  check_optimal(t, c, res)
  if sign == "positive":  # unreachable from below: the empty subset; from above: all
    assert not np.asarray(res.mask[0]).any()
    assert np.asarray(res.mask[-2]).all()


def test_key_formats_identical():
  rng = np.random.default_rng(1)
  for n in (5, 16, 21):
    c = rng.uniform(-1, 1, (64, n)).astype(np.float32)
    t = rng.uniform(-1, 1, 64).astype(np.float32)
    a = solve_subset_sum(t, c, key_format="int64")
    b = solve_subset_sum(t, c, key_format="int32x2")
    for x, y in zip(a, b):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_n21_against_meet_in_the_middle_reference():
  """n = 21 (the paper's setting): compare with a float64 numpy meet in the middle."""
  rng = np.random.default_rng(2)
  c = rng.uniform(-1, 1, (16, 21)).astype(np.float32)
  t = rng.uniform(-0.5, 0.5, 16).astype(np.float32)
  res = solve_subset_sum(t, c)
  subsets = np.array(list(itertools.product([0, 1], repeat=11)), np.float64)
  for i in range(16):
    a = subsets @ c[i, :11].astype(np.float64)
    b = np.sort(subsets[:, :10][:1024] @ c[i, 11:].astype(np.float64))
    need = float(t[i]) - a
    j = np.clip(np.searchsorted(b, need), 1, len(b) - 1)
    best = np.minimum(np.abs(need - b[j - 1]), np.abs(need - b[j])).min()
    ours = abs(float(t[i]) - c[i][np.asarray(res.mask[i])].astype(np.float64).sum())
    assert ours <= best + 1e-12
    assert ours < 1e-3  # sanity: 2^21 subsets of U[-1,1] cover [-0.5, 0.5] densely


def test_zero_padding_never_changes_the_optimum():
  rng = np.random.default_rng(3)
  c = rng.uniform(-1, 1, (BATCH, 9)).astype(np.float32)
  t = rng.uniform(-1, 1, BATCH).astype(np.float32)
  padded = np.concatenate([c, np.zeros((BATCH, 5), np.float32)], -1)
  a, b = solve_subset_sum(t, c), solve_subset_sum(t, padded)
  np.testing.assert_allclose(np.asarray(a.error), np.asarray(b.error), rtol=0, atol=0)
  # zeros interleaved too
  inter = np.zeros((BATCH, 18), np.float32)
  inter[:, ::2] = c
  np.testing.assert_array_equal(np.asarray(solve_subset_sum(t, inter).error),
                                np.asarray(a.error))


def test_batch_shapes_and_broadcasting():
  rng = np.random.default_rng(4)
  c = rng.uniform(-1, 1, (2, 3, 4, 10)).astype(np.float32)
  t = rng.uniform(-1, 1, (2, 3, 4)).astype(np.float32)
  res = solve_subset_sum(t, c)
  assert res.mask.shape == (2, 3, 4, 10) and res.error.shape == (2, 3, 4)
  flat = solve_subset_sum(t.reshape(-1), c.reshape(-1, 10))
  np.testing.assert_array_equal(np.asarray(res.mask).reshape(-1, 10), np.asarray(flat.mask))
  # one coefficient vector shared by a row of targets (the "direct" layout)
  shared = solve_subset_sum(t, c[:, :, :1, :])
  check_optimal(t.reshape(-1), np.broadcast_to(c[:, :, :1, :], c.shape).reshape(-1, 10),
                type(shared)(*(x.reshape((-1,) + x.shape[3:]) for x in shared)))
  scalar = solve_subset_sum(np.float32(0.3), c[0, 0, 0])
  assert scalar.mask.shape == (10,) and scalar.error.shape == ()


def test_deterministic_and_jit_vmap_compatible():
  rng = np.random.default_rng(5)
  c = jnp.asarray(rng.uniform(-1, 1, (4, BATCH, 10)).astype(np.float32))
  t = jnp.asarray(rng.uniform(-1, 1, (4, BATCH)).astype(np.float32))
  eager = solve_subset_sum(t, c)
  jitted = jax.jit(lambda t, c: solve_subset_sum(t, c))(t, c)
  vmapped = jax.vmap(lambda t, c: solve_subset_sum(t, c))(t, c)
  for x, y, z in zip(eager, jitted, vmapped):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(x), np.asarray(z))
  # 64-bit types never leak out, and the global flag is untouched
  assert eager.value.dtype == jnp.float32 and not jax.config.jax_enable_x64


def test_small_chunks_give_identical_results():
  rng = np.random.default_rng(6)
  c = rng.uniform(-1, 1, (100, 14)).astype(np.float32)
  t = rng.uniform(-1, 1, 100).astype(np.float32)
  a = solve_subset_sum(t, c)
  b = solve_subset_sum(t, c, chunk_keys=1024)  # many chunks, ragged last chunk
  np.testing.assert_array_equal(np.asarray(a.mask), np.asarray(b.mask))


def test_n32_supported():
  rng = np.random.default_rng(7)
  c = rng.uniform(-1, 1, (2, 32)).astype(np.float32)
  t = np.array([0.123456, -0.654321], np.float32)
  res = solve_subset_sum(t, c)
  ours = np.abs(t - np.where(np.asarray(res.mask), c.astype(np.float64), 0).sum(-1))
  np.testing.assert_allclose(np.asarray(res.error), ours, rtol=1e-6)
  assert np.all(ours < 1e-6)  # 2^32 subsets: far below float32 rounding of a sum


@pytest.mark.parametrize(
    "targets, coefficients, message",
    [
        (np.float32(np.nan), np.ones(4, np.float32), "non-finite"),
        (np.float32(0.5), np.array([1.0, np.inf], np.float32), "non-finite"),
        (np.zeros(3, np.float32), np.ones((4, 5), np.float32), "broadcast"),
        (np.zeros((0,), np.float32), np.ones((0, 5), np.float32), "empty batch"),
        (np.zeros(3, np.float32), np.ones((3, 0), np.float32), "empty last axis"),
        (np.zeros(3, np.float32), np.ones((3, MAX_N + 1), np.float32), "beyond"),
        (np.zeros(3, np.float32), np.float32(1.0), "at least one axis"),
    ],
)
def test_bad_input_raises(targets, coefficients, message):
  with pytest.raises(ValueError, match=message):
    solve_subset_sum(targets, coefficients)


def test_unknown_key_format():
  with pytest.raises(ValueError, match="key_format"):
    solve_subset_sum(np.zeros(2, np.float32), np.ones((2, 3), np.float32), key_format="int16")


def test_non_finite_inside_jit_gives_nan_not_silent_answer():
  c = jnp.ones((2, 4), jnp.float32).at[1, 0].set(jnp.nan)
  res = jax.jit(lambda c: solve_subset_sum(jnp.zeros(2), c))(c)
  assert np.isfinite(float(res.error[0])) and np.isnan(float(res.error[1]))
  assert not np.asarray(res.mask[1]).any()


def test_subnormal_inputs_count_as_zero():
  # Found by hypothesis in CI: XLA flushes subnormals, so a subnormal target is matched by
  # the empty subset with reported error 0 (within float32 tiny of the float64 error).
  tiny = np.float32(7.13594e-40)
  t = np.full((BATCH,), tiny, np.float32)
  c = np.zeros((BATCH, 2), np.float32)
  c[1] = [tiny, 0.5]
  result = solve_subset_sum(t, c)
  check_optimal(t, c, result)
  assert np.all(np.asarray(result.error) <= np.finfo(np.float32).tiny)
