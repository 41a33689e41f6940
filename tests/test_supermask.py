"""Tests for lth_jax.supermask: exact top-k masks and the straight-through gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from lth_jax import edge_popup as ep, supermask as sm
from lth_jax.configs.edge_popup import PAPER_REMOVED_FRACTIONS


def _normals(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def test_kept_count_rounds_half_to_even_with_a_floor_of_one():
  # (size, keep_fraction, kept); the reference codes keep size - int((1 - keep) * size).
  cases = [(10, 0.25, 2),           # 2.5 -> 2 (half to even); the references keep 3
           (10, 0.35, 4),           # float32(0.35) * 10 rounds to 3.5 in float32 -> 4
           (3920, 0.01, 39),        # FC2 fc1 weight1 at 99% removed; the references keep 40
           (1_966_272, 0.99, 1_946_609),  # FC2 wide fc1 (1,946,609.28); references 1,946,610
           (1000, 1e-6, 1),         # floor of one: a tensor is never fully removed
           (7, 1.0, 7)]
  for size, keep, kept in cases:
    assert sm.kept_count_host(size, keep) == kept
    assert int(jax.jit(sm.kept_count, static_argnums=0)(size, keep)) == kept  # traced keep
  assert int(sm.topk_mask(jnp.arange(10.0), 0.25).sum()) == 2


@pytest.mark.parametrize("method", sm.TOPK_METHODS)
def test_exact_count_and_index_tie_break(method):
  # Many ties (values in {0, 1/3, 2/3, ...}) spread over several 1024-entry blocks of the
  # tie search; lax.top_k ranks ties by lower index first.
  s = jnp.asarray(np.round(3 * np.random.default_rng(0).normal(size=(5, 3001))) / 3,
                  jnp.float32)
  for keep in (1e-6, 0.01, 0.2, 0.5, 0.77, 0.999, 1.0):
    k = sm.kept_count_host(3001, keep)
    mask = sm.topk_mask(s, keep, batch_dims=1, method=method)
    np.testing.assert_array_equal(mask.sum(axis=1), k)
    _, idx = jax.lax.top_k(jnp.abs(s), k)
    ref = jnp.zeros(s.shape, bool).at[jnp.arange(5)[:, None], idx].set(True)
    np.testing.assert_array_equal(mask, ref)
  all_equal = sm.topk_mask(jnp.zeros((4, 4)), 0.5, method=method)  # all tied
  np.testing.assert_array_equal(all_equal.reshape(-1), jnp.arange(16) < 8)


@given(st.sampled_from([1, 2, 7, 60]), st.floats(0.0, 1.0), st.integers(0, 3),
       st.integers(0, 10**6))
def test_topk_mask_property(size, keep, n_values, seed):
  rng = np.random.default_rng(seed)
  s = rng.integers(-n_values, n_values + 1, size) if n_values else rng.normal(size=size)
  s = jnp.asarray(s, jnp.float32)
  mask = np.asarray(sm.topk_mask(s, keep))
  k = sm.kept_count_host(size, keep)
  assert mask.sum() == k == int(sm.kept_count(size, keep))
  order = np.lexsort((np.arange(size), -np.abs(np.asarray(s))))  # |s| desc, index asc
  np.testing.assert_array_equal(np.flatnonzero(mask), np.sort(order[:k]))


def test_traced_keep_fraction_under_vmap():
  s = jnp.asarray(np.random.default_rng(1).normal(size=1000), jnp.float32)
  keeps = jnp.asarray(ep.keep_fractions_from_removed(PAPER_REMOVED_FRACTIONS))
  masks = jax.jit(jax.vmap(lambda k: sm.topk_mask(s, k)))(keeps)
  np.testing.assert_array_equal(masks.sum(axis=1),
                                [sm.kept_count_host(1000, float(k)) for k in keeps])


def test_straight_through_gradient_is_analytic():
  x, w, s, c = (jnp.asarray(a, jnp.float32) for a in _normals(2, (7, 5), (5, 3), (5, 3), (7, 3)))
  mask = sm.topk_mask(s, 0.4)

  def loss(scores):
    return jnp.sum(c * (x @ sm.masked_weight(w, scores, mask)))

  # d loss / d(w * m) = x^T c; straight-through to |s|: times w, times sign(s).
  analytic = (x.T @ c) * w * jnp.sign(s)
  np.testing.assert_allclose(jax.grad(loss)(s), analytic, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(loss(s), jnp.sum(c * (x @ (w * mask))))  # forward: exact mask
