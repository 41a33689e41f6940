"""Experiment 2's driver: edge-popup sweeps, config in, files out.

`train_sweep` trains every (seed, keep_fraction) model of one (architecture, variant) with
the vmapped programs of `lth_jax.edge_popup`, evaluating after each epoch; with a
checkpoint directory it saves an orbax checkpoint after every epoch, and a killed sweep
resumes from it bit-identically. `run_experiment` runs every (architecture, variant) sweep of
a config (`lth_jax/configs/edge_popup.py`) into an output directory that a killed run
resumes (same settings) or that `overwrite` empties first. `export_sweep_masks` writes the
final masks as `.npz` files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lth_jax import checkpoints as checkpoints_lib
from lth_jax import data as data_lib
from lth_jax import edge_popup as ep
from lth_jax import files as files_lib
from lth_jax import masks as masks_lib
from lth_jax import supermask
from lth_jax.progress import Progress, format_seconds
from lth_jax.report import figures

Params = ep.Params


@dataclasses.dataclass
class EdgePopupResult:
  """Rows (one per seed x level x epoch) and the final state of one (arch, variant) sweep."""

  net: ep.EdgePopupNet
  seeds: tuple[int, ...]
  keep_fractions: tuple[float, ...]
  rows: list[dict]
  frozen: Params
  trainable: Params


# ----------------------------------------------------------------------------- one sweep


@functools.lru_cache(maxsize=16)
def _sweep_programs(net, learning_rate, momentum, weight_decay, steps_per_epoch, epochs, method):
  """(optimizer, jitted step, eval) per static setting, so repeated sweeps in one process
  (tests, notebooks, a resumed run) reuse the compiled programs."""
  optimizer = ep.make_optimizer(learning_rate, momentum=momentum, weight_decay=weight_decay,
                                steps_per_epoch=steps_per_epoch, epochs=epochs)
  return (optimizer, ep.make_sweep_step(net, optimizer, method=method),
          ep.make_sweep_eval(net, method=method))


def _finite_or_none(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


def _restore(ckpt: checkpoints_lib.Checkpoints, net: ep.EdgePopupNet, trainable: Params,
             opt_state) -> tuple[Params, object, list[dict], int]:
  """(trainable, opt_state, rows, epochs done) from the newest checkpoint, else the inputs
  with no rows and epoch 0. Raises SettingsMismatch for a checkpoint of another sweep."""
  found = ckpt.latest({"trainable": trainable, "opt_state": opt_state})
  if found is None:
    return trainable, opt_state, [], 0
  state, meta, _ = found
  logging.info("%s/%s: resumed after epoch %d from %s", net.arch, net.variant,
               int(meta["epoch"]), ckpt.directory)
  return state["trainable"], state["opt_state"], list(meta["rows"]), int(meta["epoch"])


def _train_epoch(step_fn, frozen, trainable, opt_state, keep_arr, images, labels, *,
                 epoch: int, epochs: int, batch_size: int, data_seed: int, tag: str,
                 t_start: float, steps_before: int, progress: Progress,
                 log_every_seconds: float):
  """One epoch of steps of all S * L models -> (trainable, opt_state, summed losses (S, L)).

  The order of the examples is drawn from (data_seed, epoch); the last partial batch is
  dropped. A progress line is logged at most every `log_every_seconds`; its seconds per
  step count the `steps_before` steps this sweep ran since `t_start`."""
  n_train = len(labels)
  steps_per_epoch = n_train // batch_size
  order = np.random.default_rng([data_seed, epoch]).permutation(n_train)
  loss_sum = jnp.zeros(jax.tree_util.tree_leaves(trainable)[0].shape[:2], jnp.float32)
  n_models = int(np.prod(loss_sum.shape))
  t_log = time.perf_counter()
  for i in range(steps_per_epoch):
    idx = order[i * batch_size:(i + 1) * batch_size]
    trainable, opt_state, losses = step_fn(frozen, trainable, opt_state, keep_arr,
                                           images[idx], labels[idx])
    loss_sum = loss_sum + losses
    progress.add(1)
    if time.perf_counter() - t_log >= log_every_seconds:
      losses.block_until_ready()  # time finished steps, not dispatched ones
      t_log = time.perf_counter()
      logging.info("%s: epoch %d/%d step %d/%d (%d models), %.2f s/step; overall %s",
                   tag, epoch + 1, epochs, i + 1, steps_per_epoch, n_models,
                   (t_log - t_start) / (steps_before + i + 1), progress.describe())
  return trainable, opt_state, loss_sum


def _epoch_rows(net: ep.EdgePopupNet, seeds, keep_fractions, acc, mean_loss, *, epoch: int,
                epochs: int, row_extra: dict | None) -> list[dict]:
  """One row per (seed, keep_fraction) of a finished epoch; acc, mean_loss (S, L)."""
  total_params = net.param_count()
  rows = []
  for si, seed in enumerate(seeds):
    for li, keep in enumerate(keep_fractions):
      rows.append({
          **(row_extra or {}),
          "arch": net.arch, "variant": net.variant, "seed": seed,
          "epoch": epoch + 1, "epochs": epochs,
          "keep_fraction": keep, "removed_fraction": round(1.0 - keep, 10),
          "remaining_params": net.remaining_params(keep), "total_params": total_params,
          "test_accuracy": _finite_or_none(acc[si, li]),
          "train_loss": _finite_or_none(mean_loss[si, li]),
      })
  return rows


def _sweep_settings(net: ep.EdgePopupNet, keep_fractions, seeds, **kwargs) -> dict:
  """What a checkpoint must match to be resumed, as it reads back from JSON."""
  settings = {"net": dataclasses.asdict(net), "keep_fractions": list(keep_fractions),
              "seeds": list(seeds), **kwargs}
  return json.loads(json.dumps(settings))


def train_sweep(net: ep.EdgePopupNet, train_images: np.ndarray, train_labels: np.ndarray,
                test_images: np.ndarray, test_labels: np.ndarray, *,
                keep_fractions: Sequence[float], seeds: Sequence[int] = (0,), epochs: int,
                learning_rate: float, batch_size: int = 64, momentum: float = 0.9,
                weight_decay: float = 5e-4, data_seed: int = 0, method: str = "bisect",
                eval_batch_size: int = 1000, checkpoint_dir: str | os.PathLike | None = None,
                on_epoch_end: Callable[[int, list[dict]], None] | None = None,
                log_every_seconds: float = 30.0, row_extra: dict | None = None,
                progress: Progress | None = None) -> EdgePopupResult:
  """Trains all (seed, keep_fraction) models of `net` together and evaluates after each epoch.

  Images must already be normalised (N, 28, 28, 1) float32. Each epoch visits the training
  set in an order drawn from (data_seed, epoch) and drops the last partial batch. With
  `checkpoint_dir`, the state is saved after every epoch and an existing checkpoint is
  resumed from (bit-identical to an uninterrupted run; one of another sweep raises
  `checkpoints.SettingsMismatch`, a ValueError). `on_epoch_end(epoch, rows)` is called after
  each finished (and saved) epoch. A progress line (epoch, step, overall percentage and ETA
  of `progress`) is logged at most every `log_every_seconds` (0: after every step);
  `progress` (in steps) spans a whole run (`run_experiment`), by default this sweep alone,
  and is told about the steps a resumed checkpoint already holds. Returns an
  `EdgePopupResult`; rows hold arch, variant, seed, epoch, keep_fraction, removed_fraction,
  remaining_params, total_params, test_accuracy and train_loss (mean over the epoch's steps).
  """
  keep_fractions = tuple(float(k) for k in keep_fractions) if net.is_supermask else (1.0,)
  seeds = tuple(int(s) for s in seeds)
  if not keep_fractions or any(not 0.0 < k <= 1.0 for k in keep_fractions):
    raise ValueError(f"keep fractions must be in (0, 1], got {keep_fractions}")
  steps_per_epoch = len(train_labels) // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"{len(train_labels)} training examples make no batch of {batch_size}")
  optimizer, step_fn, eval_fn = _sweep_programs(
      net, float(learning_rate), float(momentum), float(weight_decay), steps_per_epoch,
      int(epochs), method)
  frozen, trainable = ep.init_sweep(net, seeds, len(keep_fractions))
  opt_state = optimizer.init(trainable)
  keep_arr = jnp.asarray(keep_fractions, jnp.float32)
  settings = _sweep_settings(
      net, keep_fractions, seeds, epochs=int(epochs), learning_rate=learning_rate,
      batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
      data_seed=data_seed, method=method, n_train=len(train_labels), n_test=len(test_labels))
  ckpt = (checkpoints_lib.Checkpoints(checkpoint_dir, max_to_keep=1, settings=settings)
          if checkpoint_dir else None)
  tag = f"{net.arch}/{net.variant}"
  try:  # the finally also closes the manager when a step, a hook or the restore raises
    rows, start = [], 0
    if ckpt is not None:
      trainable, opt_state, rows, start = _restore(ckpt, net, trainable, opt_state)
    if progress is None:
      progress = Progress(epochs * steps_per_epoch, tag, "steps", every=math.inf)
    progress.skip(start * steps_per_epoch)
    t_start = time.perf_counter()
    for epoch in range(start, epochs):
      trainable, opt_state, loss_sum = _train_epoch(
          step_fn, frozen, trainable, opt_state, keep_arr, train_images, train_labels,
          epoch=epoch, epochs=epochs, batch_size=batch_size, data_seed=data_seed, tag=tag,
          t_start=t_start, steps_before=(epoch - start) * steps_per_epoch,
          progress=progress, log_every_seconds=log_every_seconds)
      acc = eval_fn(frozen, trainable, keep_arr, test_images, test_labels, eval_batch_size)
      mean_loss = np.asarray(loss_sum) / steps_per_epoch
      if not np.all(np.isfinite(mean_loss)):
        logging.warning("%s: non-finite training loss at epoch %d", tag, epoch + 1)
      rows += _epoch_rows(net, seeds, keep_fractions, acc, mean_loss, epoch=epoch,
                          epochs=epochs, row_extra=row_extra)
      logging.info("%s: epoch %d/%d done, test accuracy %.4f..%.4f over %d models (%s); "
                   "overall %s", tag, epoch + 1, epochs, float(np.min(acc)),
                   float(np.max(acc)), acc.size,
                   format_seconds(time.perf_counter() - t_start), progress.describe())
      if ckpt is not None:
        ckpt.save(epoch + 1, {"trainable": trainable, "opt_state": opt_state},
                  {"epoch": epoch + 1, "rows": rows})
      if on_epoch_end is not None:
        on_epoch_end(epoch + 1, rows)
  finally:
    if ckpt is not None:
      ckpt.close()
  return EdgePopupResult(net, seeds, keep_fractions, rows, frozen, trainable)


def export_sweep_masks(result: EdgePopupResult, directory: str | os.PathLike, *,
                       method: str = "bisect", packbits: bool = True) -> list[pathlib.Path]:
  """Writes one `.npz` mask file per (seed, keep_fraction) of a supermask sweep:
  `{directory}/seed{seed}_keep{keep:.4f}.npz` (see `lth_jax.masks.save_masks_npz`)."""
  net = result.net
  if not net.is_supermask:
    return []
  paths = []
  for si, seed in enumerate(result.seeds):
    frozen_s = jax.tree_util.tree_map(lambda a: a[si], result.frozen)
    for li, keep in enumerate(result.keep_fractions):
      trainable_m = jax.tree_util.tree_map(lambda a: a[si, li], result.trainable)
      masks = ep.ticket_masks(net, frozen_s, trainable_m, keep, method=method)
      path = pathlib.Path(directory) / f"seed{seed}_keep{keep:.4f}.npz"
      paths.append(masks_lib.save_masks_npz(path, masks, pack=packbits))
  return paths


# ----------------------------------------------------------------------------- experiment


def validate_config(config) -> None:
  """Raises ValueError naming the offending `config.<field>`."""
  def bad(field, msg):
    raise ValueError(f"config.{field} {msg}")
  for a in config.archs:
    if a not in ep.ARCHS:
      bad("archs", f"has unknown architecture {a!r}; expected some of {ep.ARCHS}")
  if not config.archs:
    bad("archs", "is empty")
  for v in config.variants:
    if v not in ep.VARIANTS:
      bad("variants", f"has unknown variant {v!r}; expected some of {ep.VARIANTS}")
  if not config.variants:
    bad("variants", "is empty")
  if not config.removed_fractions:
    bad("removed_fractions", "is empty")
  for r in config.removed_fractions:
    if not 0.0 <= float(r) < 1.0:
      bad("removed_fractions", f"must lie in [0, 1) (fraction REMOVED), got {r}")
  if not config.seeds:
    bad("seeds", "is empty")
  if len(set(config.seeds)) != len(config.seeds):
    bad("seeds", f"has duplicates: {tuple(config.seeds)}")
  for field in ("epochs", "batch_size", "hidden", "redundancy", "eval_batch_size"):
    if int(config[field]) < 1:
      bad(field, f"must be >= 1, got {config[field]}")
  for field in ("train_limit", "test_limit"):
    if int(config[field]) < 0:
      bad(field, f"must be >= 0 (0 = all), got {config[field]}")
  if config.topk_method not in supermask.TOPK_METHODS:
    bad("topk_method", f"must be one of {supermask.TOPK_METHODS}, got {config.topk_method!r}")
  for field in ("lr_fc", "lr_lenet5"):
    if not float(config.optim[field]) > 0:
      bad(f"optim.{field}", f"must be > 0, got {config.optim[field]}")


def _load_split(dataset: str, split: str, data_dir, limit: int):
  ds = data_lib.load_dataset(dataset, split, data_dir=data_dir, normalize=True,
                             limit=limit or None)
  return np.asarray(ds.images, np.float32), np.asarray(ds.labels, np.int32)


def _finished_rows(out_dir: pathlib.Path, name: str, config) -> list[dict] | None:
  """Rows of sweep `name` if an earlier process finished it (its done/ file), else None."""
  done_file = out_dir / "done" / f"{name}.json"
  if not done_file.is_file():
    return None
  if not config.keep_checkpoints:  # killed between finishing and cleaning up
    shutil.rmtree(out_dir / "checkpoints" / name, ignore_errors=True)
  return json.loads(done_file.read_text())


def _run_sweep(config, out_dir: pathlib.Path, net: ep.EdgePopupNet, splits, done_rows, *,
               dataset: str, progress: Progress, on_epoch_end, log_every_seconds):
  """Trains one (arch, variant) sweep of `config`, rewriting results.jsonl (`done_rows` +
  this sweep's rows) after every epoch; exports its masks, writes its done/ file, removes
  its checkpoint (unless config.keep_checkpoints) and returns its rows."""
  name = f"{net.arch}-{net.variant}"
  train_x, train_y, test_x, test_y = splits
  lr = config.optim.lr_lenet5 if net.arch == "lenet5" else config.optim.lr_fc

  def epoch_done(epoch, rows):
    files_lib.write_jsonl(out_dir / "results.jsonl", done_rows + rows)
    if on_epoch_end is not None:
      on_epoch_end(name, epoch)

  result = train_sweep(
      net, train_x, train_y, test_x, test_y,
      keep_fractions=ep.keep_fractions_from_removed(config.removed_fractions),
      seeds=config.seeds, epochs=int(config.epochs), learning_rate=float(lr),
      batch_size=int(config.batch_size), momentum=float(config.optim.momentum),
      weight_decay=float(config.optim.weight_decay), data_seed=int(config.data_seed),
      method=config.topk_method, eval_batch_size=int(config.eval_batch_size),
      checkpoint_dir=out_dir / "checkpoints" / name, on_epoch_end=epoch_done,
      row_extra={"dataset": dataset, "train_examples": len(train_y),
                 "test_examples": len(test_y)},
      log_every_seconds=log_every_seconds, progress=progress)
  if config.export_masks and net.is_supermask:
    export_sweep_masks(result, out_dir / "masks" / name, method=config.topk_method)
  files_lib.atomic_write_text(out_dir / "done" / f"{name}.json", json.dumps(result.rows))
  files_lib.write_jsonl(out_dir / "results.jsonl", done_rows + result.rows)
  if not config.keep_checkpoints:
    shutil.rmtree(out_dir / "checkpoints" / name, ignore_errors=True)
  return result.rows


def _plot(rows: list[dict], out_dir: pathlib.Path, arch: str, dataset: str) -> None:
  figures.plot_accuracy_vs_params([r for r in rows if r["arch"] == arch],
                                  out_dir / f"edge_popup_{arch}.png", dataset=dataset)


def run_experiment(config, out_dir: str | os.PathLike, *, dataset: str = "fashion_mnist",
                   data_dir: str | None = None, overwrite: bool = False,
                   on_epoch_end: Callable[[str, int], None] | None = None,
                   log_every_seconds: float = 30.0) -> list[dict]:
  """Experiment 2: every (arch, variant) sweep of `config` (lth_jax/configs/edge_popup.py),
  results in `out_dir`:

  results.jsonl (one row per arch x variant x seed x level x epoch, rewritten atomically after
  every epoch), edge_popup_{arch}.png (accuracy vs remaining parameters), masks/{arch}-{variant}/
  (final masks, .npz), checkpoints/ (orbax, per sweep, removed once a sweep is finished unless
  config.keep_checkpoints), done/ (rows of finished sweeps), run.json (settings).

  A non-empty out_dir is refused unless it holds a run with identical settings (then the run
  resumes from its last finished epoch; a finished run only redraws its figures) or
  `overwrite` is set (then it is emptied first): `files.prepare_out_dir`.
  `on_epoch_end(sweep_name, epoch)` is a hook (tests use it to simulate a kill). Progress
  lines (at most every `log_every_seconds`) give the overall percentage and ETA of the whole
  run: all steps of all (arch, variant) sweeps are counted up front, and the steps of sweeps
  or epochs finished by an earlier run count as done.
  """
  validate_config(config)
  fingerprint = {"config": json.loads(config.to_json()), "dataset": dataset,
                 "data_dir": None if data_dir is None else str(data_dir)}
  # No done.json: a finished run keeps its per-sweep done/ files, so the same command again
  # resumes it and only redraws the figures.
  out_dir, _ = files_lib.prepare_out_dir(out_dir, overwrite, fingerprint=fingerprint)
  splits = (*_load_split(dataset, "train", data_dir, int(config.train_limit)),
            *_load_split(dataset, "test", data_dir, int(config.test_limit)))
  n_train, n_test = len(splits[1]), len(splits[3])
  logging.info("data: %s, %d train / %d test examples", dataset, n_train, n_test)
  tasks = [(a, v) for a in config.archs for v in config.variants]
  # Every sweep has the same number of steps (same data, batch size and epochs).
  steps_per_sweep = n_train // int(config.batch_size) * int(config.epochs)
  progress = Progress(len(tasks) * steps_per_sweep, "edge-popup run", "steps",
                      every=math.inf)
  done_rows: list[dict] = []
  for ti, (arch, variant) in enumerate(tasks):
    finished = _finished_rows(out_dir, f"{arch}-{variant}", config)
    if finished is not None:
      done_rows += finished
      progress.skip(steps_per_sweep)
      logging.info("[%d/%d] %s-%s already finished", ti + 1, len(tasks), arch, variant)
      continue
    net = ep.EdgePopupNet(arch, variant, hidden=int(config.hidden),
                          redundancy=int(config.redundancy))
    logging.info("[%d/%d] %s-%s: %d FC weights (fc widths %s), %d seed(s) x %d level(s)",
                 ti + 1, len(tasks), arch, variant, net.param_count(), net.fc_dims,
                 len(config.seeds), len(config.removed_fractions) if net.is_supermask else 1)
    done_rows += _run_sweep(config, out_dir, net, splits, done_rows, dataset=dataset,
                            progress=progress, on_epoch_end=on_epoch_end,
                            log_every_seconds=log_every_seconds)
    _plot(done_rows, out_dir, arch, dataset)
  files_lib.write_jsonl(out_dir / "results.jsonl", done_rows)
  for arch in config.archs:  # also (re)draws figures of sweeps finished by an earlier run
    _plot(done_rows, out_dir, arch, dataset)
  return done_rows
