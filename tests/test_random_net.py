"""The Theorem-1 random network: two views of one draw, nested widths, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lth_jax as L

SIZES = (5, 7, 3)


def test_structured_view_equals_dense_entries():
  net = L.sample_random_network(jax.random.key(0), SIZES, (4, 2))
  dense = L.dense_params(net)
  assert [k.shape for k in dense] == [(5, 20), (20, 7), (7, 14), (14, 3)]
  for i, (u, v) in enumerate(zip(net.params["u"], net.params["v"])):
    m1, m2 = np.asarray(dense[2 * i]), np.asarray(dense[2 * i + 1])
    d_in, n = u.shape
    for j in range(d_in):
      for k in range(n):
        assert m1[j, j * n + k] == u[j, k]  # M1[j*n+k, j] in math convention
        np.testing.assert_array_equal(m2[j * n + k, :], np.asarray(v[:, j, k]))


def test_nested_widths_and_determinism():
  key = jax.random.key(1)
  wide = L.sample_random_network(key, SIZES, 6)
  narrow = L.sample_random_network(key, SIZES, 3)
  again = L.sample_random_network(key, SIZES, 3)
  cut = L.truncate_copies(wide, 3)
  for a, b, c in zip(jax.tree.leaves(narrow.params), jax.tree.leaves(cut.params),
                     jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  with pytest.raises(ValueError, match="larger"):
    L.truncate_copies(narrow, 4)


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_distribution(distribution):
  net = L.sample_random_network(jax.random.key(2), (40, 50), 30, distribution)
  x = np.asarray(net.params["v"][0]).ravel()
  assert abs(x.mean()) < 0.02
  if distribution == "uniform":
    assert x.min() >= -1 and x.max() <= 1 and abs(x.var() - 1 / 3) < 0.01
  else:
    assert abs(x.var() - 1) < 0.03


def test_param_count_matches_dense():
  net = L.sample_random_network(jax.random.key(3), SIZES, (4, 2))
  assert L.num_params(net) == sum(k.size for k in L.dense_params(net))


@pytest.mark.parametrize("sizes, copies, dist, message", [
    ((5,), 3, "uniform", "layer_sizes"),
    ((5, 0), 3, "uniform", "layer_sizes"),
    ((5, 4), 0, "uniform", "copies"),
    ((5, 4, 3), (2,), "uniform", "copies"),
    ((5, 4), 2, "cauchy", "distribution"),
    ((5, 4), 2.5, "uniform", "copies must be a positive int or a sequence of 1"),
    ((5, 4, 3), 2.0, "uniform", "copies must be"),
    ((5, 4, 3), (2, 2.5), "uniform", "positive ints"),
    ((5, 4, 3), (2, -1), "uniform", "positive ints"),
    ((5, 4, 3), (2, 3, 4), "uniform", "3 entries for 2 target layers"),
    ((5, 4), "3", "uniform", "copies must be"),
    ((5, 4), True, "uniform", "copies must be"),
    ((5, 4.5), 3, "uniform", "layer_sizes"),
    (5, 3, "uniform", "layer_sizes"),
])
def test_bad_input(sizes, copies, dist, message):
  with pytest.raises(ValueError, match=message):
    L.sample_random_network(jax.random.key(0), sizes, copies, dist)


def test_copies_accepts_numpy_ints_and_sequences():
  a = L.sample_random_network(jax.random.key(4), SIZES, (4, 2))
  b = L.sample_random_network(jax.random.key(4), SIZES, np.array([4, 2]))
  c = L.sample_random_network(jax.random.key(4), SIZES, [np.int64(4), 2])
  assert a.copies == b.copies == c.copies == (4, 2)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(ValueError, match="copies"):
    L.truncate_copies(a, 1.5)
