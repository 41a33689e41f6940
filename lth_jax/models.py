"""Target classifiers: FC2 (784-500-10), FC4 (784-500-500-500-10) and LeNet5, bias-free
by default (the theory's networks); ``use_bias=True`` gives every layer a bias.

Flax linen rather than nnx: these are stateless feed-forward nets, and linen's functional
`init`/`apply` hands back plain nested-dict params, which is what the rest of lth_jax (pure
functions on pytrees of kernels) consumes without any split/merge step.

Inputs are images (N, 28, 28, 1); outputs are logits (N, 10). Kernels follow JAX's
convention y = x @ K, K of shape (d_in, d_out); conv kernels are (kh, kw, in, out). Layers
are named conv1, conv2, ... and fc1, fc2, ... in order, so `kernels_from_params` can list
them all: a bias-free layer as its kernel, a biased one as ``{"kernel", "bias"}``
(``targets.split_layers``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lth_jax import targets as targets_lib

__all__ = [
    "MLP",
    "FC2",
    "FC4",
    "LeNet5",
    "MODELS",
    "LENET5_KERNEL_SHAPES",
    "ConvStage",
    "conv_architecture",
    "max_pool",
    "get_model",
    "kernels_from_params",
    "params_from_kernels",
    "model_from_kernels",
    "count_params",
]


class MLP(nn.Module):
  """ReLU MLP: flatten, then Dense layers fc1..fcL with `widths` outputs, bias-free unless
  `use_bias`.

  (N, ...) -> (N, widths[-1]); no ReLU after the last layer.
  """

  widths: Sequence[int] = (500, 10)
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.widths):
      if i:
        x = nn.relu(x)
      x = nn.Dense(width, use_bias=self.use_bias, name=f"fc{i + 1}")(x)
    return x


class FC2(MLP):
  """784-500-10: the target of the paper's Experiment 1 (397,000 weights)."""

  widths: Sequence[int] = (500, 10)


class FC4(MLP):
  """784-500-500-500-10 (897,000 weights)."""

  widths: Sequence[int] = (500, 500, 500, 10)


class ConvStage(NamedTuple):
  """One conv layer of a LeNet5-like CNN: ``padding`` zeros on every side of the input, the
  convolution (stride 1), ReLU, then a ``pool`` x ``pool`` max-pool with stride ``pool``."""

  padding: int
  pool: int


def conv_architecture(kernel_shapes: Sequence[Sequence[int]]) -> tuple[ConvStage, ...]:
  """The stages of the leading conv kernels ``(kh, kw, in, out)`` of a LeNet5-like CNN:
  LeNet5's rule, the first conv keeps the image size (``(kh - 1) // 2`` zeros), later ones
  are valid; each is followed by ReLU and a 2x2 max-pool; then flatten (NHWC) and the dense
  head. The one description of the architecture (``LeNet5`` and ``constructions.conv``)."""
  convs = [tuple(s) for s in kernel_shapes if len(s) == 4]
  return tuple(ConvStage((s[0] - 1) // 2 if i == 0 else 0, 2) for i, s in enumerate(convs))


def max_pool(x: jax.Array, size: int) -> jax.Array:
  """``(N, H, W, C) -> (N, H // size, W // size, C)``: max over ``size`` x ``size`` windows."""
  return nn.max_pool(x, (size, size), strides=(size, size))


class LeNet5(nn.Module):
  """conv 1->6 5x5 pad 2, pool, conv 6->16 5x5, pool, FC 400-120-84-10; no biases unless
  `use_bias` (then every conv and FC layer has one).

  (N, 28, 28, 1) -> (N, 10). The 400 features are flattened in NHWC order (5, 5, 16), unlike
  PyTorch's NCHW; this only matters when importing PyTorch LeNet weights for fc1. The conv
  stages are ``conv_architecture(LENET5_KERNEL_SHAPES)``.
  """

  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shapes = LENET5_KERNEL_SHAPES[:2]
    for i, (shape, stage) in enumerate(zip(shapes, conv_architecture(shapes))):
      p = stage.padding
      x = nn.Conv(shape[-1], shape[:2], padding=((p, p), (p, p)), use_bias=self.use_bias,
                  name=f"conv{i + 1}")(x)
      x = max_pool(nn.relu(x), stage.pool)  # (N, 14, 14, 6), then (N, 5, 5, 16)
    return MLP((120, 84, 10), use_bias=self.use_bias, name="mlp")(
        nn.relu(x.reshape((x.shape[0], -1))))


MODELS = {"fc2": FC2, "fc4": FC4, "lenet5": LeNet5}
# kernels_from_params(LeNet5 variables), in order: conv (kh, kw, in, out), dense (in, out).
LENET5_KERNEL_SHAPES = ((5, 5, 1, 6), (5, 5, 6, 16), (400, 120), (120, 84), (84, 10))


def get_model(name: str, use_bias: bool = False) -> nn.Module:
  """"fc2" | "fc4" | "lenet5" (case-insensitive) -> a fresh module (with biases if
  `use_bias`)."""
  try:
    return MODELS[name.lower()](use_bias=use_bias)
  except KeyError:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def _indexed(name: str, prefix: str) -> int | None:
  m = re.fullmatch(prefix + r"(\d+)", name)
  return int(m.group(1)) if m else None


def _numbered_kernels(params: Mapping, prefix: str, where: str) -> list:
  """Layers prefix1..prefixL in ``params``, in order (no gaps): a kernel, or
  ``{"kernel", "bias"}`` for a layer with a bias."""
  layers = sorted((i, k) for k in params if (i := _indexed(k, prefix)) is not None)
  if [i for i, _ in layers] != list(range(1, len(layers) + 1)):
    raise ValueError(f"{where}: expected layers {prefix}1..{prefix}L, found keys "
                     f"{sorted(params)}")
  kernels = []
  for _, k in layers:
    if set(params[k]) not in ({"kernel"}, {"kernel", "bias"}):
      raise ValueError(f"layer {k} has parameters {sorted(params[k])}; expected a kernel "
                       "and at most a bias")
    kernels.append(dict(params[k]) if "bias" in params[k] else params[k]["kernel"])
  return kernels


def kernels_from_params(params: Mapping) -> list:
  """EVERY layer of an MLP/FC2/FC4 or a LeNet5, in forward order: its kernel, or
  ``{"kernel", "bias"}`` when it has a bias (``use_bias``).

  Accepts linen variables ({"params": ...}) or the params dict itself.
  MLP: [(d0, d1), (d1, d2), ...]. LeNet5: [conv1 (5, 5, 1, 6), conv2 (5, 5, 6, 16),
  fc1 (400, 120), fc2 (120, 84), fc3 (84, 10)] (conv kernels (kh, kw, in, out), dense
  kernels (d_in, d_out): the output axis is last in both).

  Raises ValueError for a key that is neither a layer of these models nor expected
  (nothing is silently dropped), a layer parameter other than kernel and bias, or a gap
  in the layer numbering.
  """
  params = params.get("params", params)
  convs = [k for k in params if _indexed(k, "conv") is not None]
  if convs or "mlp" in params:  # LeNet5: conv1, conv2, then its MLP head under "mlp"
    unknown = sorted(set(params) - set(convs) - {"mlp"})
    if unknown or "mlp" not in params:
      raise ValueError(f"LeNet5 params must be conv1..convK and mlp, found keys "
                       f"{sorted(params)}")
    kernels = _numbered_kernels({k: params[k] for k in convs}, "conv", "LeNet5")
    head = _numbered_kernels(params["mlp"], "fc", "LeNet5 mlp")
    if not head or set(params["mlp"]) != {f"fc{i + 1}" for i in range(len(head))}:
      raise ValueError(f"LeNet5 mlp must be fc1..fcL, found keys {sorted(params['mlp'])}")
    return kernels + head
  kernels = _numbered_kernels(params, "fc", "MLP")
  unknown = sorted(set(params) - {f"fc{i + 1}" for i in range(len(kernels))})
  if not kernels or unknown:
    raise ValueError(f"expected dense layers fc1..fcL only, found keys {sorted(params)}")
  return kernels


def params_from_kernels(kernels: Sequence) -> dict:
  """Inverse of `kernels_from_params`: variables for `model_from_kernels(kernels).apply`.

  All kernels 2-D: an MLP with widths = [K.shape[1] for K in kernels] (e.g. to evaluate an
  imported target). Leading 4-D conv kernels: a LeNet5 (conv1, conv2, then mlp fc1..fc3).
  Layers may be ``{"kernel", "bias"}`` dicts: if any is, every layer gets a bias (zeros
  for bare kernels), as the `use_bias` model expects.
  """
  ks, bs = targets_lib.split_layers(kernels)
  num_conv = _num_conv(ks)
  biased = any(b is not None for b in bs)

  def layer(k, b):
    if not biased:
      return {"kernel": jnp.asarray(k)}
    return {"kernel": jnp.asarray(k),
            "bias": jnp.zeros(k.shape[-1], jnp.float32) if b is None else jnp.asarray(b)}

  conv = {f"conv{i + 1}": layer(k, b) for i, (k, b) in enumerate(zip(ks, bs)) if i < num_conv}
  dense = {f"fc{i + 1}": layer(k, b)
           for i, (k, b) in enumerate(zip(ks[num_conv:], bs[num_conv:]))}
  return {"params": dict(conv, mlp=dense) if num_conv else dense}


def _num_conv(kernels: Sequence[jax.Array]) -> int:
  """Number of leading conv kernels; checks they are exactly LeNet5's if there are any."""
  ndims = [len(k.shape) for k in kernels]
  num_conv = next((i for i, d in enumerate(ndims) if d != 4), len(ndims))
  if any(d != 2 for d in ndims[num_conv:]) or not ndims[num_conv:]:
    raise ValueError(f"expected 4-D conv kernels then 2-D dense kernels, got shapes "
                     f"{[tuple(k.shape) for k in kernels]}")
  if num_conv and [tuple(k.shape) for k in kernels] != list(LENET5_KERNEL_SHAPES):
    raise ValueError("conv kernels are supported for LeNet5 only: expected shapes "
                     f"{list(LENET5_KERNEL_SHAPES)}, got {[tuple(k.shape) for k in kernels]}")
  return num_conv


def model_from_kernels(kernels: Sequence) -> nn.Module:
  """The module whose `apply(params_from_kernels(kernels), x)` runs these layers:
  LeNet5 if they start with conv kernels, else MLP(widths); with biases if any layer
  has one."""
  ks, bs = targets_lib.split_layers(kernels)
  use_bias = any(b is not None for b in bs)
  if _num_conv(ks):
    return LeNet5(use_bias=use_bias)
  return MLP(tuple(int(k.shape[1]) for k in ks), use_bias=use_bias)


def count_params(params) -> int:
  """Total number of scalar parameters in a pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
