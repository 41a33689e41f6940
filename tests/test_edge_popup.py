"""Tests for lth_jax.edge_popup (Experiment 2's networks and vmapped steps), tiny models, CPU."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from lth_jax import data, edge_popup as ep, masks as masks_lib, supermask as sm


def _normals(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]





# ----------------------------------------------------------------------------- masks


def test_keep_fraction_is_the_fraction_kept():
  scores = jnp.arange(1, 1001, dtype=jnp.float32)  # |score| increasing with the index
  mask = sm.topk_mask(-scores, 0.25)              # the sign does not matter, |score| does
  assert int(mask.sum()) == 250                    # 25% KEPT, not removed
  assert bool(mask[-250:].all()) and not bool(mask[:-250].any())  # the largest |score|
  # The paper's grid is the fraction REMOVED: 0.9 removed -> keep 0.1.
  assert ep.keep_fractions_from_removed((0.0, 0.9, 0.99)) == (1.0, 0.1, 0.01)
  net = ep.EdgePopupNet("fc2", "relu")
  assert net.remaining_params(1.0) == net.param_count() == 1_991_420
  # 1% of each tensor remains: 39 + 19,600 + 25 + 250 (weight1/weight2 of fc1 and fc2).
  assert net.remaining_params(0.01) == 19_914



# ----------------------------------------------------------------------------- networks


def test_parameter_counts_match_the_paper():
  # (redundant count, wide hidden width, exact wide count)
  expected = {"fc2": (1_991_420, 2508, 1_991_352), "fc4": (4_496_420, 1314, 4_496_508),
              "lenet5": (297_620, 378, 297_864)}
  for arch, (redundant, width, wide_count) in expected.items():
    dims = ep.target_fc_dims(arch, 500)
    assert ep.redundant_param_count(dims, 5) == redundant
    assert ep.wide_hidden_width(dims, 5) == width
    assert ep.EdgePopupNet(arch, "relu").param_count() == redundant
    wide = ep.EdgePopupNet(arch, "wide")
    assert wide.fc_dims[1:-1] == (width,) * (len(dims) - 2)
    assert wide.param_count() == wide_count
    assert abs(wide.param_count() - redundant) / redundant < 1e-3  # matched up to rounding
  assert ep.EdgePopupNet("fc2", "dense").param_count() == 397_000


@pytest.mark.parametrize("use_relu", [True, False])
def test_redundant_layer_matches_naive_reference(use_relu):
  d_in, r, d_out, b = 6, 3, 4, 5
  # PyTorch layouts: weight1 (r, d_in) = w1.T, weight2 (d_out, d_in * r) = w2.T.
  x, w1, w2 = _normals(3, (b, d_in), (d_in, r), (d_in * r, d_out))
  # Reference formulation: repeat x r times, elementwise weight1, ReLU, linear weight2.
  rep = np.repeat(np.asarray(x)[:, None, :], r, axis=1) * np.asarray(w1).T[None]  # (B, r, d_in)
  if use_relu:
    rep = np.maximum(rep, 0)
  h = rep.transpose(0, 2, 1).reshape(b, d_in * r)  # unit j * r + k
  ref1 = h @ np.asarray(w2)
  # Dense block matrices: M1 (d_in * r, d_in) with M1[j * r + k, j] = w1[j, k].
  m1 = np.zeros((d_in * r, d_in))
  for j in range(d_in):
    m1[j * r:(j + 1) * r, j] = np.asarray(w1)[j]
  pre = np.asarray(x) @ m1.T
  ref2 = (np.maximum(pre, 0) if use_relu else pre) @ np.asarray(w2)
  out = ep.redundant_layer(x, w1, w2, use_relu)
  np.testing.assert_allclose(out, ref1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out, ref2, rtol=1e-5, atol=1e-5)


def test_init_shapes_and_shared_frozen_convs():
  convs = None
  for variant in ep.VARIANTS:
    net = helpers.tiny_edge_popup_net(variant, "lenet5")
    frozen, trainable = ep.init_edge_popup(net, 0)
    fc = trainable if variant == "dense" else frozen
    shapes = jax.tree_util.tree_map(lambda a: a.shape, {k: fc[k] for k in net.fc_shapes()})
    assert shapes == net.fc_shapes()
    if variant != "dense":  # one score per FC weight
      assert jax.tree_util.tree_map(lambda a: a.shape, trainable) == net.fc_shapes()
    assert "conv1" not in trainable and "conv2" not in trainable  # never trained or masked
    convs = frozen["conv1"]["kernel"] if convs is None else convs
    np.testing.assert_array_equal(frozen["conv1"]["kernel"], convs)  # shared by variants
  r = ep.EdgePopupNet("fc2", "relu", hidden=8, redundancy=3).fc_shapes()
  assert r["fc1"] == {"weight1": (784, 3), "weight2": (784 * 3, 8)}
  assert r["fc2"] == {"weight1": (8, 3), "weight2": (24, 10)}


@pytest.mark.parametrize("variant", ep.VARIANTS)
def test_weights_unchanged_and_scores_trained(synthetic, variant):
  # LeNet5: every variant also carries the two random, frozen convolutions.
  x, y, _, _ = synthetic
  net = helpers.tiny_edge_popup_net(variant, "lenet5")
  seeds = (0, 1)
  frozen, trainable = ep.init_sweep(net, seeds, 2)
  fc_layers = set(net.fc_shapes())
  # Supermask variants freeze every weight (convs and FC); dense freezes only the convs.
  assert set(frozen) == {"conv1", "conv2"} | (fc_layers if net.is_supermask else set())
  assert set(trainable) == fc_layers
  frozen0 = jax.tree_util.tree_map(np.array, frozen)
  trainable0 = jax.tree_util.tree_map(np.array, trainable)
  opt = ep.make_optimizer(0.1, steps_per_epoch=3, epochs=1)
  opt_state = opt.init(trainable)
  # The freeze does not depend on the top-k method; "sort" compiles about twice as fast.
  step = ep.make_sweep_step(net, opt, method="sort")
  for i in range(3):
    trainable, opt_state, _ = step(frozen, trainable, opt_state, jnp.array([1.0, 0.3]),
                                   x[64 * i:64 * (i + 1)], y[64 * i:64 * (i + 1)])
  # Bit-identical to before the steps and to a fresh draw from the seeds.
  fresh, _ = ep.init_sweep(net, seeds, 2)
  for reference in (frozen0, fresh):
    assert jax.tree_util.tree_structure(frozen) == jax.tree_util.tree_structure(reference)
    jax.tree_util.tree_map(np.testing.assert_array_equal, frozen, reference)
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != b)),
                                   trainable, trainable0)
  assert all(jax.tree_util.tree_leaves(changed)), changed  # every score (or dense kernel)


def test_sweep_is_one_compiled_program(synthetic):
  x, y, _, _ = synthetic
  net = helpers.tiny_edge_popup_net("relu")
  frozen, trainable = ep.init_sweep(net, (0, 1), 3)
  opt = ep.make_optimizer(0.1, steps_per_epoch=10, epochs=1)
  opt_state = opt.init(trainable)
  step = jax.jit(chex.assert_max_traces(ep.make_sweep_step(net, opt, jit=False), n=1))
  # keep_fraction is a traced (L,) array: new values reuse the one compiled step.
  for i, keeps in enumerate(([1.0, 0.5, 0.1], [0.9, 0.02, 0.3], [0.25, 0.75, 0.01])):
    trainable, opt_state, losses = step(frozen, trainable, opt_state, jnp.asarray(keeps),
                                        x[64 * i:64 * (i + 1)], y[64 * i:64 * (i + 1)])
    assert losses.shape == (2, 3)
  assert step._cache_size() == 1


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("packbits", [False, True])
def test_mask_export_round_trip(tmp_path, packbits):
  net = helpers.tiny_edge_popup_net("wide", "lenet5")
  frozen, trainable = ep.init_edge_popup(net, 4)
  masks = ep.ticket_masks(net, frozen, trainable, 0.3)
  assert masks["conv1"]["kernel"] is None and masks["conv2"]["kernel"] is None
  exported = masks_lib.to_jaxpruner(masks, pack=packbits)
  assert jax.tree_util.tree_structure(exported, is_leaf=lambda v: v is None) == \
      jax.tree_util.tree_structure(masks, is_leaf=lambda v: v is None)
  leaf = exported["fc1"]["kernel"]
  assert leaf.dtype == jnp.uint8
  if packbits:
    unpacked = masks_lib.from_jaxpruner(exported, masks)
    np.testing.assert_array_equal(unpacked["fc1"]["kernel"], masks["fc1"]["kernel"])
  else:
    assert set(np.unique(leaf)) <= {0, 1}
  path = masks_lib.save_masks_npz(tmp_path / "ticket.npz", masks, pack=packbits)
  assert sorted(np.load(path).files) == sorted(["fc1/kernel", "fc2/kernel", "fc3/kernel",
                                                 "__lth_jax_masks__"])
  loaded = masks_lib.load_masks_npz(path)
  assert loaded["conv1"]["kernel"] is None
  for layer in ("fc1", "fc2", "fc3"):
    np.testing.assert_array_equal(loaded[layer]["kernel"],
                                  np.asarray(masks[layer]["kernel"], np.uint8))
    assert loaded[layer]["kernel"].dtype == np.uint8
