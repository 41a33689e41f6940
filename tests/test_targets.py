"""Tests for lth_jax.targets: .npz import/export, biased layers, checks and the forward."""

import numpy as np
import pytest

from lth_jax import targets


def _torch_weights(dims, seed=0):
  """PyTorch-style (out, in) matrices for a bias-free MLP with layer sizes `dims`."""
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(d_out, d_in)).astype(np.float32)
          for d_in, d_out in zip(dims[:-1], dims[1:])]


def _torch_forward(weights, x):
  for i, w in enumerate(weights):
    x = (np.maximum(x, 0) if i else x) @ w.T
  return x


def _kernel_forward(kernels, x):
  for i, k in enumerate(kernels):
    x = (np.maximum(x, 0) if i else x) @ np.asarray(k)
  return x


def test_torch_layout_is_transposed(tmp_path):
  weights = _torch_weights([7, 5, 4, 3])
  path = tmp_path / "t.npz"
  np.savez(path, **{f"fc{i + 1}.weight": w for i, w in enumerate(weights)})
  kernels = targets.load_npz_target(path)
  assert [k.shape for k in kernels] == [(7, 5), (5, 4), (4, 3)]
  assert all(k.dtype == np.float32 for k in kernels)
  x = np.random.default_rng(1).normal(size=(6, 7)).astype(np.float32)
  np.testing.assert_allclose(_kernel_forward(kernels, x), _torch_forward(weights, x),
                             rtol=1e-5, atol=1e-5)


def test_natural_order_and_zero_biases(tmp_path):
  # Twelve layers named fc1..fc12, stored in a scrambled order; lexicographic order would
  # put fc10 before fc2 and break the chain.
  dims = list(range(2, 15))
  weights = _torch_weights(dims)
  entries = {f"fc{i + 1}.weight": w for i, w in enumerate(weights)}
  entries.update({f"fc{i + 1}.bias": np.zeros(w.shape[0]) for i, w in enumerate(weights)})
  order = np.random.default_rng(0).permutation(list(entries))
  path = tmp_path / "t.npz"
  np.savez(path, **{k: entries[k] for k in order})
  kernels = targets.load_npz_target(path)
  assert [k.shape for k in kernels] == list(zip(dims[:-1], dims[1:]))


def test_natural_key():
  names = ["fc10", "fc2", "fc1", "layers.10", "layers.2", "layers.0", "0", "10", "2"]
  assert sorted(names, key=targets.natural_key) == [
      "0", "2", "10", "fc1", "fc2", "fc10", "layers.0", "layers.2", "layers.10"]


def test_sequential_state_dict_ignores_other_keys(tmp_path):
  weights = _torch_weights([6, 4, 2])
  path = tmp_path / "seq.npz"
  np.savez(path, **{"0.weight": weights[0], "2.weight": weights[1],
                    "0.scores": np.ones_like(weights[0])})
  kernels = targets.load_npz_target(path)
  np.testing.assert_array_equal(kernels[0], weights[0].T)
  np.testing.assert_array_equal(kernels[1], weights[1].T)


def test_jax_layout_and_plain_keys(tmp_path):
  kernels_in = [w.T for w in _torch_weights([5, 3, 2])]
  path = tmp_path / "jax.npz"
  np.savez(path, W10=np.zeros((1, 1)), W1=kernels_in[0], W2=kernels_in[1])
  with pytest.raises(ValueError, match="do not chain"):  # W10 sorts last: 2 -> 1 breaks
    targets.load_npz_target(path, layout="jax")
  np.savez(path, W1=kernels_in[0], W2=kernels_in[1])
  kernels = targets.load_npz_target(path, layout="jax")
  for got, want in zip(kernels, kernels_in):
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", ["torch", "jax"])
def test_save_load_round_trip(tmp_path, layout):
  kernels = [w.T for w in _torch_weights([9, 4, 4, 3])]
  path = targets.save_npz_target(tmp_path / "k.npz", kernels, layout=layout)
  assert path == tmp_path / "k.npz" and path.exists()
  assert [p.name for p in tmp_path.iterdir()] == ["k.npz"]  # no temporary left behind
  with np.load(path) as raw:
    expected = (4, 9) if layout == "torch" else (9, 4)
    assert raw["fc1.weight"].shape == expected
  for got, want in zip(targets.load_npz_target(path, layout=layout), kernels):
    np.testing.assert_array_equal(got, want)


