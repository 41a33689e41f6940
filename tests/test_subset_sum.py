"""The exact SubsetSum solver against a float64 brute force over all 2^n subsets."""

import functools
import itertools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from lth_jax import MAX_N, solve_subset_sum
from lth_jax import mitm
from lth_jax import subset_sum

BATCH = 8  # one compiled program per n in these tests
F32_MAX = float(np.finfo(np.float32).max)


@functools.lru_cache(maxsize=None)
def _subsets(n):
  return np.array(list(itertools.product([0, 1], repeat=n)), np.float64)  # (2^n, n)


def brute_force(targets, coefficients):
  """float64 optimum over all 2^n subsets: (errors (B,), masks (B, n))."""
  subsets = _subsets(coefficients.shape[-1])
  sums = coefficients.astype(np.float64) @ subsets.T  # (B, 2^n)
  err = np.abs(targets.astype(np.float64)[:, None] - sums)
  best = np.argmin(err, axis=1)
  return err[np.arange(len(targets)), best], subsets[best].astype(bool)


def check_optimal(targets, coefficients, result, best_err=None):
  """Our subset is optimal (float64 re-evaluation) and value/error are consistent.

  ``best_err`` (B,): the optimum if known (else the brute force over ``coefficients``).
  """
  targets = np.asarray(targets, np.float32)
  coefficients = np.asarray(coefficients, np.float32)
  mask = np.asarray(result.mask)
  assert mask.dtype == bool and mask.shape == coefficients.shape
  if best_err is None:
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
# Batch shapes of BATCH instances: the solver flattens them, so no extra compilations.
batch_shapes = st.sampled_from([(BATCH,), (2, 4), (4, 1, 2)])


@pytest.mark.parametrize("n", [1, 2, 7, 12, 16])
@given(data=st.data())
def test_matches_brute_force(n, data):
  """Random zeros (padding) at random positions and magnitudes scaled by 2^[-10, 10]
  (per entry, so instances mix scales): the optimum of the instance without its zeros."""
  shape = data.draw(batch_shapes)
  c = data.draw(hnp.arrays(np.float32, (BATCH, n), elements=coef_values))
  c = c * np.exp2(data.draw(hnp.arrays(np.int8, (BATCH, n), elements=st.integers(-10, 10)))
                  .astype(np.float32))
  zero = data.draw(hnp.arrays(np.bool_, (BATCH, n)))
  t = data.draw(hnp.arrays(np.float32, (BATCH,), elements=st.floats(-3, 3, width=32)))
  t = t * np.exp2(data.draw(hnp.arrays(np.int8, (BATCH,), elements=st.integers(-10, 10)))
                  .astype(np.float32))
  c, t = np.where(zero, 0, c).astype(np.float32), t.astype(np.float32)
  res = solve_subset_sum(t.reshape(shape), c.reshape(shape + (n,)))
  assert res.mask.shape == shape + (n,) and res.error.shape == shape
  flat = type(res)(*(np.asarray(x).reshape((BATCH,) + x.shape[len(shape):]) for x in res))
  # Reference without the zeros: the padded instance must reach the same optimum.
  best = np.array([brute_force(t[i:i + 1], c[i:i + 1, ~zero[i]])[0][0] if (~zero[i]).any()
                   else abs(float(t[i])) for i in range(BATCH)])
  check_optimal(t, c, flat, best_err=best)


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
  # Even and odd n. int32x2 programs compile slowly (n = 16: ~16 s, n = 21: ~30 s on one
  # core), so both are small: the keys use both words at any n (the grid fills ~62 bits),
  # and n = 21's answers are checked against a float64 reference below.
  for n in (6, 13):
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


def grid_exponent(t, c):
  """The documented grid exponent s (module doc), from a float64 total."""
  total = abs(float(t)) + float(np.abs(c.astype(np.float64)).sum())
  return 59 - (len(c) + 1) // 2 - math.frexp(total)[1]


def on_grid(t, c, s):
  """Every nonzero input has magnitude >= 2^(24 - s): the documented exactness condition."""
  x = np.abs(np.append(c, t).astype(np.float64))
  return bool(np.all((x == 0) | (x >= 2.0 ** (24 - s))))


def exact_ints(*arrays):
  """float32 arrays as exact int64 multiples of one power of two: (ints..., exponent)."""
  frac = [Fraction(float(v)) for a in arrays for v in np.ravel(a)]
  k = max(f.denominator.bit_length() - 1 for f in frac)  # denominators are powers of two
  out = [np.array([int(Fraction(float(v)) * 2**k) for v in np.ravel(a)], np.int64)
         .reshape(np.shape(a)) for a in arrays]
  assert max(abs(int(v)) for v in np.concatenate([o.ravel() for o in out])) < 2**57
  return out + [k]


def half_sums(ints):
  """All 2^len subset sums of int64 ``ints`` (exact), subset i = bits of i."""
  sums = np.zeros(1, np.int64)
  for v in ints:
    sums = np.concatenate([sums, sums + v])
  return sums


def test_n32_against_exact_meet_in_the_middle():
  """n = 32 against an independent exact reference: int64 meet in the middle over
  2^16 x 2^16 (one half sorted, searchsorted for every sum of the other)."""
  rng = np.random.default_rng(7)
  c = rng.uniform(-1, 1, (4, 32)).astype(np.float32)
  t = np.array([0.123456, -0.654321, 3.0, -40.0], np.float32)  # the last: unreachable
  res = solve_subset_sum(t, c)
  mask = np.asarray(res.mask)
  for i in range(4):
    ti, ci, k = exact_ints(t[i], c[i])
    lo, hi = half_sums(ci[:16]), np.sort(half_sums(ci[16:]))
    need = ti - lo  # best b in hi closest to t - a
    j = np.clip(np.searchsorted(hi, need), 1, len(hi) - 1)
    best = int(np.minimum(np.abs(need - hi[j - 1]), np.abs(need - hi[j])).min())
    ours = abs(int(ti) - int(ci[mask[i]].sum()))
    s = grid_exponent(t[i], c[i])
    if on_grid(t[i], c[i], s):  # the documented exact case
      assert ours == best
      assert_nearest_f32(res.error[i], Fraction(best, 2**k))
    else:  # inputs below 2^(24 - s) are rounded: within (n + 1) 2^-s
      assert best <= ours <= best + 33 * 2 ** (k - s)
  # Unreachable -40: all negative coefficients.
  assert float(res.error[3]) == pytest.approx(40 + c[3][c[3] < 0].astype(np.float64).sum(),
                                              rel=1e-6)
  assert np.all(np.asarray(res.error[:3]) < 1e-6)  # 2^32 subsets: below a sum's rounding


def assert_nearest_f32(x, exact):
  """float32 ``x`` is a nearest float32 to the rational ``exact`` (rounded once)."""
  x = np.float32(x)
  d = abs(Fraction(float(x)) - exact)
  with np.errstate(over="ignore"):  # F32_MAX's upper neighbour is inf
    neighbours = np.nextafter(x, np.float32(-np.inf)), np.nextafter(x, np.float32(np.inf))
  for y in neighbours:
    if np.isfinite(y):
      assert d <= abs(Fraction(float(y)) - exact), (x, float(exact))


def exact_optimum(t, c):
  """Exact rational brute force over all 2^n subsets: the optimal error (Fraction)."""
  sums = [Fraction(0)]
  for v in c:
    f = Fraction(float(v))
    sums += [s + f for s in sums]
  target = Fraction(float(t))
  return min(abs(target - s) for s in sums)


@pytest.mark.parametrize("n", [7, 12])  # odd (two merge blocks) and even; shapes as above
def test_exact_optimum_when_inputs_are_on_the_grid(n):
  """The documented guarantee, checked in exact rational arithmetic: when every nonzero
  input is >= 2^(24 - s), the mask is optimal over all 2^n subsets and value/error are
  the exact ones rounded once. Inputs mix magnitudes near 1 and near 2^-20 (and zeros);
  targets sit near subset sums, so the optimum is decided by the small terms."""
  rng = np.random.default_rng(10 + n)
  big = rng.uniform(0.5, 1, (BATCH, n))
  small = rng.uniform(1, 2, (BATCH, n)) * 2.0**-20
  c = np.where(rng.random((BATCH, n)) < 0.5, big, small) * rng.choice([-1, 1], (BATCH, n))
  c = np.where(rng.random((BATCH, n)) < 0.1, 0, c).astype(np.float32)
  pick = rng.random((BATCH, n)) < 0.5
  t = (np.where(pick, c, 0).sum(-1) + rng.uniform(-1, 1, BATCH) * 2.0**-20).astype(np.float32)
  res = solve_subset_sum(t, c)
  for i in range(BATCH):
    assert on_grid(t[i], c[i], grid_exponent(t[i], c[i]))  # the condition holds
    opt = exact_optimum(t[i], c[i])
    chosen = sum((Fraction(float(v)) for v in c[i][np.asarray(res.mask[i])]), Fraction(0))
    assert abs(Fraction(float(t[i])) - chosen) == opt  # optimal, exactly
    assert_nearest_f32(res.error[i], opt)
    assert_nearest_f32(res.value[i], chosen)


def test_rounding_below_the_grid_stays_within_the_documented_bound():
  """t = 2^-40, c = [1, t (1 - 2^-22), t (1 + 2^-23)]: the grid is 2^-56 (s = 56), so both
  small coefficients round to t itself and look equally good (error 0), although only c_2
  is optimal (error 2^-63; c_1's is 2^-62). Documented: with D the total rounding (here
  2^-62 + 2^-63 <= (n + 1) 2^-(s + 1)), error is within D of the optimum and the mask's
  true error within 2 D."""
  t = 2.0**-40
  c = np.array([1, t * (1 - 2.0**-22), t * (1 + 2.0**-23)], np.float32)
  t = np.float32(t)
  s = grid_exponent(t, c)
  assert s == 56 and not on_grid(t, c, s)
  x = [Fraction(float(v)) for v in np.append(c, t)]
  rounding = sum(abs(v - Fraction(round(v * 2**s), 2**s)) for v in x)
  assert rounding == Fraction(3, 2**63) <= Fraction(len(c) + 1, 2 ** (s + 1))
  opt = exact_optimum(t, c)
  assert opt == Fraction(1, 2**63)
  for kf in ("int64", "int32x2"):
    res = solve_subset_sum(np.full(4, t), c, key_format=kf)  # (4 copies: shared shapes)
    mask = np.asarray(res.mask[0])
    chosen = sum((Fraction(float(v)) for v in c[mask]), Fraction(0))
    true_err = abs(Fraction(float(t)) - chosen)
    assert mask.sum() == 1 and not mask[0]  # one of the two small ones
    assert float(res.error[0]) == 0.0  # the grid cannot tell them apart
    assert abs(Fraction(float(res.error[0])) - opt) <= rounding
    assert opt <= true_err <= opt + 2 * rounding


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


@pytest.mark.parametrize("targets, coefficients", [
    (0.0, [3e38, 3e38, -3e38]),  # once returned error -8
    (3e38, [3e38, 3e38, 1.0]),  # once returned value 64
    (-3e38, [1e38]),
    ([0.5, 0.0], [[0.25, 0.5], [F32_MAX, F32_MAX]]),  # one bad instance in a batch
    ([1.0, F32_MAX / 2], [F32_MAX / 2, F32_MAX / 4]),  # shared coefficients: t tips it over
])
def test_total_overflow_raises(targets, coefficients):
  """Finite float32 inputs whose |t| + sum|c| exceeds the float32 maximum."""
  with pytest.raises(ValueError, match="overflows float32.*rescale"):
    solve_subset_sum(np.asarray(targets, np.float32), np.asarray(coefficients, np.float32))


