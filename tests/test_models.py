"""Tests for lth_jax.models and lth_jax.training (synthetic data, CPU, a few seconds)."""

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


def _leaf_paths(tree):
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("model, n_params, kernel_shapes", [
    (models.FC2(), 397_000, [(784, 500), (500, 10)]),
    (models.FC4(), 784 * 500 + 500 * 500 * 2 + 500 * 10,
     [(784, 500), (500, 500), (500, 500), (500, 10)]),
    (models.LeNet5(), 150 + 2400 + 48000 + 10080 + 840, list(models.LENET5_KERNEL_SHAPES)),
])
def test_shapes_counts_and_no_biases(model, n_params, kernel_shapes):
  # eval_shape: shapes only, nothing compiled (eager init costs seconds on a small CPU).
  variables = jax.eval_shape(lambda: _init(model))
  assert models.count_params(variables) == n_params
  assert all(path.endswith("['kernel']") for path in _leaf_paths(variables))
  logits = jax.eval_shape(model.apply, variables, jnp.ones((3, 28, 28, 1)))
  assert logits.shape == (3, 10)
  kernels = models.kernels_from_params(variables)
  assert [k.shape for k in kernels] == kernel_shapes
  # Every parameter is one of the kernels: no layer is dropped (LeNet5's convs included).
  assert sum(int(np.prod(k.shape)) for k in kernels) == n_params
  # Also accepts the inner params dict.
  assert len(models.kernels_from_params(variables["params"])) == len(kernel_shapes)


def test_lenet_conv_shapes():
  params = jax.eval_shape(lambda: _init(models.LeNet5()))["params"]
  assert params["conv1"]["kernel"].shape == (5, 5, 1, 6)
  assert params["conv2"]["kernel"].shape == (5, 5, 6, 16)
  # 400 = 5 * 5 * 16 needs padding 2 in conv1 (28 -> 28 -> 14 -> 10 -> 5).
  assert params["mlp"]["fc1"]["kernel"].shape == (400, 120)


def test_mlp_is_x_times_kernels_chain():
  variables = _init(models.FC4())
  x = np.asarray(jax.random.uniform(jax.random.key(2), (5, 28, 28, 1)))
  h = x.reshape(5, -1)
  kernels = [np.asarray(k, np.float64) for k in models.kernels_from_params(variables)]
  for i, k in enumerate(kernels):
    h = (np.maximum(h, 0) if i else h) @ k
  np.testing.assert_allclose(models.FC4().apply(variables, x), h, rtol=1e-4, atol=1e-4)


def test_params_from_kernels_round_trip():
  variables = _init(models.FC2())
  kernels = models.kernels_from_params(variables)
  rebuilt = models.params_from_kernels(kernels)
  x = jnp.ones((2, 28, 28, 1))
  mlp = models.MLP(tuple(k.shape[1] for k in kernels))
  np.testing.assert_array_equal(mlp.apply(rebuilt, x), models.FC2().apply(variables, x))


def test_lenet_params_from_kernels_round_trip():
  # Shapes from eval_shape, values from numpy: nothing compiled (eager conv init is slow).
  abstract = jax.eval_shape(lambda: _init(models.LeNet5()))
  rng = np.random.default_rng(0)
  kernels = [rng.normal(size=s).astype(np.float32) for s in models.LENET5_KERNEL_SHAPES]
  assert isinstance(models.model_from_kernels(kernels), models.LeNet5)
  rebuilt = models.params_from_kernels(kernels)
  # Exactly the structure LeNet5.apply takes, every kernel where kernels_from_params reads it.
  assert jax.tree.structure(rebuilt) == jax.tree.structure(abstract)
  assert jax.tree.map(jnp.shape, rebuilt) == jax.tree.map(lambda x: x.shape, abstract)
  for a, b in zip(models.kernels_from_params(rebuilt), kernels):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(rebuilt["params"]["conv2"]["kernel"], kernels[1])
  np.testing.assert_array_equal(rebuilt["params"]["mlp"]["fc1"]["kernel"], kernels[2])
  assert isinstance(models.model_from_kernels(kernels[2:]), models.MLP)
  with pytest.raises(ValueError, match="LeNet5 only"):
    models.params_from_kernels([jnp.ones((3, 3, 1, 2)), jnp.ones((8, 10))])
  with pytest.raises(ValueError, match="then 2-D dense"):
    models.params_from_kernels([jnp.ones((400, 120)), jnp.ones((5, 5, 1, 6))])


def test_kernels_from_params_errors():
  with pytest.raises(ValueError, match="bias"):
    models.kernels_from_params({"fc1": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}})
  with pytest.raises(ValueError, match="fc1..fcL"):
    models.kernels_from_params({"fc1": {"kernel": jnp.ones((2, 2))},
                                "fc3": {"kernel": jnp.ones((2, 2))}})
  # A layer of unknown kind raises instead of being left out.
  with pytest.raises(ValueError, match="found keys"):
    models.kernels_from_params({"fc1": {"kernel": jnp.ones((2, 2))},
                                "norm": {"scale": jnp.ones(2)}})
  lenet = jax.eval_shape(lambda: _init(models.LeNet5()))["params"]
  with pytest.raises(ValueError, match="LeNet5"):
    models.kernels_from_params(dict(lenet, extra={"kernel": jnp.ones((2, 2))}))


def test_get_model():
  assert isinstance(models.get_model("FC2"), models.FC2)
  assert isinstance(models.get_model("lenet5"), models.LeNet5)
  with pytest.raises(ValueError, match="unknown model"):
    models.get_model("resnet")


# ----------------------------------------------------------------------------- training


def test_accuracy_pads_last_batch():
  variables = _init(models.FC2())
  ds = data.load_dataset("synthetic", "test", limit=37)
  logits = models.FC2().apply(variables, ds.images)
  expected = np.mean(np.argmax(logits, -1) == ds.labels)
  assert training.accuracy(models.FC2().apply, variables, ds, batch_size=10) == expected
  assert training.accuracy(models.FC2().apply, variables, ds) == expected


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

  with pytest.raises(ValueError, match="different configuration"):
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
  with pytest.raises(ValueError, match="different configuration"):
    training.load_or_train_target(models.FC2(), **dict(kw, dataset="mnist"))


def test_training_rejects_empty_epochs(synthetic):
  with pytest.raises(ValueError, match="full batch"):
    training.train_classifier(models.FC2(), synthetic[0], None,
                              **dict(TRAIN_KW, batch_size=10_000))


def test_nan_loss_raises(synthetic):
  with pytest.raises(FloatingPointError, match="non-finite"):
    training.train_classifier(models.FC2(), synthetic[0], None,
                              **dict(TRAIN_KW, learning_rate=1e30, epochs=1))
