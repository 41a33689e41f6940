"""Bias-free target classifiers: FC2 (784-500-10), FC4 (784-500-500-500-10) and LeNet5.

Flax linen rather than nnx: these are stateless feed-forward nets, and linen's functional
`init`/`apply` hands back plain nested-dict params, which is what the rest of lth_jax (pure
functions on pytrees of kernels) consumes without any split/merge step.

Inputs are images (N, 28, 28, 1); outputs are logits (N, 10). Kernels follow JAX's
convention y = x @ K, K of shape (d_in, d_out). Dense layers are named fc1, fc2, ...
in order, so `kernels_from_params` can find them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "MLP",
    "FC2",
    "FC4",
    "LeNet5",
    "MODELS",
    "get_model",
    "kernels_from_params",
    "params_from_kernels",
    "count_params",
]


class MLP(nn.Module):
  """Bias-free ReLU MLP: flatten, then Dense layers fc1..fcL with `widths` outputs.

  (N, ...) -> (N, widths[-1]); no ReLU after the last layer.
  """

  widths: Sequence[int] = (500, 10)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.widths):
      if i:
        x = nn.relu(x)
      x = nn.Dense(width, use_bias=False, name=f"fc{i + 1}")(x)
    return x


class FC2(MLP):
  """784-500-10: the target of the paper's Experiment 1 (397,000 weights)."""

  widths: Sequence[int] = (500, 10)


class FC4(MLP):
  """784-500-500-500-10 (897,000 weights)."""

  widths: Sequence[int] = (500, 500, 500, 10)


class LeNet5(nn.Module):
  """conv 1->6 5x5 pad 2, pool, conv 6->16 5x5, pool, FC 400-120-84-10; no biases.

  (N, 28, 28, 1) -> (N, 10). The 400 features are flattened in NHWC order (5, 5, 16), unlike
  PyTorch's NCHW; this only matters when importing PyTorch LeNet weights for fc1.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pool = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
    x = pool(nn.relu(nn.Conv(6, (5, 5), padding=((2, 2), (2, 2)), use_bias=False,
                             name="conv1")(x)))                      # (N, 14, 14, 6)
    x = pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID", use_bias=False,
                             name="conv2")(x)))                      # (N, 5, 5, 16)
    return MLP((120, 84, 10), name="mlp")(nn.relu(x.reshape((x.shape[0], -1))))


MODELS = {"fc2": FC2, "fc4": FC4, "lenet5": LeNet5}


def get_model(name: str) -> nn.Module:
  """"fc2" | "fc4" | "lenet5" (case-insensitive) -> a fresh module."""
  try:
    return MODELS[name.lower()]()
  except KeyError:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def _fc_index(name: str) -> int | None:
  m = re.fullmatch(r"fc(\d+)", name)
  return int(m.group(1)) if m else None


def kernels_from_params(params: Mapping) -> list[jax.Array]:
  """The fully connected kernels, in order: [(d0, d1), (d1, d2), ...].

  Accepts linen variables ({"params": ...}) or the params dict itself, of an MLP/FC2/FC4
  or a LeNet5 (whose FC part lives under "mlp"; its conv kernels are not returned).
  """
  params = params.get("params", params)
  params = params.get("mlp", params)
  layers = sorted((i, k) for k in params if (i := _fc_index(k)) is not None)
  if not layers or [i for i, _ in layers] != list(range(1, len(layers) + 1)):
    raise ValueError(f"expected dense layers fc1..fcL, found keys {sorted(params)}")
  kernels = []
  for _, k in layers:
    if set(params[k]) != {"kernel"}:
      raise ValueError(f"layer {k} has parameters {sorted(params[k])}; expected a "
                       "bias-free kernel only")
    kernels.append(params[k]["kernel"])
  return kernels


def params_from_kernels(kernels: Sequence[jax.Array]) -> dict:
  """Inverse of `kernels_from_params` for MLPs: variables for `MLP(widths).apply`, with
  widths = [K.shape[1] for K in kernels] (e.g. to evaluate an imported target)."""
  return {"params": {f"fc{i + 1}": {"kernel": jnp.asarray(k)} for i, k in enumerate(kernels)}}


def count_params(params) -> int:
  """Total number of scalar parameters in a pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
