"""The "conv" construction with bias units, on a tiny biased LeNet5-like CNN (3x3 kernels,
8x8 images; a padded conv, a valid conv, two dense layers, one of them bias-free): every
bias error is the brute-force optimum, pruning only (biases included), the three forwards
agree, an exact biased target is reproduced, and bias-free targets are untouched."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

from lth_jax import construction
from lth_jax import models
from lth_jax import targets as targets_lib
from lth_jax.constructions import bias as bias_lib
from lth_jax.constructions import conv
from lth_jax.constructions import conv_forward

# conv 2->3 pad 1 (8x8 -> pool 4x4), conv 3->2 valid (-> 2x2 -> pool 1x1), dense 2-5-3
SHAPES = ((3, 3, 2, 3), (3, 3, 3, 2), (2, 5), (5, 3))
WIDTH = 6  # every instance holds all its units: brute force sees every usable unit
BIASED = (True, True, False, True)  # layer 2 bare: its biases are 0, the empty subset


def _layers(kernels, biases):
  return targets_lib.join_layers(kernels, [b if on else None for b, on in zip(biases, BIASED)])


@pytest.fixture(scope="module")
def case():
  kernels = [0.4 * jax.random.normal(jax.random.fold_in(jax.random.key(0), i), s)
             for i, s in enumerate(SHAPES)]
  biases = [0.3 * jax.random.normal(jax.random.fold_in(jax.random.key(9), i), (s[-1],))
            for i, s in enumerate(SHAPES)]
  target = _layers(kernels, biases)
  obj = conv.sample(jax.random.key(1), target, WIDTH)
  ticket = construction.find_ticket(obj, target, "conv", max_half=WIDTH)
  x = jax.random.normal(jax.random.key(2), (5, 8, 8, 2))
  return target, obj, ticket, x


def _best(target, values):
  """min |target - subset sum| over all subsets, float64."""
  return min(abs(target - sum(s)) for r in range(len(values) + 1)
             for s in itertools.combinations(values, r))


def test_bias_errors_are_the_brute_force_optimum(case):
  target, obj, ticket, _ = case
  biases = targets_lib.split_layers(target)[1]
  for i, b in enumerate(biases):
    beta = np.asarray(obj.bias["beta"][i], np.float64)
    w = np.asarray(obj.bias["w"][i], np.float64)
    want = np.zeros(SHAPES[i][-1]) if b is None else np.asarray(b, np.float64)
    for o in range(SHAPES[i][-1]):
      best = _best(want[o], list((w[o] * beta)[beta > 0]))
      assert float(ticket.bias_errors[i][o]) == pytest.approx(best, abs=2e-6)
    if b is None:  # nothing kept for a bias-free layer
      assert not np.asarray(ticket.masks["w"][i]).any()
  # the effective biases are the targets' up to the bias errors
  for eff, b, e in zip(ticket.effective_kernels, biases, ticket.bias_errors):
    np.testing.assert_allclose(jnp.abs(eff["bias"] - (0.0 if b is None else b)), e, atol=1e-6)


def test_the_weights_are_the_bias_free_ticket(case):
  """Bias units change nothing of the weight part: same draw, masks and errors."""
  target, obj, ticket, _ = case
  kernels = targets_lib.split_layers(target)[0]
  plain_obj = conv.sample(jax.random.key(1), kernels, WIDTH)
  assert plain_obj.bias is None
  for a, b in zip(jax.tree.leaves(plain_obj.params), jax.tree.leaves(obj.params)):
    np.testing.assert_array_equal(a, b)
  plain = construction.find_ticket(plain_obj, kernels, "conv", max_half=WIDTH)
  assert plain.bias_errors is None
  for name in ("u", "v"):
    for a, b in zip(plain.masks[name], ticket.masks[name]):
      np.testing.assert_array_equal(a, b)
  for a, b in zip(plain.weight_errors, ticket.weight_errors):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="no bias units"):
    construction.find_ticket(plain_obj, target, "conv")


def test_pruning_only_with_biases(case):
  _, obj, ticket, _ = case
  full = conv.dense_random(obj)
  pruned = conv.dense_params(obj, ticket.masks)
  kept = helpers.pruned_entries(full, pruned)
  assert kept == int(ticket.num_params_kept) > 0
  total = sum(int(a.size) for a in jax.tree.leaves(full))
  assert ticket.num_params_random == total == conv.num_params(SHAPES, WIDTH, bias_units=True)
  taps = conv_forward.bias_taps(SHAPES)
  assert taps == (4, 0, 0, 0)  # the centre of the padded conv, the corner of the valid one
  for i, (shape, tap) in enumerate(zip(SHAPES, taps)):
    first, second = full[2 * i], full[2 * i + 1]
    assert np.asarray(first["bias"]).all() and np.asarray(second["bias"]).all()  # drawn
    c_in, n = shape[-2], WIDTH
    p1, p2 = pruned[2 * i], pruned[2 * i + 1]
    hidden = np.asarray(p1["bias"])
    assert not hidden[:c_in * n].any() and not np.asarray(p2["bias"]).any()
    assert (hidden[c_in * n:][hidden[c_in * n:] != 0] > 0).all()  # kept bias units: beta > 0
    assert not np.asarray(p1["kernel"])[..., c_in * n:].any()  # their inputs are pruned
    bias_in = np.asarray(p2["kernel"])[..., c_in * n:, :].reshape(-1, n, shape[-1])
    assert not np.delete(bias_in, tap, axis=0).any()  # read at the bias tap only
    np.testing.assert_array_equal(bias_in[tap], np.asarray(ticket.masks["w"][i]).T
                                  * np.asarray(obj.bias["w"][i]).T)


def test_three_forwards_agree_with_biases(case):
  _, obj, ticket, x = case
  helpers.assert_conv_forwards_agree(obj, ticket, x, (5, 3))
  # the whole dense random CNN runs too (every bias and tap unpruned)
  assert conv.dense_forward(conv.dense_random(obj), x).shape == (5, 3)


def test_bias_taps_read_inside_the_image_for_every_pixel():
  """Independent reference: a constant image through a one-hot kernel at tap (a, b) with
  the layer's padding gives a constant output exactly at the in-image taps."""
  stages = models.conv_architecture(SHAPES)
  taps = conv_forward.bias_taps(SHAPES)
  for i, (stage, size) in enumerate(zip(stages, (8, 4))):
    kh, kw = SHAPES[i][:2]
    constant = []
    for t in range(kh * kw):
      k = jnp.zeros((kh * kw, 1, 1)).at[t].set(1.0).reshape(kh, kw, 1, 1)
      y = conv_forward._conv(jnp.ones((1, size, size, 1)), k, stage.padding)
      constant.append(bool(jnp.all(y == 1.0)))
    assert constant[taps[i]]
    assert sum(constant) == (1 if stage.padding else kh * kw)


