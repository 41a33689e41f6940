"""Tests for lth_jax.supermask and lth_jax.edge_popup (Experiment 2), tiny models, CPU."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from lth_jax import data, edge_popup as ep, supermask as sm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _normals(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def _tiny(variant, arch="fc2"):
  return ep.EdgePopupNet(arch, variant, hidden=8, redundancy=2)


@pytest.fixture(scope="module")
def synthetic():
  tr = data.load_dataset("synthetic", "train", normalize=True, limit=256)
  te = data.load_dataset("synthetic", "test", normalize=True, limit=128)
  return tr.images, tr.labels, te.images, te.labels


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
  assert abs(net.remaining_params(0.01) - 19_914) <= 2  # 1% of the weights remain


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
  keeps = jnp.asarray(ep.keep_fractions_from_removed(ep.PAPER_REMOVED_FRACTIONS))
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


# ----------------------------------------------------------------------------- networks


def test_parameter_counts_match_the_paper():
  expected = {"fc2": (1_991_420, 2508), "fc4": (4_496_420, 1314), "lenet5": (297_620, 378)}
  for arch, (redundant, width) in expected.items():
    dims = ep.target_fc_dims(arch, 500)
    assert ep.redundant_param_count(dims, 5) == redundant
    assert ep.wide_hidden_width(dims, 5) == width
    assert ep.EdgePopupNet(arch, "relu").param_count() == redundant
    wide = ep.EdgePopupNet(arch, "wide")
    assert wide.fc_dims[1] == width
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
    net = _tiny(variant, "lenet5")
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


def test_weights_unchanged_and_scores_trained(synthetic):
  x, y, _, _ = synthetic
  for variant in ("relu", "dense"):
    net = _tiny(variant, "lenet5")
    frozen, trainable = ep.init_sweep(net, (0, 1), 2)
    frozen0 = jax.tree_util.tree_map(np.array, frozen)
    trainable0 = jax.tree_util.tree_map(np.array, trainable)
    opt = ep.make_optimizer(0.1, steps_per_epoch=2, epochs=1)
    opt_state = opt.init(trainable)
    step = ep.make_sweep_step(net, opt)
    for i in range(2):
      trainable, opt_state, _ = step(frozen, trainable, opt_state, jnp.array([1.0, 0.3]),
                                     x[64 * i:64 * (i + 1)], y[64 * i:64 * (i + 1)])
    jax.tree_util.tree_map(np.testing.assert_array_equal, frozen, frozen0)
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != b)),
                                     trainable, trainable0)
    assert all(jax.tree_util.tree_leaves(changed))


def test_sweep_is_one_compiled_program(synthetic):
  x, y, _, _ = synthetic
  net = _tiny("relu")
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
  net = _tiny("wide", "lenet5")
  frozen, trainable = ep.init_edge_popup(net, 4)
  masks = ep.ticket_masks(net, frozen, trainable, 0.3)
  assert masks["conv1"]["kernel"] is None and masks["conv2"]["kernel"] is None
  exported = sm.to_jaxpruner_masks(masks, packbits=packbits)
  assert jax.tree_util.tree_structure(exported, is_leaf=lambda v: v is None) == \
      jax.tree_util.tree_structure(masks, is_leaf=lambda v: v is None)
  leaf = exported["fc1"]["kernel"]
  assert leaf.dtype == jnp.uint8
  if packbits:
    unpacked = sm.unpack_masks(exported, masks)
    np.testing.assert_array_equal(unpacked["fc1"]["kernel"], masks["fc1"]["kernel"])
  else:
    assert set(np.unique(leaf)) <= {0, 1}
  path = sm.save_masks_npz(tmp_path / "ticket.npz", masks, packbits=packbits)
  assert sorted(np.load(path).files) == sorted(["fc1/kernel", "fc2/kernel", "fc3/kernel",
                                                 "__lth_jax_masks__"])
  loaded = sm.load_masks_npz(path)
  assert loaded["conv1"]["kernel"] is None
  for layer in ("fc1", "fc2", "fc3"):
    np.testing.assert_array_equal(loaded[layer]["kernel"],
                                  np.asarray(masks[layer]["kernel"], np.uint8))
    assert loaded[layer]["kernel"].dtype == np.uint8


# ----------------------------------------------------------------------------- training


def _sweep(synthetic, checkpoint_dir=None, on_epoch_end=None):
  x, y, tx, ty = synthetic
  return ep.train_sweep(_tiny("relu"), x, y, tx, ty, keep_fractions=(1.0, 0.5, 0.1),
                        seeds=(0, 1), epochs=2, learning_rate=0.1,
                        checkpoint_dir=checkpoint_dir, on_epoch_end=on_epoch_end)


def test_resume_is_bit_identical(synthetic, tmp_path):
  full = _sweep(synthetic)

  class Killed(Exception):
    pass

  def kill_after_first_epoch(epoch, rows):
    if epoch == 1:
      raise Killed

  with pytest.raises(Killed):
    _sweep(synthetic, tmp_path / "ckpt", kill_after_first_epoch)
  resumed = _sweep(synthetic, tmp_path / "ckpt")
  assert resumed.rows == full.rows and len(full.rows) == 2 * 2 * 3
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.trainable, full.trainable)
  x, y, tx, ty = synthetic
  with pytest.raises(ValueError, match="other settings"):  # never resume a different sweep
    ep.train_sweep(_tiny("relu"), x, y, tx, ty, keep_fractions=(1.0, 0.4), seeds=(0, 1),
                   epochs=2, learning_rate=0.1, checkpoint_dir=tmp_path / "ckpt")


def test_entry_point_writes_jsonl_and_png(tmp_path):
  out = tmp_path / "run"
  cmd = [sys.executable, "-m", "experiments.edge_popup", "--dataset=synthetic",
         f"--out_dir={out}", "--config.archs=('fc2',)", "--config.hidden=8",
         "--config.redundancy=2", "--config.train_limit=128", "--config.test_limit=64",
         "--config.removed_fractions=(0.0,0.9)", "--config.epochs=1"]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
  assert {r["variant"] for r in rows} == set(ep.VARIANTS)
  assert len(rows) == 3 * 2 + 1  # three supermask variants x two levels + the dense baseline
  assert {"test_accuracy", "remaining_params", "keep_fraction", "removed_fraction",
          "epoch", "seed", "arch"} <= set(rows[0])
  assert (out / "edge_popup_fc2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sm.load_masks_npz(out / "masks" / "fc2-relu" / "seed0_keep0.1000.npz")["fc1"]

  # Same command again: the run is complete, nothing is retrained, same rows.
  again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == rows
  # A different configuration is refused without --overwrite; bad flags name the flag.
  for bad_args, flag in ((["--config.epochs=2"], "--overwrite"),
                         (["--config.removed_fractions=(1.5,)"], "removed_fractions"),
                         (["--preset=paper", "--config.batch_size=0"], "batch_size"),
                         (["--dataset=cifar"], "dataset")):
    bad = subprocess.run(cmd + bad_args, cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if line.startswith("FATAL")]
    assert len(errors) == 1 and flag in errors[0], bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr
