"""Import and export external target networks as .npz files of weight matrices.

Which arrays are layers, and in which order:
  * if any key ends in ".weight" (a PyTorch state dict), the layers are exactly those keys,
    named by the key minus ".weight"; otherwise every key is a layer, named by the key;
  * layers are ordered by natural sort of their names: digit runs compare as integers, so
    fc1 < fc2 < fc10 and layers.0 < layers.2 < layers.10;
  * keys ending in ".bias" are accepted only if all zero (the theory's networks have no
    biases); other keys are ignored, with a warning.
layout="torch": matrices are (d_out, d_in) as in torch.nn.Linear and are transposed on
import; layout="jax": matrices are kernels (d_in, d_out), y = x @ K, kept as they are.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lth_jax import files

__all__ = ["load_npz_target", "save_npz_target", "natural_key"]

_LAYOUTS = ("torch", "jax")


def natural_key(name: str) -> tuple:
  """Sort key under which digit runs compare as numbers: "fc2" < "fc10"."""
  # re.split with a capturing group alternates text (even slots) and digits (odd slots),
  # so tuples from different names compare slot by slot with matching types.
  parts = re.split(r"(\d+)", name)
  return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _check_layout(layout: str) -> None:
  if layout not in _LAYOUTS:
    raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")


def load_npz_target(path: str | os.PathLike, layout: str = "torch") -> list[jax.Array]:
  """Kernels [(d0, d1), (d1, d2), ...] (float32) of the bias-free network in an .npz file.

  See the module docstring for the key and orientation rules. Raises ValueError naming the
  file and key for: not an npz (or corrupt, or holding object arrays: ``files.load_npz``),
  no layers, a non-zero bias, a non-2-D or non-finite matrix, or consecutive layers whose
  dimensions do not chain.
  """
  _check_layout(layout)
  path = pathlib.Path(path)
  arrays = files.load_npz(path)  # numeric arrays only: never unpickles
  weight_keys = [k for k in arrays if k.endswith(".weight")]
  if weight_keys:
    layers = {k[: -len(".weight")]: k for k in weight_keys}
    bias_keys = [k for k in arrays if k.endswith(".bias")]
    ignored = sorted(set(arrays) - set(weight_keys) - set(bias_keys))
  else:
    bias_keys = [k for k in arrays if k.endswith(".bias")]
    layers = {k: k for k in arrays if k not in bias_keys}
    ignored = []
  if not layers:
    raise ValueError(f"{path}: no weight matrices found (keys: {sorted(arrays)})")
  for key in sorted(bias_keys, key=natural_key):
    bias = np.asarray(arrays[key])
    if bias.size and np.any(bias != 0):
      raise ValueError(
          f"{path}: {key} has non-zero biases (max |b| = {np.max(np.abs(bias)):.3g}); "
          "lth_jax targets must be bias-free (the SubsetSum construction has no biases): "
          "train the target without biases")
  if ignored:
    logging.warning("%s: ignoring non-weight keys %s", path, ignored)

  kernels = []
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
    if kernels and kernels[-1][1].shape[1] != kernel.shape[0]:
      prev_key, prev = kernels[-1]
      raise ValueError(
          f"{path}: layer shapes do not chain ({layout} layout): {prev_key} outputs "
          f"{prev.shape[1]} features but {key} takes {kernel.shape[0]} "
          f"(kernels {prev.shape} then {kernel.shape})")
    kernels.append((key, kernel))
  return [jnp.asarray(k, jnp.float32) for _, k in kernels]


def save_npz_target(path: str | os.PathLike, kernels: Sequence[jax.Array],
                    layout: str = "torch") -> pathlib.Path:
  """Writes kernels (d_in, d_out) as fc1.weight, fc2.weight, ... so that
  `load_npz_target(path, layout)` returns them; torch layout stores each transposed,
  (d_out, d_in). Written to a temporary file and renamed (never a half-written file)."""
  _check_layout(layout)
  path = pathlib.Path(path)
  arrays = {}
  for i, k in enumerate(kernels):
    k = np.asarray(k)
    if k.ndim != 2:
      raise ValueError(f"kernel {i} has shape {k.shape}; expected (d_in, d_out)")
    arrays[f"fc{i + 1}.weight"] = k.T if layout == "torch" else k
  if not arrays:
    raise ValueError("no kernels to save")
  return files.atomic_savez(path, arrays)
