"""``"conv"``: the depth-2l construction for LeNet5-like CNNs (Burkholz 2022; da Cunha,
Natale & Viennot 2022), a real pruned random CNN.

Target: leading conv kernels ``K (kh, kw, c_in, c_out)``, then dense kernels ``(d_in, d_out)``;
the stages between them (padding, ReLU, max-pool, NHWC flatten) are
``models.conv_architecture``, LeNet5's. Each target layer becomes two random layers with
``n`` copies per input channel:

* a 1x1 conv ``c_in -> c_in n`` whose kept entries are block-diagonal: intermediate channel
  ``(j, k)`` (index ``j n + k``) reads input channel ``j`` only, weight ``u[j, k]``; zero
  padding stays zero through ``relu(u * 0)``, so the padding can move behind it;
* a ``kh x kw`` conv ``c_in n -> c_out`` with weights ``v[a, b, (j, k), o]``, then the
  target's ReLU and max-pool.

Since ``relu(u z) = u relu(z)`` (``u > 0``) and ``|u| relu(-z)`` (``u < 0``), the pair computes
``conv(relu(z), P) - conv(relu(-z), N)`` with ``P`` (``N``) the kept products
``v[a, b, j, k, o] u[j, k]`` summed over the ``u > 0`` (``u < 0``) copies: each weight
``K[a, b, j, o]`` is two SubsetSum problems, exactly ``network``'s with the kernel read as the
matrix ``(kh kw c_in, c_out)`` (``targets.as_matrix``) and ``u`` repeated over the spatial
positions (``matrix_views``); ``network.instances``/``assemble`` solve and mask that view and a
channel's first-layer entry is kept when any spatial position uses it. Dense layers are the
same with ``kh = kw = 1`` (an MLP target gets ``network``'s draw and ticket). Burkholz's 2L
construction uses this pair with both sign halves (inputs of any sign); da Cunha et al.
assume nonnegative inputs and use only the ``u > 0`` copies.

Biases (not built here; the target stays bias-free): per conv layer, ``n`` bias channels
of the 1x1 conv (``constructions.bias.sample_bias_units``: a random bias ``beta[k]``, the
incoming weights pruned, so the channel is the constant ``relu(beta[k])`` at every pixel)
whose ``kh x kw`` weights are kept at ONE kernel tap that reads inside the image for every
output pixel (the centre tap of a padded conv, any tap of a valid one: the zero padding
would cut the constant elsewhere); each target bias ``b[o]`` is then one SubsetSum problem
over ``w[o, k] relu(beta[k])`` (``bias.bias_instances`` appended to ``instances``,
``bias.bias_masks`` in ``assemble``), and ``effective`` gains a ``(c_out,)`` bias per layer.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from lth_jax import _checks
from lth_jax import masks as masks_lib
from lth_jax import models
from lth_jax import random_net as rn
from lth_jax import targets as targets_lib
import lth_jax.constructions.base as base
import lth_jax.constructions.network as network

_DIMS = ("NHWC", "HWIO", "NHWC")


@struct.dataclass
class RandomCNN:
  """The random CNN's entries a ticket can keep, per target layer ``i`` (``s = kh kw``, 1 for
  dense layers).

  Attributes:
    params: ``{"u": [(c_in, n)], "v": [(c_out, s c_in, n)]}``; ``v[o, r, k]`` with ``r`` the
      row of ``as_matrix(K)``: ``(a kw + b) c_in + j``.
    filler_key: draws the 1x1 conv's entries that every ticket prunes (``dense_params``).
    kernel_shapes: the target's kernel shapes.
    distribution: ``"uniform"`` or ``"normal"`` (``random_net.DISTRIBUTIONS``).
  """

  params: dict
  filler_key: jax.Array
  kernel_shapes: tuple = struct.field(pytree_node=False)
  distribution: str = struct.field(pytree_node=False, default="uniform")

  @property
  def copies(self) -> tuple[int, ...]:
    return tuple(int(u.shape[-1]) for u in self.params["u"])


def _spatial(shape) -> int:
  return math.prod(shape[:-2])


def check_kernels(target) -> list[jax.Array]:
  """Validated float32 kernels: 4-D conv kernels whose channels chain, then at least one
  dense kernel, dense kernels chaining; finite. ValueError naming the layer otherwise."""
  kernels = [jnp.asarray(k, jnp.float32) for k in target]
  ndims = [k.ndim for k in kernels]
  num_conv = next((i for i, d in enumerate(ndims) if d != 4), len(ndims))
  if not kernels or any(d != 2 for d in ndims[num_conv:]) or num_conv == len(ndims):
    raise ValueError("target must be 4-D conv kernels (kh, kw, in, out) then >= 1 dense "
                     f"kernel (d_in, d_out), got shapes {[tuple(k.shape) for k in kernels]}")
  targets_lib.check_target(kernels[num_conv:])
  for i, k in enumerate(kernels[:num_conv]):
    if 0 in k.shape or (i and k.shape[2] != kernels[i - 1].shape[3]):
      raise ValueError(f"conv layer {i}: shape {k.shape} is empty or its input channels do "
                       "not match the previous layer's outputs")
  _checks.check_finite([(f"layer {i}", k) for i, k in enumerate(kernels)], "target")
  return kernels


# --------------------------------------------------------------------------------------
# The architecture and the four forwards (target, effective, structured, dense).
# --------------------------------------------------------------------------------------


def _conv(x, kernel, padding: int):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(padding, padding)] * 2,
                                      dimension_numbers=_DIMS)


def _run(layers, shapes, x):
  """The LeNet5-like skeleton: ``layers[i](x, padding)`` is target layer ``i`` (padding None
  for dense layers); conv layers are followed by ReLU and max-pool, the last one by the NHWC
  flatten; ReLU between dense layers. ``x``: ``(N, H, W, C)``, or ``(N, d_0)`` without convs."""
  stages = models.conv_architecture(shapes)
  if not stages:
    x = x.reshape(x.shape[0], -1)
  for i, (layer, shape) in enumerate(zip(layers, shapes)):
    if i < len(stages):
      x = models.max_pool(jax.nn.relu(layer(x, stages[i].padding)), stages[i].pool)
      if i + 1 == len(stages):
        x = x.reshape(x.shape[0], -1)
    else:
      x = layer(x, None)
      if i + 1 < len(shapes):
        x = jax.nn.relu(x)
  return x


def _apply(x, kernel, padding):
  """A conv (``padding`` int) or a matmul (``padding`` None)."""
  return x @ kernel if padding is None else _conv(x, kernel, padding)


@jax.jit
def target_forward(kernels: Sequence[jax.Array], x: jax.Array) -> jax.Array:
  """The target CNN (``models.LeNet5`` for LeNet5's kernels). ``x``: ``(N, H, W, C)``."""
  layers = [functools.partial(lambda z, p, k: _apply(z, k, p), k=k) for k in kernels]
  return _run(layers, [k.shape for k in kernels], x)


def effective_forward(effective, x: jax.Array) -> jax.Array:
  """The pruned network from its compact form: per layer ``(2, *kernel_shape)`` sums of kept
  products (``u > 0``, ``u < 0`` copies), ``z -> f(relu(z), P) - f(relu(-z), N)``."""
  layers = [functools.partial(
      lambda z, p, e: _apply(jax.nn.relu(z), e[0], p) - _apply(jax.nn.relu(-z), e[1], p), e=e)
      for e in effective]
  return _run(layers, [e.shape[1:] for e in effective], x)


def _second_kernel(v, shape):
  """``v (c_out, s c_in, n)`` as the second layer's kernel: ``(kh, kw, c_in n, c_out)`` for
  conv shapes, ``(d_in n, d_out)`` for dense ones (channel ``(j, k)`` at ``j n + k``)."""
  c_out, _, n = v.shape
  k = jnp.moveaxis(v.reshape(c_out, -1, shape[-2], n), 0, -1)  # (s, c_in, n, c_out)
  return k.reshape(tuple(shape[:-2]) + (shape[-2] * n, c_out))


@jax.jit
def structured_forward(obj: RandomCNN, masks: dict, x: jax.Array) -> jax.Array:
  """The pruned random CNN from its kept entries, with real convolutions: per layer
  ``h = relu(z[..., j, None] * u'[j, k])`` (the block-diagonal 1x1 conv, channels ``j n + k``)
  then the ``kh x kw`` conv (or matmul) of ``h`` with the masked ``v``."""
  layers = []
  for u, v, mu, mv, shape in zip(obj.params["u"], obj.params["v"], masks["u"], masks["v"],
                                 obj.kernel_shapes):
    def layer(z, p, u=u * mu, v=v * mv, shape=shape):
      h = jax.nn.relu(z[..., None] * u)
      return _apply(h.reshape(h.shape[:-2] + (-1,)), _second_kernel(v, shape), p)
    layers.append(layer)
  return _run(layers, obj.kernel_shapes, x)


def _channel_network(obj: RandomCNN, params: dict) -> rn.RandomNetwork:
  """The layers as ``random_net``'s MLP pairs: the second kernel of a conv layer is a dense
  map from the ``c_in n`` channels to ``s c_out`` outputs (one per kernel position and output
  channel), so ``random_net.dense_params`` and ``masks.dense_masks`` build both kernels."""
  vs = [jnp.swapaxes(v.reshape(v.shape[0], -1, s[-2], v.shape[-1]), 0, 1).reshape(
      -1, s[-2], v.shape[-1]) for v, s in zip(params["v"], obj.kernel_shapes)]
  return rn.RandomNetwork({"u": params["u"], "v": vs}, obj.filler_key, (),
                          obj.distribution)


@jax.jit
def dense_params(obj: RandomCNN, masks: dict) -> list[jax.Array]:
  """The ``2l`` masked dense kernels: per conv layer the full 1x1 conv ``(1, 1, c_in,
  c_in n)`` (entries off the block diagonal drawn independently, always pruned) and the
  ``(kh, kw, c_in n, c_out)`` conv; per dense layer ``random_net.dense_params``' pair."""
  chan = _channel_network(obj, obj.params)
  flat = masks_lib.apply_masks(rn.dense_params(chan), masks_lib.dense_masks(
      chan, {"u": masks["u"], "v": _channel_network(obj, masks).params["v"]}))
  out = []
  for i, shape in enumerate(obj.kernel_shapes):
    m1, m2 = flat[2 * i], flat[2 * i + 1]
    if len(shape) == 4:
      m1 = m1.reshape((1, 1) + m1.shape)
      m2 = jnp.swapaxes(m2.reshape(m2.shape[0], -1, shape[-1]), 0, 1).reshape(
          tuple(shape[:2]) + (m2.shape[0], shape[-1]))
    out.append(m1)
    out.append(m2)
  return out


@jax.jit
def dense_forward(dense: Sequence[jax.Array], x: jax.Array) -> jax.Array:
  """Runs ``dense_params``' kernels as the plain CNN they are: per target layer the first
  kernel (1x1 conv or matmul), ReLU, the second, then the target's stages."""
  shapes = [tuple(m2.shape[:-2]) + (m1.shape[-2], m2.shape[-1])
            for m1, m2 in zip(dense[::2], dense[1::2])]
  layers = [functools.partial(
      lambda z, p, a, b: _apply(jax.nn.relu(_apply(z, a, None if p is None else 0)), b, p),
      a=a, b=b) for a, b in zip(dense[::2], dense[1::2])]
  return _run(layers, shapes, x)


# --------------------------------------------------------------------------------------
# Sampling and the SubsetSum view.
# --------------------------------------------------------------------------------------


def sample(key, target, width, *, distribution: str = "uniform") -> RandomCNN:
  """Per layer ``u (c_in, n)`` and ``v (c_out, s c_in, n)``, copy ``k`` from
  ``fold_in(., k)`` (nested in ``width``: one int or one per layer); for an MLP target the
  draw of ``network.sample``."""
  if distribution not in rn.DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {rn.DISTRIBUTIONS}, got {distribution!r}")
  shapes = tuple(tuple(int(d) for d in k.shape) for k in check_kernels(target))
  _, copies = rn._check_sizes((1,) * (len(shapes) + 1), width)
  return _sample(key, shapes, copies, distribution)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample(key, shapes, copies, distribution):
  key_u, key_v, filler_key = jax.random.split(key, 3)  # random_net's order
  us, vs = [], []
  for i, (shape, n) in enumerate(zip(shapes, copies)):
    c_in, c_out = shape[-2:]
    us.append(rn._per_copy(jax.random.fold_in(key_u, i), n, (c_in,), distribution))
    vs.append(rn._per_copy(jax.random.fold_in(key_v, i), n, (c_out, _spatial(shape) * c_in),
                           distribution))
  return RandomCNN({"u": us, "v": vs}, filler_key, shapes, distribution)


def truncate_copies(obj: RandomCNN, copies) -> RandomCNN:
  """The first ``copies`` copies (one int or one per layer): ``sample`` at that width."""
  _, copies = rn._check_sizes((1,) * (len(obj.kernel_shapes) + 1), copies)
  if any(c > have for c, have in zip(copies, obj.copies)):
    raise ValueError(f"cannot truncate copies {obj.copies} to larger {copies}")
  return obj.replace(params={name: [a[..., :c] for a, c in zip(obj.params[name], copies)]
                             for name in ("u", "v")})


def matrix_network(obj: RandomCNN) -> rn.RandomNetwork:
  """The SubsetSum view: per layer ``u`` repeated over the ``s`` kernel positions
  ``(s c_in, n)`` and ``v (c_out, s c_in, n)``, a one-layer ``network`` instance per layer
  for the kernel ``as_matrix(K)`` (layers do not chain: ``layer_sizes`` is empty)."""
  us = [jnp.tile(u, (_spatial(s), 1)) for u, s in zip(obj.params["u"], obj.kernel_shapes)]
  return rn.RandomNetwork({"u": us, "v": obj.params["v"]}, obj.filler_key, (),
                          obj.distribution)


def check(obj, target) -> list[jax.Array]:
  if not isinstance(obj, RandomCNN):
    raise ValueError(f"method 'conv' prunes a RandomCNN (conv.sample), got "
                     f"{type(obj).__name__}")
  kernels = check_kernels(target)
  shapes = tuple(tuple(k.shape) for k in kernels)
  if shapes != tuple(obj.kernel_shapes):
    raise ValueError(f"target kernel shapes {shapes} do not match the random CNN's "
                     f"{tuple(obj.kernel_shapes)}")
  for i, (u, v, s) in enumerate(zip(obj.params["u"], obj.params["v"], shapes)):
    n = u.shape[-1]
    if u.shape != (s[-2], n) or v.shape != (s[-1], _spatial(s) * s[-2], n) or n < 1:
      raise ValueError(f"random CNN layer {i}: u {u.shape}, v {v.shape} do not fit kernel {s}")
  _checks.check_finite([(f"{name}[{i}]", a) for name in ("u", "v")
                        for i, a in enumerate(obj.params[name])], "random CNN params")
  return kernels


def widths(obj: RandomCNN) -> tuple[int, ...]:
  return obj.copies


instance_size = network.instance_size


def instances(obj: RandomCNN, kernels, width, cap, *, sizes) -> base.Instances:
  """``network.instances`` of ``matrix_network(obj)`` for the matrix views of the kernels."""
  return network.instances(matrix_network(obj), [targets_lib.as_matrix(k) for k in kernels],
                           width, cap, sizes=sizes)


def assemble(kernels, inst: base.Instances, solutions) -> base.Assembled:
  """``network.assemble`` on the matrix view, reshaped: masks ``{"u": [(c_in, n)], "v":
  [(c_out, s c_in, n)]}`` (a channel's 1x1 entry is kept when any kernel position uses it),
  errors kernel-shaped, ``effective`` ``(2, *kernel_shape)``."""
  out = network.assemble(kernels, inst, solutions)
  masks_u, errors, effective = [], [], []
  kept = jnp.int32(0)
  for k, mu, mv, err, eff in zip(kernels, out.masks["u"], out.masks["v"], out.weight_errors,
                                 out.effective):
    mu = jnp.any(mu.reshape(-1, k.shape[-2], mu.shape[-1]) != 0, axis=0).astype(jnp.uint8)
    masks_u.append(mu)
    errors.append(err.reshape(k.shape))
    effective.append(eff.reshape((2,) + k.shape))
    kept = kept + jnp.sum(mu, dtype=jnp.int32) + jnp.sum(mv, dtype=jnp.int32)
  return base.Assembled({"u": masks_u, "v": out.masks["v"]}, errors, effective, kept)


def num_params(kernel_shapes, width) -> int:
  """Every entry of the dense random CNN: ``sum_i n_i c_in (c_in + s c_out)``."""
  return sum(int(base.per_layer(width, i)) * s[-2] * (s[-2] + _spatial(s) * s[-1])
             for i, s in enumerate(kernel_shapes))


def width_factor(kernel_shapes, width) -> float:
  """Widest random layer / widest target layer, in channels (units for dense layers)."""
  widest = max(max(s[-2], s[-1]) for s in kernel_shapes)
  return max(int(base.per_layer(width, i)) * s[-2]
             for i, s in enumerate(kernel_shapes)) / widest


def depth(num_layers: int) -> int:
  return 2 * num_layers


CONV = base.register(base.from_module(sys.modules[__name__], "conv", stream=5,
                                      prunes_network=True))