def test_total_overflow_inside_jit_gives_nan_and_large_finite_totals_are_exact():
  """Inside jit the overflow check cannot raise: such instances come back nan (with an
  empty mask) like non-finite ones; totals below the limit are still solved exactly
  (eagerly up to S = F32_MAX; inside jit the float32 check also flags S within a
  relative 2^-18 of it, as documented)."""
  t = np.array([0, 3e38, 0, 2e37, 0.5, -F32_MAX], np.float32)
  c = np.array([[3e38, 3e38, -3e38],  # S = 9e38
                [3e38, 3e38, 1],  # S = 9e38
                [1e38, 1e38, -1e38],  # S = 3e38 < 3.4e38: fine
                [1.2e38, -1e38, 0.9e38],  # S = 3.3e38: fine
                [0.25, 0.5, 1],
                [0, 0, 0]], np.float32)  # S = F32_MAX: fine eagerly (error F32_MAX)
  ok = np.array([False, False, True, True, True, True])
  jit_ok = ok & (np.arange(6) != 5)
  jitted = jax.jit(solve_subset_sum)(t, c)
  eager = solve_subset_sum(t[ok], c[ok])
  assert np.isnan(np.asarray(jitted.error)[~jit_ok]).all()
  assert np.isnan(np.asarray(jitted.value)[~jit_ok]).all()
  assert not np.asarray(jitted.mask)[~jit_ok].any()
  for x, y in zip(jitted, eager):
    np.testing.assert_array_equal(np.asarray(x)[jit_ok], np.asarray(y)[:3])
  assert float(eager.error[3]) == F32_MAX
  for i, j in enumerate(np.flatnonzero(ok)):
    opt = exact_optimum(t[j], c[j])
    chosen = sum((Fraction(float(v)) for v in c[j][np.asarray(eager.mask[i])]), Fraction(0))
    assert abs(Fraction(float(t[j])) - chosen) == opt
    assert_nearest_f32(eager.error[i], opt)


def test_grid_exponent_never_overflows():
  """The grid exponent against a float64 total, also where the float32 sum overflows:
  keys stay below 2^62 (< 2^63 with float32 rounding) and the grid is not coarser than
  needed. The solver core is then right even there (the public entry points reject such
  instances before they get this far)."""
  rng = np.random.default_rng(11)
  n = 6
  scale = np.exp2(rng.integers(-100, 127, (1, 64)).astype(np.float64))
  c = (rng.uniform(-1.9, 1.9, (n, 64)) * scale).astype(np.float32)
  t = (rng.uniform(-1.9, 1.9, 64) * scale[0]).astype(np.float32)
  c[:, :4] = np.float32(F32_MAX)  # S = 7 * F32_MAX: the float32 sum is inf
  c[:, 4] = 0
  t[4] = 1.0  # S = 1
  with np.errstate(over="ignore"):
    assert not np.isfinite(np.abs(c).sum(0) + np.abs(t)).all()
  half = (n + 1) // 2
  s = np.asarray(mitm.grid_exponent(jnp.asarray(t), jnp.asarray(c), half))
  total = np.abs(t.astype(np.float64)) + np.abs(c.astype(np.float64)).sum(0)
  top = np.log2(total) + s + half + 3  # log2 of the largest key
  assert (top < 62 + 1e-6).all() and (top >= 60).all()
  np.testing.assert_array_equal(s, [59 - half - math.frexp(v)[1] for v in total])
  # The core on totals beyond float32 (no validation there): exact optimum anyway.
  tt = np.array([0, 3e38, -3e38, 1e30], np.float32)
  cc = np.array([[3e38, 3e38, -3e38], [3e38, 3e38, 1], [-3e38, 3e38, -3e38],
                 [F32_MAX, -F32_MAX, 1e30]], np.float32)
  mask, _, error = subset_sum._solve_flat(jnp.asarray(tt), jnp.asarray(cc),
                                          key_format="int64", chunk=4)  # as solve_subset_sum
  for i in range(4):
    chosen = sum((Fraction(float(v)) for v in cc[i][np.asarray(mask[i])]), Fraction(0))
    assert abs(Fraction(float(tt[i])) - chosen) == exact_optimum(tt[i], cc[i]) == 0
    assert float(error[i]) == 0


def test_small_negative_values_identical_in_both_key_formats():
  """Negative values whose grid integer needs more than 24 bits below 2^32: once a
  rounding difference between the key formats."""
  x = -(2.0**-30) * (1 + 2.0**-16 + 2.0**-20 + 2.0**-22 * np.arange(1, 5))
  t = x.astype(np.float32)
  c = np.stack([np.ones(4), x, np.full(4, 0.5)], -1).astype(np.float32)
  a = solve_subset_sum(t, c, key_format="int64")
  b = solve_subset_sum(t, c, key_format="int32x2")
  for u, v in zip(a, b):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  np.testing.assert_array_equal(np.asarray(a.value), t)  # the exact sum: -|x|, on the grid


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