def test_nonzero_bias_becomes_the_layers_bias_and_round_trips(tmp_path):
  weights = _torch_weights([4, 3, 2])
  bias = np.array([0.0, 0.1, -0.2], np.float32)
  path = tmp_path / "b.npz"
  np.savez(path, **{"fc1.weight": weights[0], "fc1.bias": bias, "fc2.weight": weights[1],
                    "fc2.bias": np.zeros(2)})
  layers = targets.load_npz_target(path)
  assert isinstance(layers[0], dict) and not isinstance(layers[1], dict)  # zero bias: bare
  np.testing.assert_array_equal(layers[0]["bias"], bias)
  np.testing.assert_array_equal(layers[0]["kernel"], weights[0].T)
  for layout in ("torch", "jax"):
    out = targets.save_npz_target(tmp_path / f"r_{layout}.npz", layers, layout)
    again = targets.load_npz_target(out, layout)
    for a, b in zip(jax.tree.leaves(layers), jax.tree.leaves(again)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arrays, message", [
    ({"fc1.weight": np.ones((3, 4)), "fc1.bias": np.ones(4)}, r"fc1.bias has shape \(4,\)"),
    ({"fc1.weight": np.ones((3, 4)), "fc1.bias": np.array([1.0, np.nan, 0])}, "NaN"),
    ({"fc1.weight": np.ones((3, 4)), "fc9.bias": np.ones(3)}, "no weight matrix"),
])
def test_bad_biases(tmp_path, arrays, message):
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=message) as info:
    targets.load_npz_target(path)
  assert str(path) in str(info.value)


@pytest.mark.parametrize("arrays, layout, message", [
    ({"fc1.weight": np.ones((5, 4)), "fc2.weight": np.ones((3, 6))}, "torch", "do not chain"),
    # jax layout: (4, 5) outputs 5 features, (3, 6) takes 3.
    ({"fc1.weight": np.ones((4, 5)), "fc2.weight": np.ones((3, 6))}, "jax", "do not chain"),
    ({"conv1.weight": np.ones((6, 1, 5, 5))}, "torch", "only 2-D"),
    ({"fc1.weight": np.array([[1.0, np.nan]])}, "torch", "NaN or infinite"),
    ({"fc1.weight": np.array([[1.0, np.inf]])}, "jax", "NaN or infinite"),
    ({"fc1.weight": np.array([["a", "b"]])}, "torch", "non-real dtype"),
    ({"fc1.bias": np.zeros(3)}, "torch", "no weight matrices"),
])
def test_invalid_targets(tmp_path, arrays, layout, message):
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=message) as info:
    targets.load_npz_target(path, layout=layout)
  assert str(path) in str(info.value)


def test_bad_layout_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match="layout"):
    targets.load_npz_target(tmp_path / "x.npz", layout="tf")
  with pytest.raises(FileNotFoundError):
    targets.load_npz_target(tmp_path / "x.npz")
  with pytest.raises(ValueError, match="expected \\(d_in, d_out\\)"):
    targets.save_npz_target(tmp_path / "x.npz", [np.ones(3)])


# --- target kernels: checks, sizes, random targets, the plain forward -------------------

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def test_check_target_and_layer_sizes():
  kernels = targets.random_target(jax.random.key(0), (5, 4, 3))
  assert targets.target_layer_sizes(kernels) == (5, 4, 3)
  assert all(k.dtype == jnp.float32 for k in targets.check_target(kernels, (5, 4, 3)))
  with pytest.raises(ValueError, match="no layers"):
    targets.check_target([])
  with pytest.raises(ValueError, match="d_in"):
    targets.check_target([jnp.ones((5, 4)), jnp.ones((3, 3))])
  with pytest.raises(ValueError, match="layer sizes"):
    targets.check_target(kernels, (5, 4, 2))
  with pytest.raises(ValueError, match="non-empty"):
    targets.check_target([jnp.ones((3, 3, 3))])
  with pytest.raises(ValueError, match="layer 1 contains NaN"):
    targets.check_target([kernels[0], kernels[1].at[0, 0].set(jnp.nan)])


