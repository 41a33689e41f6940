"""Tests for lth_jax.supermask and lth_jax.edge_popup (Experiment 2), tiny models, CPU."""

import contextlib
import json
import logging
import os
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging as absl_logging
from hypothesis import given, strategies as st

from lth_jax import data, edge_popup as ep, results, supermask as sm
from lth_jax.configs import edge_popup as ep_configs

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
  # 1% of each tensor remains: 39 + 19,600 + 25 + 250 (weight1/weight2 of fc1 and fc2).
  assert net.remaining_params(0.01) == 19_914


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


@pytest.mark.parametrize("variant", ep.VARIANTS)
def test_weights_unchanged_and_scores_trained(synthetic, variant):
  # LeNet5: every variant also carries the two random, frozen convolutions.
  x, y, _, _ = synthetic
  net = _tiny(variant, "lenet5")
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


def _checkpoint(directory):
  """(saved steps, JSON metadata of the latest) of a sweep's orbax checkpoint directory."""
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(directory.absolute())
  try:
    steps = list(manager.all_steps())
    meta = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]
  finally:
    manager.close()
  return steps, meta


class _Killed(Exception):
  """Raised from an on_epoch_end hook to simulate a killed run."""


def test_resume_is_bit_identical(synthetic, tmp_path):
  full = _sweep(synthetic)
  assert len(full.rows) == 2 * 2 * 3  # epochs x seeds x levels
  ckpt = tmp_path / "ckpt"

  def kill_after_first_epoch(epoch, rows):
    if epoch == 1:
      raise _Killed

  with pytest.raises(_Killed):
    _sweep(synthetic, ckpt, kill_after_first_epoch)
  steps, meta = _checkpoint(ckpt)
  assert steps == [1] and meta["epoch"] == 1 and meta["rows"] == full.rows[:6]

  trained = []  # the hook runs after every epoch that is actually trained
  resumed = _sweep(synthetic, ckpt, lambda epoch, rows: trained.append(epoch))
  assert trained == [2]  # epoch 1 came from the checkpoint, not from retraining
  assert resumed.rows == full.rows
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.trainable, full.trainable)
  steps, meta = _checkpoint(ckpt)
  assert steps == [2] and meta["epoch"] == 2 and meta["rows"] == full.rows
  x, y, tx, ty = synthetic
  with pytest.raises(ValueError, match="other settings"):  # never resume a different sweep
    ep.train_sweep(_tiny("relu"), x, y, tx, ty, keep_fractions=(1.0, 0.4), seeds=(0, 1),
                   epochs=2, learning_rate=0.1, checkpoint_dir=ckpt)


# ----------------------------------------------------------------------------- whole runs

# Two sweeps (fc2 relu, fc2 dense) x 2 epochs x 4 steps (256 examples, batch 64). The relu
# sweep has the static settings and shapes of `_sweep`, so it reuses its compiled programs.
_RUN_STEPS = 2 * 2 * 4


def _run_config():
  config = ep_configs.get_config("quick")
  config.archs = ("fc2",)
  config.variants = ("relu", "dense")
  config.hidden, config.redundancy = 8, 2
  config.removed_fractions = (0.0, 0.5, 0.9)
  config.seeds = (0, 1)
  config.epochs = 2
  config.train_limit, config.test_limit = 256, 128
  config.export_masks = False
  return config


@contextlib.contextmanager
def _absl_info_messages():
  """Collects the messages of absl INFO logging inside the block."""
  messages = []

  class Collect(logging.Handler):
    def emit(self, record):
      messages.append(record.getMessage())

  logger = absl_logging.get_absl_logger()
  handler, level = Collect(logging.INFO), logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    yield messages
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


_STEP_LINE = re.compile(r"epoch \d+/\d+ step \d+/\d+ .*; overall (\d+\.\d)% "
                        r"\((\d+)/(\d+) steps\), ETA (\d+m\d\ds|\d+h\d\dm)$")


def _step_lines(messages):
  """(percent text, steps done, total steps, ETA text) of every per-step progress line."""
  found = [_STEP_LINE.search(m) for m in messages]
  return [(m[1], int(m[2]), int(m[3]), m[4]) for m in found if m]


def _run(out_dir, **kwargs):
  return ep.run_experiment(_run_config(), out_dir, dataset="synthetic", **kwargs)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """An uninterrupted run, logging a progress line after every step."""
  out = tmp_path_factory.mktemp("reference_run")
  with _absl_info_messages() as messages:
    rows = _run(out, log_every_seconds=0)
  return out, rows, messages


def test_progress_log_reports_overall_eta(reference_run):
  _, _, messages = reference_run
  lines = _step_lines(messages)
  # Counted up front over both sweeps: the first sweep ends half-way, not at 100%.
  assert [done for _, done, _, _ in lines] == list(range(1, _RUN_STEPS + 1))
  assert {total for _, _, total, _ in lines} == {_RUN_STEPS}
  assert [p for p, _, _, _ in lines] == [f"{100 * d / _RUN_STEPS:.1f}"
                                         for d in range(1, _RUN_STEPS + 1)]
  assert lines[_RUN_STEPS // 2 - 1][0] == "50.0" and lines[-1][0] == "100.0"
  assert lines[-1][3] == "0m00s"  # nothing left
  assert any(m.startswith("fc2/dense: epoch 2/2 done") and "overall 100.0%" in m
             for m in messages)


def test_run_experiment_resumes_after_interruption(reference_run, tmp_path):
  ref_dir, ref_rows, _ = reference_run
  out = tmp_path / "run"

  def kill_after_second_sweeps_first_epoch(sweep, epoch):
    if (sweep, epoch) == ("fc2-dense", 1):
      raise _Killed

  with pytest.raises(_Killed):
    _run(out, on_epoch_end=kill_after_second_sweeps_first_epoch)
  # Left behind: the finished first sweep (done file, checkpoint removed), the second
  # sweep's epoch-1 checkpoint, and results.jsonl with every row finished so far.
  relu = [r for r in ref_rows if r["variant"] == "relu"]
  dense1 = [r for r in ref_rows if r["variant"] == "dense" and r["epoch"] == 1]
  assert json.loads((out / "done" / "fc2-relu.json").read_text()) == relu
  assert not (out / "done" / "fc2-dense.json").exists()
  assert not (out / "checkpoints" / "fc2-relu").exists()
  assert _checkpoint(out / "checkpoints" / "fc2-dense")[0] == [1]
  assert files_lib.read_jsonl(out / "results.jsonl") == relu + dense1
  # As if also killed between writing a done file and removing that sweep's checkpoint.
  (out / "checkpoints" / "fc2-relu").mkdir()

  trained = []
  with _absl_info_messages() as messages:
    rows = _run(out, on_epoch_end=lambda sweep, epoch: trained.append((sweep, epoch)),
                log_every_seconds=0)
  assert trained == [("fc2-dense", 2)]  # only the one remaining epoch was trained
  assert rows == ref_rows
  for name in ("results.jsonl", "done/fc2-relu.json", "done/fc2-dense.json"):
    assert (out / name).read_bytes() == (ref_dir / name).read_bytes(), name
  assert not any((out / "checkpoints").iterdir())  # all cleaned up
  # Overall progress counts the earlier process's 12 steps as done.
  assert [done for _, done, _, _ in _step_lines(messages)] == list(range(13, _RUN_STEPS + 1))


def test_entry_point_writes_jsonl_and_png(tmp_path):
  out = tmp_path / "run"
  cmd = [sys.executable, "-m", "experiments.edge_popup", "--dataset=synthetic",
         f"--out_dir={out}", "--config.archs=('fc2',)", "--config.hidden=8",
         "--config.redundancy=2", "--config.train_limit=128", "--config.test_limit=64",
         "--config.removed_fractions=(0.0,0.9)", "--config.epochs=1", "--log_every_seconds=0"]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "overall 100.0% (8/8 steps)" in proc.stderr  # 4 sweeps x 1 epoch x 2 steps
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
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and flag in errors[0], bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr
