"""Tests for lth_jax.run.edge_popup (Experiment 2's driver) and its entry point, tiny
models on synthetic data, CPU."""

import contextlib
import json
import logging
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import logging as absl_logging

import helpers
from lth_jax import data, edge_popup as ep, files as files_lib, masks as masks_lib
from lth_jax.configs import edge_popup as ep_configs
from lth_jax.run import edge_popup as run_ep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




# ----------------------------------------------------------------------------- training


def _sweep(synthetic, checkpoint_dir=None, on_epoch_end=None):
  x, y, tx, ty = synthetic
  return run_ep.train_sweep(helpers.tiny_edge_popup_net("relu"), x, y, tx, ty, keep_fractions=(1.0, 0.5, 0.1),
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
    run_ep.train_sweep(helpers.tiny_edge_popup_net("relu"), x, y, tx, ty, keep_fractions=(1.0, 0.4), seeds=(0, 1),
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
                        r"\((\d+)/(\d+) steps\), \S+ elapsed, "
                        r"ETA (\d+s|\d+m\d\ds|\d+h\d\dm)$")


def _step_lines(messages):
  """(percent text, steps done, total steps, ETA text) of every per-step progress line."""
  found = [_STEP_LINE.search(m) for m in messages]
  return [(m[1], int(m[2]), int(m[3]), m[4]) for m in found if m]


def _run(out_dir, **kwargs):
  return run_ep.run_experiment(_run_config(), out_dir, dataset="synthetic", **kwargs)


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
  assert lines[-1][3] == "0s"  # nothing left
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


def test_entry_point_writes_jsonl_and_png(tmp_path, monkeypatch):
  out = tmp_path / "run"
  cmd = [sys.executable, "-m", "experiments.edge_popup", "--dataset=synthetic",
         f"--out_dir={out}", "--config.archs=('fc2',)", "--config.hidden=8",
         "--config.redundancy=2", "--config.train_limit=128", "--config.test_limit=64",
         "--config.removed_fractions=(0.0,0.9)", "--config.epochs=1", "--log_every_seconds=0"]
  # The rows' values are not checked: XLA's backend optimisation off (compiling is most of
  # this tiny run).
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""),
                                "--xla_backend_optimization_level=0"]).strip()}
  proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "overall 100.0% (8/8 steps)" in proc.stderr  # 4 sweeps x 1 epoch x 2 steps
  rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
  assert {r["variant"] for r in rows} == set(ep.VARIANTS)
  assert len(rows) == 3 * 2 + 1  # three supermask variants x two levels + the dense baseline
  assert {"test_accuracy", "remaining_params", "keep_fraction", "removed_fraction",
          "epoch", "seed", "arch"} <= set(rows[0])
  assert (out / "edge_popup_fc2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert masks_lib.load_masks_npz(out / "masks" / "fc2-relu" / "seed0_keep0.1000.npz")["fc1"]

  # Same command again: the run is complete, nothing is retrained, same rows. This rerun
  # and the refused ones below run in this process (helpers.invoke: runpy, as `python -m`
  # runs it): a fresh interpreter each only paid the JAX import again.
  args = cmd[3:]
  monkeypatch.chdir(tmp_path)  # as the subprocess ran
  code, stderr = helpers.invoke("experiments.edge_popup", *args)
  assert code == 0, stderr[-3000:]
  assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == rows
  # A different configuration is refused without --overwrite; bad flags name the flag.
  for bad_args, flag in ((["--config.epochs=2"], "--overwrite"),
                         (["--config.removed_fractions=(1.5,)"], "removed_fractions"),
                         (["--preset=paper", "--config.batch_size=0"], "batch_size"),
                         (["--dataset=cifar"], "dataset")):
    code, stderr = helpers.invoke("experiments.edge_popup", *args, *bad_args)
    assert code != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and flag in errors[0], stderr[-2000:]
    assert "Traceback" not in stderr
