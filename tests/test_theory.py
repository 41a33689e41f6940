"""Theory formulas against hand-computed numbers; the Lueker coverage check against the
SPEC's reference values (cheap sizes) and its exact reduction beyond the solver's size."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import lueker
from lth_jax import subset_sum
from lth_jax import theory


def test_construction_size_single_layer():
  # log2(4 * 4 * 1 / 0.01) = log2(1600) = 10.644; C = 2 -> 21.29 -> 22 copies
  size = theory.construction_size((4, 4), 0.01, constant=2.0)
  assert size.copies == (22,)
  assert size.hidden_widths == (88,)
  assert size.params == 22 * 4 * (4 + 4) == 704
  assert size.width_factor == 22.0


def test_construction_size_two_layers():
  # l = 2: log2(8*4*2/0.1) = log2(640) = 9.32 -> 10; log2(4*2*2/0.1) = log2(160) = 7.32 -> 8
  size = theory.construction_size((8, 4, 2), 0.1, constant=1.0)
  assert size.copies == (10, 8)
  assert size.hidden_widths == (80, 32)
  assert size.params == 10 * 8 * 12 + 8 * 4 * 6 == 1152
  assert size.width_factor == 80 / 8
  assert theory.log_term((8, 4, 2), 0.1) == pytest.approx((math.log2(640), math.log2(160)))
  # an exact integer product is not rounded up: log2(2*2*1/0.25) = 4, C = 1.5 -> 6
  assert theory.construction_size((2, 2), 0.25, constant=1.5).copies == (6,)


def test_random_params_and_direct_construction_size():
  # network: n d_in (d_in + d_out) per layer; direct: n coefficients per target weight
  assert theory.random_params((8, 4, 2), (10, 8)) == 10 * 8 * 12 + 8 * 4 * 6
  assert theory.random_params((8, 4, 2), 3, "single") == 3 * (8 * 12 + 4 * 6)
  assert theory.random_params((8, 4, 2), (10, 8), "direct") == 10 * 32 + 8 * 8
  net = theory.construction_size((8, 4, 2), 0.1, constant=1.0)
  assert net.params == theory.random_params((8, 4, 2), net.copies)
  direct = theory.construction_size((8, 4, 2), 0.1, constant=1.0, method="direct")
  assert direct.copies == net.copies == (10, 8)  # the method changes only what is counted
  assert direct.params == 10 * 32 + 8 * 8 and direct.width_factor == 10.0
  with pytest.raises(ValueError, match="copies"):
    theory.random_params((8, 4, 2), (10,))
  with pytest.raises(ValueError, match="method"):
    theory.random_params((4, 4), 3, "best")


def test_counting_lower_bound():
  lb = theory.counting_lower_bound(8, 8, 0.01)
  bits = math.log2(50.0)  # log2(1 / (2 * 0.01)) = 5.644
  assert lb.params == pytest.approx(64 * bits)       # 361.2
  assert lb.width == pytest.approx(4 * bits)         # (d/2) log2(1/(2 eps)) = 22.58
  assert lb.per_input == pytest.approx(bits / 2)     # 2.82
  rect = theory.counting_lower_bound(6, 3, 0.125)    # log2(4) = 2
  assert rect == pytest.approx((36.0, 4.0, 4.0 / 6))
  assert theory.counting_lower_bound(4, 4, 0.5).params == 0.0


def test_malach_factor_convention():
  assert theory.malach_width_factor((10, 10)) == 1e4                 # d^4 l^2, l = 1
  assert theory.malach_width_factor((8, 4, 2)) == 8**4 * 2**2 == 16384
  assert theory.malach_hidden_width((8, 4, 2)) == 8 * 16384
  assert theory.malach_width_factor((10, 10), constant=0.5) == 5e3


def test_calibrate_constant():
  meas = [((4, 4), 22.0), ((16, 16), 30.0), ((32, 32), math.inf)]
  c = theory.calibrate_constant(meas, 0.01)
  assert c == pytest.approx(max(22 / math.log2(1600), 30 / math.log2(25600)))
  assert all(theory.construction_size(s, 0.01, c).copies[0] >= n for s, n in meas[:2])
  assert math.isnan(theory.calibrate_constant([((4, 4), math.inf)], 0.01))


def test_bad_theory_arguments():
  with pytest.raises(ValueError, match="epsilon"):
    theory.construction_size((4, 4), 1.5)
  with pytest.raises(ValueError, match="layer_sizes"):
    theory.construction_size((4,), 0.1)
  with pytest.raises(ValueError, match="constant"):
    theory.construction_size((4, 4), 0.1, constant=0)


@pytest.mark.parametrize("kind, n", [("uniform", 12), ("uniform", 16), ("products", 20)])
def test_lueker_reproduces_reference(kind, n):
  ref, trials = lueker.REFERENCE[kind][n], 200
  # All three pad to 18 coefficients (zeros change no subset sum): one compiled program.
  cov = lueker.coverage(jax.random.key(n), n, kind, trials=trials, epsilon=0.01, pad_to=18)
  tol = lueker.binomial_tolerance(ref, trials)
  assert cov.covered <= cov.covered_upper
  assert cov.covered_upper - cov.covered <= 0.05  # the grid brackets the truth tightly
  assert abs(cov.covered_upper - ref) <= tol, (kind, n, cov.covered_upper, ref, tol)
  assert cov.spacing <= 0.01 / 4 + 1e-9


def test_lueker_reduction_beyond_solver_size_is_exact():
  coefs = lueker.draw_coefficients(jax.random.key(0), "uniform", 6, 8)
  z = jnp.asarray(lueker.grid(0.1))
  direct = lueker._worst_errors(coefs, z, solver_max_n=36)
  reduced = lueker._worst_errors(coefs, z, solver_max_n=5)  # 2^3 shifts of 5-coefficient sums
  np.testing.assert_allclose(reduced, direct, atol=1e-6)


def test_lueker_size_limits_fit_the_solver():
  assert lueker.max_size("uniform") == subset_sum.MAX_N
  top = lueker.max_size("products")
  assert lueker.instance_size("products", top) <= subset_sum.MAX_N
  assert lueker.instance_size("products", top + 1) > subset_sum.MAX_N
  assert top >= max(lueker.REFERENCE["products"])  # the SPEC's n = 44 stays allowed
  # the expected largest of 100 halves: above the Binomial(n, 1/2) mean, below n
  draws = np.asarray(lueker.draw_coefficients(jax.random.key(2), "products", 100, 44))
  largest = int((draws != 0).sum(1).max())
  assert 22 < lueker.instance_size("products", 44) < 44
  assert abs(largest - lueker.instance_size("products", 44)) <= 4, largest


def test_products_are_one_sign_half():
  coefs = np.asarray(lueker.draw_coefficients(jax.random.key(1), "products", 400, 20))
  members = (coefs != 0).sum(1)
  assert abs(members.mean() - 10) < 0.5                   # Binomial(20, 1/2)
  for row, m in zip(coefs, members):                      # members first, then zeros
    assert np.all(row[:m] != 0) and np.all(row[m:] == 0)
  assert np.all(np.abs(coefs) <= 1)