def test_an_exact_biased_target_is_reproduced():
  """Weights subset sums of the u > 0 products, biases subset sums of the w beta (beta > 0):
  on nonnegative images the ticket IS the biased target CNN."""
  obj = conv.sample(jax.random.key(5), _layers([jnp.zeros(s) for s in SHAPES],
                                               [jnp.zeros(s[-1]) for s in SHAPES]), WIDTH)
  view = conv.matrix_network(obj)
  rng = np.random.default_rng(0)
  kernels, biases = [], []
  for i, (u, v, s) in enumerate(zip(view.params["u"], view.params["v"], SHAPES)):
    pick = rng.random(v.shape) < 0.5
    w = jnp.sum(jnp.where(pick & (u > 0)[None], v * u[None], 0.0), -1)  # (c_out, s c_in)
    kernels.append(w.T.reshape(s))
    beta, wb = obj.bias["beta"][i], obj.bias["w"][i]
    biases.append(jnp.sum(jnp.where((rng.random(wb.shape) < 0.5) & (beta > 0), wb * beta,
                                    0.0), -1))
  target = _layers(kernels, biases)
  ticket = construction.find_ticket(obj, target, "conv", max_half=WIDTH)
  assert max(float(jnp.max(e)) for e in ticket.bias_errors) < 1e-5
  x = jax.random.uniform(jax.random.key(6), (5, 8, 8, 2))
  want = conv.target_forward(target, x)
  assert float(jnp.max(jnp.abs(want - conv.target_forward(kernels, x)))) > 0.01  # biases act
  np.testing.assert_allclose(conv.structured_forward(obj, ticket.masks, x), want, atol=1e-4)


def test_biased_lenet5_architecture_and_mlp_targets():
  shapes = models.LENET5_KERNEL_SHAPES
  layers = [{"kernel": 0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(8), i), s),
             "bias": 0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(9), i),
                                             (s[-1],))} for i, s in enumerate(shapes)]
  x = jax.random.normal(jax.random.key(7), (2, 28, 28, 1))
  np.testing.assert_allclose(conv.target_forward(layers, x), models.LeNet5(use_bias=True).apply(
      models.params_from_kernels(layers), x), rtol=1e-5, atol=1e-5)
  assert conv_forward.bias_taps(shapes) == (12, 0, 0, 0, 0)  # conv1 5x5 pad 2: the centre
  # an MLP target with biases: the draw and the ticket of the "bias" construction
  kernels = targets_lib.random_target(jax.random.key(0), (3, 4, 2))
  target = targets_lib.join_layers(kernels, [jnp.asarray([0.3, -0.45, 0.0, 0.12]), None])
  a, b = conv.sample(jax.random.key(1), target, 8), bias_lib.sample(jax.random.key(1), target, 8)
  for name in b.params:
    for p, q in zip(a.bias[name], b.params[name]):
      np.testing.assert_array_equal(p, q)
  ta, tb = (construction.find_ticket(a, target, "conv"),
            construction.find_ticket(b, target, "bias"))
  for p, q in zip(jax.tree.leaves(ta.masks), jax.tree.leaves(tb.masks)):
    np.testing.assert_array_equal(p, q)
  assert ta.num_params_random == tb.num_params_random
  assert construction.takes_biases("conv")


def test_nesting_and_bad_input(case):
  target = case[0]
  wide = conv.sample(jax.random.key(3), target, 7)
  narrow = conv.sample(jax.random.key(3), target, 3)
  cut = conv.truncate_copies(wide, 3)
  for name in wide.bias:
    for a, b, c in zip(wide.bias[name], narrow.bias[name], cut.bias[name]):
      np.testing.assert_array_equal(b, c)  # out_bias has no unit axis: the same draw
      np.testing.assert_array_equal(a if name == "out_bias" else a[..., :3], b)
  kernels, biases = targets_lib.split_layers(target)
  with pytest.raises(ValueError, match="bias shape"):
    conv.check(wide, targets_lib.join_layers(kernels, [jnp.zeros(4)] + biases[1:]))
