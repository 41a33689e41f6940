"""Training and evaluation of the target classifiers (SGD + momentum, cosine schedule).

`train_classifier` is deterministic given its key: the init key and every epoch's shuffle key
are derived from it, so a run resumed from an epoch checkpoint ends bit-identical to an
uninterrupted one. Checkpoints (optional per call) go through `lth_jax.checkpoints`, whose
settings check refuses a checkpoint of another training configuration.

Programs stage: drivers call it (a trained target is an input of Experiment 1 and the sweep).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from lth_jax import checkpoints as checkpoints_lib
from lth_jax import data as data_lib
from lth_jax import evaluation

__all__ = ["accuracy_of", "train_classifier", "load_or_train_target", "restore_target"]

Params = Any  # linen variables: {"params": {...}}


# ----------------------------------------------------------------------------- evaluation


@functools.partial(jax.jit, static_argnames=("apply_fn", "batch"))
def _accuracy(apply_fn, args, images, labels, batch):
  return evaluation.accuracy(lambda x: apply_fn(*args, x), images, labels, batch)


def accuracy_of(apply_fn: Callable, args: tuple, images, labels,
                batch_size: int = 1000) -> float:
  """Fraction of ``images`` that ``apply_fn(*args, x (B, ...)) -> logits`` classifies as
  ``labels``: ``evaluation.accuracy`` jitted (one compiled program per ``apply_fn`` and
  shapes), as the exact Python ``count / n``.

  Args:
    apply_fn: e.g. ``model.apply`` with ``args = (variables,)``; hashable (static).
    args: the arrays before the input.
    images: ``(n, ...)``; labels: ``(n,)`` int; ``batch_size``: examples per batch
      (at most ``n``: the last batch is padded).
  """
  n = len(labels)
  if n == 0:
    raise ValueError("accuracy of an empty dataset")
  fraction = _accuracy(apply_fn, tuple(args), images, labels, min(batch_size, n))
  # float32 count / n is within n * 2^-24 < 1/2 of the count: round recovers it exactly.
  return round(float(fraction) * n) / n


# ----------------------------------------------------------------------------- training


def _optimizer(learning_rate, momentum, weight_decay, total_steps):
  schedule = optax.cosine_decay_schedule(learning_rate, decay_steps=max(total_steps, 1))
  # Decay is added to the gradient before momentum, as in torch.optim.SGD (the paper's code).
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(schedule, momentum=momentum))


def _make_train_step(apply_fn, tx):
  def train_step(params, opt_state, images, labels):
    """(params, opt_state, images (B, 28, 28, 1), labels (B,)) -> (params, opt_state, loss)."""
    def loss_fn(p):
      logits = apply_fn(p, images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(train_step)


def _model_repr(model) -> str:
  """``repr(model)`` without a default ``use_bias = False`` line: bias-free targets
  checkpointed before models had ``use_bias`` keep matching their checkpoints."""
  return repr(model).replace("    use_bias = False\n", "")


def _run_config(model, *, epochs, batch_size, learning_rate, momentum, weight_decay, key,
                run_info=None, n_train=None) -> dict:
  """What a checkpoint must match to be reused (JSON-serialisable)."""
  config = dict(model=_model_repr(model), epochs=epochs, batch_size=batch_size,
                learning_rate=float(learning_rate), momentum=float(momentum),
                weight_decay=float(weight_decay),
                key=np.asarray(jax.random.key_data(key)).tolist(),
                run_info=dict(run_info or {}))
  if n_train is not None:
    config["n_train"] = int(n_train)
  return config


def _init_state(model, key, example, tx):
  init_key, _ = jax.random.split(key)
  params = model.init(init_key, example)
  return {"params": params, "opt_state": tx.init(params)}


def _restore(ckpt: checkpoints_lib.Checkpoints, model, key, example, tx):
  """(state, metrics, epochs done) of the newest checkpoint, or None; raises
  checkpoints.SettingsMismatch for one of another training configuration."""
  found = ckpt.latest(jax.eval_shape(lambda: _init_state(model, key, example, tx)))
  if found is None:
    return None
  state, meta, epoch = found
  return state, meta["metrics"], epoch


def _train_epoch(train_step, params, opt_state, train_ds, batch_size, key, *, epoch, t0,
                 steps, total, log_every):
  """One epoch of steps -> (params, opt_state, mean train loss, steps run by this call).

  `steps` counts the steps this call ran before the epoch (since `t0`), `total` all it
  runs; a progress line is logged every `log_every` steps (0: never)."""
  losses = []
  for batch in data_lib.batches(train_ds, batch_size, key, drop_last=True):
    params, opt_state, loss = train_step(params, opt_state, batch.images, batch.labels)
    losses.append(loss)
    steps += 1
    if log_every and steps % log_every == 0:
      _check_finite(loss, epoch, steps)
      rate = steps / (time.perf_counter() - t0)
      logging.info("epoch %d step %d/%d loss %.4f (%.0f steps/s, ETA %.0f s)",
                   epoch + 1, steps, total, float(loss), rate, (total - steps) / rate)
  train_loss = float(jnp.mean(jnp.stack(losses)))
  _check_finite(train_loss, epoch, steps)
  return params, opt_state, train_loss, steps


def train_classifier(model: nn.Module, train_ds: data_lib.Dataset,
                     test_ds: data_lib.Dataset | None, *, epochs: int, batch_size: int = 64,
                     learning_rate: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                     key: jax.Array, checkpoint_dir: str | os.PathLike | None = None,
                     log_every: int = 200, run_info: dict | None = None
                     ) -> tuple[Params, dict]:
  """Trains `model` with SGD + momentum, cosine-decayed learning rate and weight decay.

  Batches of `batch_size` (a final short batch is dropped each epoch: one compiled shape).
  With `checkpoint_dir`, params and optimizer state are saved after every epoch; an existing
  checkpoint of the same configuration is resumed, or, if finished, returned without
  training (metrics["restored"] is True). A different configuration raises
  `checkpoints.SettingsMismatch` (a ValueError); `run_info` (JSON-serialisable, e.g.
  {"dataset": "mnist"}) is part of that configuration.

  Returns (variables {"params": ...} for model.apply, metrics) where metrics has
  "history" (one dict per epoch: epoch, train_loss, test_accuracy, seconds),
  "test_accuracy" (final, or None without test_ds), "steps" (run by this call),
  "train_seconds" and "restored".
  """
  n_train = len(train_ds.labels)
  steps_per_epoch = n_train // batch_size
  if epochs < 1 or steps_per_epoch < 1:
    raise ValueError(f"need epochs >= 1 and at least one full batch: epochs={epochs}, "
                     f"{n_train} examples, batch_size={batch_size}")
  tx = _optimizer(learning_rate, momentum, weight_decay, epochs * steps_per_epoch)
  config = _run_config(model, epochs=epochs, batch_size=batch_size,
                       learning_rate=learning_rate, momentum=momentum,
                       weight_decay=weight_decay, key=key, run_info=run_info,
                       n_train=n_train)
  example = train_ds.images[:1]
  _, shuffle_key = jax.random.split(key)
  ckpt = (checkpoints_lib.Checkpoints(checkpoint_dir, max_to_keep=2, settings=config)
          if checkpoint_dir is not None else None)
  try:
    found = _restore(ckpt, model, key, example, tx) if ckpt is not None else None
    if found is None:
      state, history, start = _init_state(model, key, example, tx), [], 0
    else:
      state, metrics, start = found
      history = metrics["history"]
      if start >= epochs:
        logging.info("Loaded finished checkpoint (epoch %d) from %s", start, checkpoint_dir)
        return state["params"], dict(metrics, restored=True, steps=0)
      logging.info("Resuming from epoch %d checkpoint in %s", start, checkpoint_dir)
    train_step = _make_train_step(model.apply, tx)
    params, opt_state = state["params"], state["opt_state"]
    t0, steps, total = time.perf_counter(), 0, (epochs - start) * steps_per_epoch
    for epoch in range(start, epochs):
      t_epoch = time.perf_counter()
      params, opt_state, train_loss, steps = _train_epoch(
          train_step, params, opt_state, train_ds, batch_size,
          jax.random.fold_in(shuffle_key, epoch), epoch=epoch, t0=t0, steps=steps,
          total=total, log_every=log_every)
      test_acc = (accuracy_of(model.apply, (params,), test_ds.images, test_ds.labels)
                  if test_ds is not None else None)
      history.append(dict(epoch=epoch + 1, train_loss=train_loss, test_accuracy=test_acc,
                          seconds=time.perf_counter() - t_epoch))
      logging.info("epoch %d/%d: train loss %.4f, test accuracy %s", epoch + 1, epochs,
                   train_loss, "n/a" if test_acc is None else f"{test_acc:.4f}")
      metrics = dict(history=history, test_accuracy=test_acc)
      if ckpt is not None:
        ckpt.save(epoch + 1, {"params": params, "opt_state": opt_state}, {"metrics": metrics})
    metrics.update(steps=steps, train_seconds=time.perf_counter() - t0, restored=False)
    return params, metrics
  finally:
    if ckpt is not None:
      ckpt.close()


def _check_finite(loss, epoch, step):
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"non-finite training loss {float(loss)} at epoch {epoch + 1}, "
                             f"step {step}: lower the learning rate")


def restore_target(checkpoint_dir: str | os.PathLike, model: nn.Module, *, epochs: int,
                   learning_rate: float, key: jax.Array, batch_size: int = 64,
                   momentum: float = 0.9, weight_decay: float = 5e-4,
                   run_info: dict | None = None,
                   example: np.ndarray | None = None) -> tuple[Params, dict] | None:
  """(variables, metrics) of a finished `train_classifier` checkpoint, or None if there is
  none (or only an unfinished one). Needs no training data; `example` is one input batch
  (default: zeros (1, 28, 28, 1)) used to trace parameter shapes."""
  if example is None:
    example = np.zeros((1, 28, 28, 1), np.float32)
  config = _run_config(model, epochs=epochs, batch_size=batch_size,
                       learning_rate=learning_rate, momentum=momentum,
                       weight_decay=weight_decay, key=key, run_info=run_info)
  # total_steps does not change the optimizer state's structure, only the schedule.
  tx = _optimizer(learning_rate, momentum, weight_decay, 1)
  with checkpoints_lib.Checkpoints(checkpoint_dir, max_to_keep=2, settings=config) as ckpt:
    if ckpt.latest_step() is None or ckpt.latest_step() < epochs:
      return None
    state, metrics, _ = _restore(ckpt, model, key, example, tx)
    return state["params"], dict(metrics, restored=True, steps=0)


def load_or_train_target(model: nn.Module, *, checkpoint_dir: str | os.PathLike,
                         key: jax.Array, epochs: int, learning_rate: float,
                         dataset: str = "fashion_mnist", data_dir: str | None = None,
                         normalize: bool = False, batch_size: int = 64,
                         train: bool = True, **train_kwargs) -> tuple[Params, dict]:
  """A trained target: restored from `checkpoint_dir` if finished there (reading no training
  data), otherwise trained on `dataset` (checkpointing into the same directory).

  Returns (variables, metrics) as `train_classifier`. Extra keyword arguments (momentum,
  weight_decay, log_every) go to `train_classifier`. With train=False, a missing or
  unfinished checkpoint raises FileNotFoundError instead of training (e.g. a benchmark
  that must not spend an hour training).
  """
  opt_kwargs = {k: v for k, v in train_kwargs.items() if k in ("momentum", "weight_decay")}
  run_info = {"dataset": dataset, "normalize": normalize}
  found = restore_target(checkpoint_dir, model, epochs=epochs, learning_rate=learning_rate,
                         key=key, batch_size=batch_size, run_info=run_info, **opt_kwargs)
  if found is not None:
    return found
  if not train:
    raise FileNotFoundError(f"no finished target checkpoint ({epochs} epochs) in "
                            f"{checkpoint_dir}")
  train_ds = data_lib.load_dataset(dataset, "train", data_dir, normalize)
  test_ds = data_lib.load_dataset(dataset, "test", data_dir, normalize)
  return train_classifier(model, train_ds, test_ds, epochs=epochs, batch_size=batch_size,
                          learning_rate=learning_rate, key=key,
                          checkpoint_dir=checkpoint_dir, run_info=run_info, **train_kwargs)
