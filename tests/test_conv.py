"""The "conv" construction on tiny LeNet5-like CNNs (3x3 kernels, 2-4 channels, 8x8 images):
brute force, pruning only, the four forwards, exact targets, LeNet5's architecture, sizing."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

from lth_jax import construction
from lth_jax import models
from lth_jax import sizing
from lth_jax import targets as targets_lib
from lth_jax.constructions import conv
from lth_jax.constructions import network

# conv 2->3 pad 1 (8x8 -> pool 4x4), conv 3->2 valid (-> 2x2 -> pool 1x1), dense 2-5-3
SHAPES = ((3, 3, 2, 3), (3, 3, 3, 2), (2, 5), (5, 3))
WIDTH = 6  # every half fits an instance of WIDTH: no cap, brute force sees every copy


def _target(key, scale=0.4):
  return [scale * jax.random.normal(jax.random.fold_in(key, i), s) for i, s in enumerate(SHAPES)]


@pytest.fixture(scope="module")
def case():
  target = _target(jax.random.key(0))
  obj = conv.sample(jax.random.key(1), target, WIDTH)
  ticket = construction.find_ticket(obj, target, "conv", max_half=WIDTH)
  x = jax.random.normal(jax.random.key(2), (5, 8, 8, 2))
  return target, obj, ticket, x


def test_shapes_and_counts(case):
  target, obj, ticket, _ = case
  assert [u.shape for u in obj.params["u"]] == [(2, 6), (3, 6), (2, 6), (5, 6)]
  assert [v.shape for v in obj.params["v"]] == [(3, 18, 6), (2, 27, 6), (5, 2, 6), (3, 5, 6)]
  dense = conv.dense_params(obj, ticket.masks)
  assert [d.shape for d in dense] == [(1, 1, 2, 12), (3, 3, 12, 3), (1, 1, 3, 18),
                                      (3, 3, 18, 2), (2, 12), (12, 5), (5, 30), (30, 3)]
  assert ticket.num_params_random == sum(d.size for d in dense) == conv.num_params(SHAPES, 6)
  assert [e.shape for e in ticket.weight_errors] == list(SHAPES)
  assert conv.depth(4) == 8 and conv.width_factor(SHAPES, 6) == 30 / 5


def test_errors_are_the_brute_force_optimum(case):
  """Per weight and sign half (u > 0, u <= 0) the best subset of the half's products
  v[o, (a, b, j), k] u[j, k], enumerated in float64; the weight's error is the larger."""
  target, obj, ticket, _ = case
  for layer in (0, 2):
    u = np.asarray(obj.params["u"][layer], np.float64)
    v = np.asarray(obj.params["v"][layer], np.float64)
    w = np.asarray(targets_lib.as_matrix(target[layer]), np.float64)  # (s c_in, c_out)
    err = np.asarray(ticket.weight_errors[layer]).reshape(w.shape)
    for r, o in itertools.product(range(w.shape[0]), range(w.shape[1])):
      j = r % u.shape[0]
      worst = 0.0
      for half in (u[j] > 0, u[j] <= 0):
        prods = v[o, r][half] * u[j][half]
        best = min(abs(w[r, o] - sum(s)) for n in range(len(prods) + 1)
                   for s in itertools.combinations(prods, n))
        worst = max(worst, best)
      assert err[r, o] == pytest.approx(worst, abs=2e-6)


def test_pruning_only(case):
  _, obj, ticket, _ = case
  full = conv.dense_params(obj, jax.tree.map(jnp.ones_like, ticket.masks))
  pruned = conv.dense_params(obj, ticket.masks)
  kept = 0
  for f, p in zip(full, pruned):
    f, p = np.asarray(f), np.asarray(p)
    nz = p != 0
    np.testing.assert_array_equal(p[nz].view(np.uint32), f[nz].view(np.uint32))
    kept += int(nz.sum())
  assert kept == int(ticket.num_params_kept) > 0
  # the kept 1x1 entries are the block diagonal's: channel (j, k) reads input j only
  for m1, u in zip(pruned[::2], obj.params["u"]):
    m1 = np.asarray(m1).reshape(u.shape[0], u.shape[0], -1)  # (j', j, k)
    off = ~np.eye(u.shape[0], dtype=bool)
    assert not m1[off].any()


def test_four_forwards_agree(case):
  _, obj, ticket, x = case
  helpers.assert_conv_forwards_agree(obj, ticket, x, (5, 3))


