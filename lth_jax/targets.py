"""Target networks: validation, sizes, random targets, the plain forward, and .npz files.

A target is a list of layers in JAX's convention ``x @ K (+ b)``. A layer is either a
bias-free kernel ``K`` of shape ``(d_in, d_out)`` or a dict ``{"kernel": K, "bias": b}``
with ``b`` of shape ``(d_out,)`` (``split_layers`` separates the two; ``check_target``,
``target_layer_sizes``, ``random_target``, ``forward``). Bias-free targets stay plain lists
of kernels, and every function treats them exactly as before biases existed. Conv kernels
``(kh, kw, in, out)`` are read as matrices (``as_matrix``) by constructions that treat every
output channel as one row.

Import and export of external target networks as .npz files of weight matrices:

Which arrays are layers, and in which order:
  * if any key ends in ".weight" (a PyTorch state dict), the layers are exactly those keys,
    named by the key minus ".weight"; otherwise every key is a layer, named by the key;
  * layers are ordered by natural sort of their names: digit runs compare as integers, so
    fc1 < fc2 < fc10 and layers.0 < layers.2 < layers.10;
  * a key ending in ".bias" is the bias of the layer of the same name (shape ``(d_out,)``):
    all zero (or empty) -> the layer stays a bare kernel; nonzero -> the layer is
    ``{"kernel": K, "bias": b}`` (only constructions with bias units, ``"bias"``, can prune
    a random network to it); a bias without its layer is an error; other keys are
    ignored, with a warning.
layout="torch": matrices are (d_out, d_in) as in torch.nn.Linear and are transposed on
import; layout="jax": matrices are kernels (d_in, d_out), y = x @ K, kept as they are.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lth_jax import _checks
from lth_jax import files

__all__ = ["split_layers", "join_layers", "has_biases", "with_random_biases", "check_target", "target_layer_sizes", "random_target", "permutation_target",
           "TARGET_FAMILIES", "make_target", "forward", "as_matrix", "load_npz_target",
           "save_npz_target", "natural_key"]

# Random target families of the sweep (``make_target``): "random" shrinks approximation
# errors with depth, "permutation" lets them add up (see ``permutation_target``).
TARGET_FAMILIES = ("random", "permutation")

_LAYOUTS = ("torch", "jax")


def split_layers(target: Sequence) -> tuple[list, list]:
  """``(kernels, biases)`` of a target: per layer its kernel, and its bias ``(d_out,)`` or
  None for a bare-kernel layer. Traceable (no conversion, no checks)."""
  kernels, biases = [], []
  for layer in target:
    if isinstance(layer, dict):
      if set(layer) != {"kernel", "bias"}:
        raise ValueError(f"a target layer dict must have keys 'kernel' and 'bias', got "
                         f"{sorted(layer)}")
      kernels.append(layer["kernel"])
      biases.append(layer["bias"])
    else:
      kernels.append(layer)
      biases.append(None)
  return kernels, biases


def join_layers(kernels: Sequence, biases: Sequence | None) -> list:
  """Inverse of ``split_layers``: a bare kernel where the bias is None."""
  biases = [None] * len(kernels) if biases is None else biases
  return [k if b is None else {"kernel": k, "bias": b} for k, b in zip(kernels, biases)]


def has_biases(target: Sequence) -> bool:
  """Whether any layer is a ``{"kernel", "bias"}`` dict."""
  return any(b is not None for b in split_layers(target)[1])


def check_target(target: Sequence, layer_sizes: Sequence[int] | None = None, *,
                 allow_bias: bool = False) -> list:
  """Validates a target: non-empty ``(d_in, d_out)`` kernels that chain, finite (when
  concrete), and of ``layer_sizes`` when given; with ``allow_bias``, dict layers whose
  bias is ``(d_out,)`` and finite. Returns the layers as float32, in their given form (bare
  kernels stay bare).

  Raises:
    ValueError: naming the offending layer; a biased layer without ``allow_bias``.
  """
  raw_kernels, raw_biases = split_layers(target)
  kernels = [jnp.asarray(k, jnp.float32) for k in raw_kernels]
  if not kernels:
    raise ValueError("target has no layers")
  for i, k in enumerate(kernels):
    if k.ndim != 2 or 0 in k.shape:
      raise ValueError(f"target layer {i} must be a non-empty (d_in, d_out) kernel, got "
                       f"shape {k.shape}")
    if i and k.shape[0] != kernels[i - 1].shape[1]:
      raise ValueError(f"target layer {i} has d_in {k.shape[0]} but layer {i - 1} has "
                       f"d_out {kernels[i - 1].shape[1]}")
  sizes = (kernels[0].shape[0],) + tuple(k.shape[1] for k in kernels)
  if layer_sizes is not None and tuple(layer_sizes) != sizes:
    raise ValueError(f"target layer sizes {sizes} do not match the random network's "
                     f"{tuple(layer_sizes)}")
  _checks.check_finite([(f"layer {i}", k) for i, k in enumerate(kernels)], "target")
  if all(b is None for b in raw_biases):
    return kernels
  if not allow_bias:
    raise ValueError("target has biases ({'kernel', 'bias'} layers) but this construction "
                     "has none: use method 'bias' (or a bias-free target)")
  biases = [None if b is None else jnp.asarray(b, jnp.float32) for b in raw_biases]
  for i, (k, b) in enumerate(zip(kernels, biases)):
    if b is not None and b.shape != (k.shape[1],):
      raise ValueError(f"target layer {i} bias must have shape (d_out,) = ({k.shape[1]},), "
                       f"got {b.shape}")
  _checks.check_finite([(f"layer {i} bias", b) for i, b in enumerate(biases)
                        if b is not None], "target")
  return join_layers(kernels, biases)


def target_layer_sizes(target: Sequence) -> tuple[int, ...]:
  """``(d_0, ..., d_l)`` of a list of ``(d_in, d_out)`` kernels (or biased layers)."""
  target = split_layers(target)[0]
  return (int(target[0].shape[0]),) + tuple(int(k.shape[1]) for k in target)


def as_matrix(kernel: jax.Array) -> jax.Array:
  """A kernel as ``(d_in, d_out)``: conv ``(kh, kw, in, out)`` -> ``(kh * kw * in, out)``
  (the output axis is last for Dense and Conv alike, so each output channel is a column)."""
  kernel = jnp.asarray(kernel, jnp.float32)
  return kernel.reshape(-1, kernel.shape[-1])


def _layer_pairs(layer_sizes: Sequence[int], spectral_norm: float) -> list[tuple[int, int]]:
  """``(d_in, d_out)`` per layer of a target family; ValueError on bad sizes or norm."""
  sizes = tuple(int(d) for d in layer_sizes)
  if len(sizes) < 2 or any(d < 1 for d in sizes):
    raise ValueError(f"layer_sizes must list >= 2 positive sizes, got {layer_sizes}")
  if not spectral_norm > 0:
    raise ValueError(f"spectral_norm must be positive, got {spectral_norm}")
  return list(zip(sizes[:-1], sizes[1:]))


def random_target(key: chex.PRNGKey, layer_sizes: Sequence[int],
                  spectral_norm: float = 1.0) -> list[jax.Array]:
  """Gaussian kernels ``(d_in, d_out)`` rescaled to the given spectral norm per layer."""
  out = []
  for i, (a, b) in enumerate(_layer_pairs(layer_sizes, spectral_norm)):
    k = jax.random.normal(jax.random.fold_in(key, i), (a, b), jnp.float32)
    out.append(k * (spectral_norm / jnp.linalg.norm(k, ord=2)))
  return out


def permutation_target(key: chex.PRNGKey, layer_sizes: Sequence[int],
                       spectral_norm: float = 1.0) -> list[jax.Array]:
  """Scaled partial permutation kernels: layer ``i`` maps input ``j`` to output ``pi_i(j)``
  with weight ``spectral_norm`` (``pi_i`` a random injection for ``d_in <= d_out``; for
  ``d_in > d_out`` only ``d_out`` inputs are kept).

  Why this family: with ``spectral_norm = 1`` a square layer is an isometry that maps
  nonnegative vectors to nonnegative vectors, so after the first ReLU every later ReLU
  passes the activations unchanged and the norm is preserved through the whole network.
  An approximation error made in one layer is therefore carried to the output at full
  size and the layers' errors add up (roughly ``l`` times one layer's), as in the worst
  case of Theorem 1. Random spectral-norm-1 Gaussian targets (``random_target``) instead
  shrink errors with depth (their ReLU layers contract most directions), so they cannot
  show the depth term. The nonzero weights are all ``spectral_norm`` (1: the largest a
  spectral-norm-1 layer can have, hence the hardest SubsetSum targets); the zero weights
  are met exactly by the empty subset.
  """
  out = []
  for i, (a, b) in enumerate(_layer_pairs(layer_sizes, spectral_norm)):
    key_i = jax.random.fold_in(key, i)
    rows = jax.random.permutation(key_i, a)[:min(a, b)]
    cols = jax.random.permutation(jax.random.fold_in(key_i, 1), b)[:min(a, b)]
    out.append(jnp.zeros((a, b), jnp.float32).at[rows, cols].set(spectral_norm))
  return out


def make_target(family: str, key: chex.PRNGKey, layer_sizes: Sequence[int],
                spectral_norm: float = 1.0) -> list[jax.Array]:
  """A target of ``family`` (``TARGET_FAMILIES``): ``random_target`` or
  ``permutation_target``."""
  makers = {"random": random_target, "permutation": permutation_target}
  if family not in makers:
    raise ValueError(f"target family must be one of {TARGET_FAMILIES}, got {family!r}")
  return makers[family](key, layer_sizes, spectral_norm)


def with_random_biases(key: chex.PRNGKey, target: Sequence, norm: float) -> list:
  """``target`` with a Gaussian bias of Euclidean norm ``norm`` on every layer (layer ``i``
  from ``fold_in(key, i)``); ``norm = 0`` returns the target unchanged (bias-free)."""
  if not norm >= 0:
    raise ValueError(f"bias norm must be >= 0, got {norm}")
  if norm == 0:
    return list(target)
  kernels = split_layers(target)[0]
  biases = []
  for i, k in enumerate(kernels):
    b = jax.random.normal(jax.random.fold_in(key, i), (k.shape[1],), jnp.float32)
    biases.append(b * (norm / jnp.linalg.norm(b)))
  return join_layers(kernels, biases)


@jax.jit
def forward(kernels: Sequence, x: jax.Array) -> jax.Array:
  """ReLU MLP: ``x @ K_1 (+ b_1) -> relu -> ... -> @ K_L (+ b_L)`` (no ReLU on the output).

  Args:
    kernels: target layers: ``(d_in, d_out)`` kernels or ``{"kernel", "bias"}`` dicts
      (a bias-free layer runs exactly ``x @ K``).
    x: ``(batch, d_0)``.
  Returns:
    ``(batch, d_L)``.
  """
  ks, bs = split_layers(kernels)
  for i, (k, b) in enumerate(zip(ks, bs)):
    x = x @ k
    if b is not None:
      x = x + b
    if i + 1 < len(ks):
      x = jax.nn.relu(x)
  return x


def natural_key(name: str) -> tuple:
  """Sort key under which digit runs compare as numbers: "fc2" < "fc10"."""
  # re.split with a capturing group alternates text (even slots) and digits (odd slots),
  # so tuples from different names compare slot by slot with matching types.
  parts = re.split(r"(\d+)", name)
  return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _check_layout(layout: str) -> None:
  if layout not in _LAYOUTS:
    raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")


def _npz_bias(path, key: str, bias: np.ndarray, d_out: int) -> np.ndarray | None:
  """A layer's bias from an npz file: None when all zero (a bare-kernel layer)."""
  if not np.issubdtype(bias.dtype, np.number) or np.issubdtype(bias.dtype, np.complexfloating):
    raise ValueError(f"{path}: {key} has non-real dtype {bias.dtype}")
  if not bias.size or not np.any(bias != 0):
    return None
  if bias.shape != (d_out,):
    raise ValueError(f"{path}: {key} has shape {bias.shape}; its layer has {d_out} outputs, "
                     f"so the bias must be ({d_out},)")
  if not np.all(np.isfinite(bias)):
    raise ValueError(f"{path}: {key} contains NaN or infinite values")
  return bias


