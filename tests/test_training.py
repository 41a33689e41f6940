"""Tests for lth_jax.training: target training, checkpoints and resume (synthetic data, CPU)."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import data, models, training

KEY = jax.random.key(0)
TRAIN_KW = dict(epochs=2, batch_size=64, learning_rate=0.05, key=KEY, log_every=0)


@pytest.fixture(scope="module")
def synthetic():
  return (data.load_dataset("synthetic", "train", limit=512),
          data.load_dataset("synthetic", "test", limit=256))


@pytest.fixture(scope="module")
def trained(synthetic):
  """One reference FC2 run without checkpoints: (params, metrics)."""
  train_ds, test_ds = synthetic
  return training.train_classifier(models.FC2(), train_ds, test_ds, **TRAIN_KW)


def _init(model):
  return model.init(jax.random.key(1), jnp.zeros((2, 28, 28, 1)))


def test_accuracy_pads_last_batch():
  variables = _init(models.FC2())
  ds = data.load_dataset("synthetic", "test", limit=37)
  logits = models.FC2().apply(variables, ds.images)
  expected = np.mean(np.argmax(logits, -1) == ds.labels)
  apply_fn = models.FC2().apply
  assert training.accuracy_of(apply_fn, (variables,), ds.images, ds.labels,
                              batch_size=10) == expected
  assert training.accuracy_of(apply_fn, (variables,), ds.images, ds.labels) == expected


def test_training_beats_chance(trained):
  _, metrics = trained
  assert metrics["test_accuracy"] > 0.6  # chance is 0.1
  assert metrics["steps"] == 2 * (512 // 64) and not metrics["restored"]
  assert [h["epoch"] for h in metrics["history"]] == [1, 2]
  assert metrics["history"][1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_training_is_deterministic(synthetic, trained):
  params, _ = training.train_classifier(models.FC2(), *synthetic, **TRAIN_KW)
  same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, trained[0])
  assert all(jax.tree.leaves(same))
  other, _ = training.train_classifier(models.FC2(), *synthetic,
                                       **dict(TRAIN_KW, key=jax.random.key(1)))
  assert not jnp.array_equal(other["params"]["fc2"]["kernel"],
                             params["params"]["fc2"]["kernel"])


def test_checkpoint_reuse_and_resume(synthetic, trained, tmp_path, monkeypatch):
  ckpt = tmp_path / "ckpt"
  params, metrics = training.train_classifier(models.FC2(), *synthetic, **TRAIN_KW,
                                              checkpoint_dir=ckpt)
  assert not metrics["restored"]
  assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, params, trained[0])))

  # Interrupted after epoch 1: resuming runs one epoch and ends bit-identical.
  partial = tmp_path / "partial"
  shutil.copytree(ckpt, partial)
  shutil.rmtree(partial / "2")
  resumed, m = training.train_classifier(models.FC2(), *synthetic, **TRAIN_KW,
                                         checkpoint_dir=partial)
  assert m["steps"] == 512 // 64 and len(m["history"]) == 2
  assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, resumed, params)))

  # Finished: reused without building a train step.
  def no_training(*args, **kwargs):
    raise AssertionError("retrained although a finished checkpoint exists")

  monkeypatch.setattr(training, "_make_train_step", no_training)
  again, m = training.train_classifier(models.FC2(), *synthetic, **TRAIN_KW,
                                       checkpoint_dir=ckpt)
  assert m["restored"] and m["steps"] == 0
  assert m["test_accuracy"] == metrics["test_accuracy"]
  assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, again, params)))

  with pytest.raises(ValueError, match="other settings"):
    training.train_classifier(models.FC2(), *synthetic,
                              **dict(TRAIN_KW, learning_rate=0.01), checkpoint_dir=ckpt)


def test_load_or_train_target_reads_no_data_when_finished(tmp_path, monkeypatch):
  kw = dict(checkpoint_dir=tmp_path / "t", key=KEY, epochs=1, learning_rate=0.05,
            dataset="synthetic", log_every=0)
  assert training.restore_target(kw["checkpoint_dir"], models.FC2(), epochs=1,
                                 learning_rate=0.05, key=KEY) is None
  params, metrics = training.load_or_train_target(models.FC2(), **kw)
  assert not metrics["restored"]

  def no_data(*args, **kwargs):
    raise AssertionError("loaded data although a finished checkpoint exists")

  monkeypatch.setattr(data, "load_dataset", no_data)
  again, m = training.load_or_train_target(models.FC2(), **kw)
  assert m["restored"]
  assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, again, params)))
  with pytest.raises(ValueError, match="other settings"):
    training.load_or_train_target(models.FC2(), **dict(kw, dataset="mnist"))


def test_training_rejects_empty_epochs(synthetic):
  with pytest.raises(ValueError, match="full batch"):
    training.train_classifier(models.FC2(), synthetic[0], None,
                              **dict(TRAIN_KW, batch_size=10_000))


def test_nan_loss_raises(synthetic):
  with pytest.raises(FloatingPointError, match="non-finite"):
    training.train_classifier(models.FC2(), synthetic[0], None,
                              **dict(TRAIN_KW, learning_rate=1e30, epochs=1))
