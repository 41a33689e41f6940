"""The shared meet-in-the-middle pieces: key formats and input checks (``mitm``,
``mitm_keys``). The solvers built on them are tested in test_subset_sum and
test_fewest_terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import mitm
from lth_jax import mitm_keys


def test_int32x2_key_to_float_is_correctly_rounded():
  """(hi, lo) -> float32 rounds once, like int64 -> float32, also for negative keys
  (hi * 2^32 + lo would cancel: -1 is (-1, 2^32 - 1) and f32(2^32 - 1) = 2^32)."""
  rng = np.random.default_rng(12)
  x = rng.integers(-2**62, 2**62, 4000) >> rng.integers(0, 62, 4000)
  ties = (rng.integers(2**23, 2**24, 500) << 20) + (1 << 19)  # exactly half an ulp
  x = np.concatenate([x, ties, ties + 1, -ties, -ties - 1,
                      [0, 1, -1, -(2**26 + 2**10 + 1), 2**32, -2**32, -2**63, 2**63 - 1]])
  keys = (jnp.asarray((x >> 32).astype(np.int32)),
          jnp.asarray((x & 0xFFFFFFFF).astype(np.uint32)))
  got = jax.jit(mitm_keys.Int32x2Keys.to_float)(keys)
  np.testing.assert_array_equal(np.asarray(got), x.astype(np.float32))


@pytest.mark.parametrize("key_format", ["int64", "int32x2"])
def test_sorted_subset_sums_are_every_sum_in_order(key_format):
  """All 2^k sums of the step keys, ascending, in either key format."""
  ops = mitm_keys.KEY_FORMATS[key_format]
  steps = np.array([[5, -3, 11, 2]], np.float32).T  # (k = 4, batch 1)
  with jax.enable_x64(key_format == "int64"):
    sums = mitm.sorted_subset_sums(ops, ops.from_float(jnp.asarray(steps)))
    got = np.asarray(ops.to_float(sums))[:, 0]
  want = sorted(sum(v for j, v in enumerate([5, -3, 11, 2]) if m >> j & 1) for m in range(16))
  np.testing.assert_array_equal(got, np.asarray(want, np.float32))


def test_check_batch_leaves_host_inputs_alone():
  t = np.zeros(3, np.float64)
  c = np.ones((3, 4), np.float64)
  assert mitm.check_batch(t, c, None, max_n=8, why=str) == (
      (3,), 4, mitm_keys.default_key_format())
  with pytest.raises(ValueError, match="overflows float32"):
    mitm.check_batch(np.float32(3e38), np.full(2, 3e38, np.float32), "int64", max_n=8,
                     why=str)
  with pytest.raises(ValueError, match="beyond the supported maximum 8: why 9"):
    mitm.check_batch(t, np.ones((3, 9)), "int64", max_n=8, why=lambda n: f"why {n}")