def load_npz_target(path: str | os.PathLike, layout: str = "torch") -> list:
  """The target layers [(d0, d1), (d1, d2), ...] (float32) of the network in an .npz file:
  a bare kernel per layer, or ``{"kernel", "bias"}`` where the file holds a nonzero bias.

  See the module docstring for the key and orientation rules. Raises ValueError naming the
  file and key for: not an npz (or corrupt, or holding object arrays: ``files.load_npz``),
  no layers, a bias without its layer or not of shape ``(d_out,)``, a non-2-D or non-finite
  matrix or bias, or consecutive layers whose dimensions do not chain.
  """
  _check_layout(layout)
  path = pathlib.Path(path)
  arrays = files.load_npz(path)  # numeric arrays only: never unpickles
  bias_keys = [k for k in arrays if k.endswith(".bias")]
  weight_keys = [k for k in arrays if k.endswith(".weight")]
  if weight_keys:
    layers = {k[: -len(".weight")]: k for k in weight_keys}
    ignored = sorted(set(arrays) - set(weight_keys) - set(bias_keys))
  else:
    layers = {k: k for k in arrays if k not in bias_keys}
    ignored = []
  if not layers:
    raise ValueError(f"{path}: no weight matrices found (keys: {sorted(arrays)})")
  for key in sorted(bias_keys, key=natural_key):
    if key[: -len(".bias")] not in layers and np.any(np.asarray(arrays[key]) != 0):
      raise ValueError(f"{path}: {key} has non-zero biases but no weight matrix "
                       f"{key[: -len('.bias')]!r} to belong to")
  if ignored:
    logging.warning("%s: ignoring non-weight keys %s", path, ignored)

  out = []
  for name in sorted(layers, key=natural_key):
    key = layers[name]
    w = arrays[key]
    if w.ndim != 2:
      raise ValueError(f"{path}: {key} has shape {w.shape}; only 2-D (fully connected) "
                       "weight matrices are supported")
    if not np.issubdtype(w.dtype, np.number) or np.issubdtype(w.dtype, np.complexfloating):
      raise ValueError(f"{path}: {key} has non-real dtype {w.dtype}")
    if not np.all(np.isfinite(w)):
      raise ValueError(f"{path}: {key} contains NaN or infinite values")
    kernel = w.T if layout == "torch" else w
    if out and out[-1][1].shape[1] != kernel.shape[0]:
      prev_key, prev, _ = out[-1]
      raise ValueError(
          f"{path}: layer shapes do not chain ({layout} layout): {prev_key} outputs "
          f"{prev.shape[1]} features but {key} takes {kernel.shape[0]} "
          f"(kernels {prev.shape} then {kernel.shape})")
    bias_key = name + ".bias"
    bias = (_npz_bias(path, bias_key, np.asarray(arrays[bias_key]), kernel.shape[1])
            if bias_key in arrays else None)
    out.append((key, kernel, bias))
  return join_layers([jnp.asarray(k, jnp.float32) for _, k, _ in out],
                     [None if b is None else jnp.asarray(b, jnp.float32) for _, _, b in out])


def save_npz_target(path: str | os.PathLike, kernels: Sequence,
                    layout: str = "torch") -> pathlib.Path:
  """Writes target layers (kernels (d_in, d_out), or ``{"kernel", "bias"}`` dicts) as
  fc1.weight (+ fc1.bias), fc2.weight, ... so that `load_npz_target(path, layout)` returns
  them; torch layout stores each kernel transposed, (d_out, d_in). Written to a temporary
  file and renamed (never a half-written file)."""
  _check_layout(layout)
  path = pathlib.Path(path)
  arrays = {}
  ks, bs = split_layers(kernels)
  for i, (k, b) in enumerate(zip(ks, bs)):
    k = np.asarray(k)
    if k.ndim != 2:
      raise ValueError(f"kernel {i} has shape {k.shape}; expected (d_in, d_out)")
    arrays[f"fc{i + 1}.weight"] = k.T if layout == "torch" else k
    if b is not None:
      b = np.asarray(b)
      if b.shape != (k.shape[1],):
        raise ValueError(f"bias {i} has shape {b.shape}; expected ({k.shape[1]},)")
      arrays[f"fc{i + 1}.bias"] = b
  if not arrays:
    raise ValueError("no kernels to save")
  return files.atomic_savez(path, arrays)