def test_exact_targets_give_the_target_cnn():
  """Target weights set to subset sums of the u > 0 products: on nonnegative images (every
  later layer's input is nonnegative too, after ReLU) the ticket IS the target CNN."""
  obj = conv.sample(jax.random.key(5), [jnp.zeros(s) for s in SHAPES], WIDTH)
  view = conv.matrix_network(obj)
  rng = np.random.default_rng(0)
  target = []
  for u, v, s in zip(view.params["u"], view.params["v"], SHAPES):
    pick = rng.random(v.shape) < 0.5
    w = jnp.sum(jnp.where(pick & (u > 0)[None], v * u[None], 0.0), -1)  # (c_out, s c_in)
    target.append(w.T.reshape(s))
  ticket = construction.find_ticket(obj, target, "conv", max_half=WIDTH)
  for k, e in zip(target, ticket.effective_kernels):
    np.testing.assert_allclose(e[0], k, atol=1e-5)  # the u > 0 half hits every weight
  x = jax.random.uniform(jax.random.key(6), (5, 8, 8, 2))
  want = conv.target_forward(target, x)
  assert float(jnp.max(jnp.abs(want))) > 0.1
  np.testing.assert_allclose(conv.structured_forward(obj, ticket.masks, x), want, atol=1e-4)


def test_lenet5_architecture_is_models_lenet5():
  kernels = _lenet5_kernels()
  x = jax.random.normal(jax.random.key(7), (2, 28, 28, 1))
  np.testing.assert_allclose(conv.target_forward(kernels, x), models.LeNet5().apply(
      models.params_from_kernels(kernels), x), rtol=1e-5, atol=1e-5)
  assert models.conv_architecture(models.LENET5_KERNEL_SHAPES) == (
      models.ConvStage(2, 2), models.ConvStage(0, 2))


def _lenet5_kernels():
  return [0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(8), i), s)
          for i, s in enumerate(models.LENET5_KERNEL_SHAPES)]


def test_mlp_target_is_networks_construction():
  # test_constructions' target, key and width: the suite compiles these tickets once
  target = targets_lib.random_target(jax.random.key(0), (4, 5, 3))
  a, b = conv.sample(jax.random.key(1), target, 10), network.sample(jax.random.key(1), target, 10)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)
  ta = construction.find_ticket(a, target, "conv")
  tb = construction.find_ticket(b, target, "network")
  for x, y in zip(jax.tree.leaves(ta.masks), jax.tree.leaves(tb.masks)):
    np.testing.assert_array_equal(x, y)


def test_normal_distribution_and_nesting():
  target = _target(jax.random.key(0))
  wide = conv.sample(jax.random.key(3), target, 9, distribution="normal")
  narrow = conv.sample(jax.random.key(3), target, 4, distribution="normal")
  assert wide.distribution == "normal" and float(jnp.max(jnp.abs(wide.params["v"][1]))) > 1.0
  for a, b in zip(jax.tree.leaves(wide.params), jax.tree.leaves(narrow.params)):
    np.testing.assert_array_equal(a[..., :4], b)
  np.testing.assert_array_equal(conv.truncate_copies(wide, 4).params["v"][0],
                                narrow.params["v"][0])
  with pytest.raises(ValueError, match="distribution"):
    conv.sample(jax.random.key(3), target, 4, distribution="cauchy")


def test_bad_targets_are_value_errors(case):
  with pytest.raises(ValueError, match="conv kernels"):
    conv.check_kernels([jnp.zeros((2, 3)), jnp.zeros((3, 3, 3, 2))])
  with pytest.raises(ValueError, match="input channels"):
    conv.check_kernels([jnp.zeros((3, 3, 2, 3)), jnp.zeros((3, 3, 4, 2)), jnp.zeros((2, 3))])
  target, obj = case[:2]
  with pytest.raises(ValueError, match="do not match"):
    conv.check(obj, target[:3] + [jnp.zeros((5, 4))])


def test_search_copies_sizes_each_conv_layer():
  # one conv and one dense layer (few compiles); m = copies: more copies, superset instances
  target = [0.1 * jax.random.normal(jax.random.key(9), (3, 3, 2, 2)),
            0.1 * jax.random.normal(jax.random.key(10), (2, 3))]
  search = sizing.search_copies(jax.random.key(4), target, (4, 8), epsilon=0.05,
                                max_half=8, method="conv")
  assert isinstance(search.net, conv.RandomCNN) and search.net.copies == search.copies
  ticket = sizing.network_ticket(search.net, target, max_half=list(search.max_half),
                                 method="conv")
  for layer_log, err in zip(search.log, ticket.weight_errors):
    assert layer_log[-1]["misses"] == int(np.sum(np.asarray(err) > np.float32(0.05)))
