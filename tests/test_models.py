"""Tests for lth_jax.models (CPU, a few seconds)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import models


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


def test_biased_models_round_trip_their_layers():
  model = models.get_model("fc2", use_bias=True)
  variables = jax.eval_shape(lambda: _init(model))
  assert models.count_params(variables) == 397_000 + 510
  layers = models.kernels_from_params(variables)
  assert [sorted(layer) for layer in layers] == [["bias", "kernel"]] * 2
  params = {"fc1": {"kernel": jnp.ones((3, 2)), "bias": jnp.asarray([0.5, -1.0])},
            "fc2": {"kernel": jnp.ones((2, 1))}}
  layers = models.kernels_from_params(params)  # a bias-free layer stays a bare kernel
  assert isinstance(layers[0], dict) and not isinstance(layers[1], dict)
  back = models.params_from_kernels(layers)["params"]
  np.testing.assert_array_equal(back["fc1"]["bias"], params["fc1"]["bias"])
  np.testing.assert_array_equal(back["fc2"]["bias"], 0.0)  # zeros: the use_bias model's
  model = models.model_from_kernels(layers)
  assert model.use_bias and model.apply({"params": back}, jnp.ones((1, 3))).shape == (1, 1)
  assert models.LeNet5(use_bias=True).use_bias and not models.LeNet5().use_bias


def test_kernels_from_params_errors():
  with pytest.raises(ValueError, match="at most a bias"):
    models.kernels_from_params({"fc1": {"kernel": jnp.ones((2, 2)), "scale": jnp.ones(2)}})
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