def test_random_target_has_the_spectral_norm():
  kernels = targets.random_target(jax.random.key(1), (6, 4, 2), spectral_norm=0.5)
  for k in kernels:
    np.testing.assert_allclose(jnp.linalg.norm(k, ord=2), 0.5, rtol=1e-5)
  with pytest.raises(ValueError, match="spectral_norm"):
    targets.random_target(jax.random.key(1), (2, 2), spectral_norm=0.0)
  with pytest.raises(ValueError, match="layer_sizes"):
    targets.random_target(jax.random.key(1), (2,))


def test_forward_and_as_matrix():
  kernels = targets.random_target(jax.random.key(2), (3, 4, 2))
  x = jax.random.normal(jax.random.key(3), (5, 3))
  np.testing.assert_allclose(targets.forward(kernels, x),
                             jax.nn.relu(x @ kernels[0]) @ kernels[1], rtol=1e-6)
  conv = jnp.arange(2 * 2 * 3 * 4, dtype=jnp.float32).reshape(2, 2, 3, 4)
  assert targets.as_matrix(conv).shape == (12, 4)
  np.testing.assert_array_equal(targets.as_matrix(conv)[:, 1], conv[..., 1].reshape(-1))


def test_permutation_target_preserves_the_norm_of_nonnegative_inputs():
  kernels = targets.permutation_target(jax.random.key(3), (5, 5, 5, 5))
  assert targets.target_layer_sizes(kernels) == (5, 5, 5, 5)
  for k in kernels:
    k = np.asarray(k)
    assert sorted(np.unique(k)) == [0.0, 1.0]
    np.testing.assert_array_equal(k.sum(0), 1.0)  # one 1 per row and column
    np.testing.assert_array_equal(k.sum(1), 1.0)
    assert np.linalg.norm(k, 2) == pytest.approx(1.0)
  x = np.abs(np.random.default_rng(0).normal(size=(7, 5))).astype(np.float32)
  y = np.asarray(targets.forward(kernels, x))
  np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-6)
  wide = targets.permutation_target(jax.random.key(0), (3, 6))[0]
  assert np.asarray(wide).sum() == 3 and np.asarray(wide).max() == 1.0
  assert targets.make_target("permutation", jax.random.key(3), (5, 5, 5, 5))[1].shape == (5, 5)
  with pytest.raises(ValueError, match="family must be one of"):
    targets.make_target("orthogonal", jax.random.key(0), (2, 2))


def test_biased_layers_check_split_and_forward_match_numpy():
  kernels = targets.random_target(jax.random.key(4), (3, 4, 2))
  biases = [jnp.asarray([0.5, -0.25, 0.0, 1.0]), jnp.asarray([-1.0, 2.0])]
  layers = targets.join_layers(kernels, [biases[0], None])
  assert targets.has_biases(layers) and not targets.has_biases(kernels)
  ks, bs = targets.split_layers(layers)
  assert bs[1] is None and ks[1] is kernels[1]
  assert targets.target_layer_sizes(layers) == (3, 4, 2)
  with pytest.raises(ValueError, match="method 'bias'"):
    targets.check_target(layers)
  assert targets.check_target(layers, allow_bias=True)[0]["bias"].dtype == jnp.float32
  with pytest.raises(ValueError, match=r"bias must have shape \(d_out,\) = \(4,\)"):
    targets.check_target([{"kernel": kernels[0], "bias": jnp.ones(3)}], allow_bias=True)
  with pytest.raises(ValueError, match="layer 0 bias contains NaN"):
    targets.check_target([{"kernel": kernels[0], "bias": biases[0].at[1].set(jnp.nan)}],
                         allow_bias=True)
  x = np.random.default_rng(1).normal(size=(6, 3))
  full = targets.join_layers(kernels, biases)
  ref = np.maximum(x @ np.asarray(kernels[0], np.float64) + np.asarray(biases[0]), 0)
  ref = ref @ np.asarray(kernels[1], np.float64) + np.asarray(biases[1])
  np.testing.assert_allclose(targets.forward(full, jnp.asarray(x, jnp.float32)), ref,
                             rtol=1e-5, atol=1e-5)
  # a bias-free layer list runs bit-identically in both forms' code path
  np.testing.assert_array_equal(targets.forward(kernels, x), targets.forward(
      targets.join_layers(kernels, None), x))
