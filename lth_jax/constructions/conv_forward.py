"""The forwards of ``constructions.conv``'s random CNN: the target CNN, the pruned network's
compact (effective), structured and literal dense forms, and the dense random CNN itself.

The architecture is LeNet5's (``models.conv_architecture``): conv layers followed by ReLU and
max-pool, the last one by the NHWC flatten, then dense layers with ReLU between them. Each
target layer is a pair of random layers (``conv``'s docstring): a block-diagonal 1x1 conv
``c_in -> c_in n`` (a matmul for dense layers), ReLU, a ``kh x kw`` conv ``c_in n -> c_out``.

With bias units (``RandomCNN.bias`` set), the first layer of each pair also has ``n`` bias
channels (random bias ``beta``, incoming weights pruned: the constant ``relu(beta)`` at every
pixel) and the second layer reads them through ONE kernel tap (``bias_taps``: a tap inside
the image for every output pixel, so the zero padding never cuts the constant); every other
tap of a bias channel, every copy channel's bias and every output bias is drawn and pruned.
The structured forward runs the bias channels through the real convolution (padding
included), so its agreement with the effective forward (which adds the bias directly)
checks the tap choice.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from lth_jax import masks as masks_lib
from lth_jax import models
from lth_jax import random_net as rn
from lth_jax import targets as targets_lib

_DIMS = ("NHWC", "HWIO", "NHWC")


def spatial(shape) -> int:
  """Kernel taps ``s = kh kw`` (1 for a dense kernel)."""
  return math.prod(shape[:-2])


def bias_taps(shapes) -> tuple[int, ...]:
  """Per layer the kernel tap ``a kw + b`` that reads the bias channels: ``(p, p)`` for a
  conv with padding ``p`` (the centre of a 'same' conv, the corner of a valid one), ``0``
  for dense layers. Output pixel ``y`` reads input row ``y - p + a``, inside the image for
  every ``y`` iff ``p <= a <= kh - 1 - p``.

  Raises:
    ValueError: a conv whose padding exceeds ``(k - 1) / 2`` (no tap stays inside).
  """
  stages, taps = models.conv_architecture(shapes), []
  for i, shape in enumerate(shapes):
    if i >= len(stages):
      taps.append(0)
      continue
    p, (kh, kw) = stages[i].padding, shape[:2]
    if 2 * p > min(kh, kw) - 1:
      raise ValueError(f"conv layer {i}: padding {p} leaves no {kh}x{kw} kernel tap inside "
                       "the image for every output pixel: bias channels need one")
    taps.append(p * kw + p)
  return tuple(taps)


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


def _apply(x, kernel, padding, bias=None):
  """A conv (``padding`` int) or a matmul (``padding`` None), plus ``bias`` if given."""
  y = x @ kernel if padding is None else _conv(x, kernel, padding)
  return y if bias is None else y + bias


@jax.jit
def target_forward(target: Sequence, x: jax.Array) -> jax.Array:
  """The target CNN (``models.LeNet5(use_bias=...)`` for LeNet5's layers): layers are
  kernels or ``{"kernel", "bias"}``. ``x``: ``(N, H, W, C)``."""
  ks, bs = targets_lib.split_layers(target)
  layers = [functools.partial(lambda z, p, k, b: _apply(z, k, p, b), k=k, b=b)
            for k, b in zip(ks, bs)]
  return _run(layers, [k.shape for k in ks], x)


def effective_forward(effective, x: jax.Array) -> jax.Array:
  """The pruned network from its compact form: per layer ``(2, *kernel_shape)`` sums of kept
  products (``u > 0``, ``u < 0`` copies), or ``{"kernel": that, "bias": (c_out,)}`` with
  bias units: ``z -> f(relu(z), P) - f(relu(-z), N) (+ b)``."""
  ks, bs = targets_lib.split_layers(effective)

  def pair(z, p, e, b):
    y = _apply(jax.nn.relu(z), e[0], p) - _apply(jax.nn.relu(-z), e[1], p)
    return y if b is None else y + b
  layers = [functools.partial(pair, e=e, b=b) for e, b in zip(ks, bs)]
  return _run(layers, [e.shape[1:] for e in ks], x)


def _second_kernel(v, shape):
  """``v (c_out, s c_in, n)`` as the second layer's kernel: ``(kh, kw, c_in n, c_out)`` for
  conv shapes, ``(d_in n, d_out)`` for dense ones (channel ``(j, k)`` at ``j n + k``)."""
  c_out, _, n = v.shape
  k = jnp.moveaxis(v.reshape(c_out, -1, shape[-2], n), 0, -1)  # (s, c_in, n, c_out)
  return k.reshape(tuple(shape[:-2]) + (shape[-2] * n, c_out))


def _bias_kernel(w, w_off, tap: int, shape):
  """The bias channels' second-layer kernel ``(kh, kw, n, c_out)`` (``(n, c_out)`` dense):
  ``w (c_out, n)`` at ``tap``, ``w_off (c_out, s - 1, n)`` at the other taps (None: 0)."""
  if w_off is None:
    w_off = jnp.zeros((w.shape[0], spatial(shape) - 1, w.shape[1]), w.dtype)
  full = jnp.concatenate([w_off[:, :tap], w[:, None], w_off[:, tap:]], axis=1)
  return jnp.transpose(full, (1, 2, 0)).reshape(tuple(shape[:-2]) + w.shape[::-1])


@jax.jit
def structured_forward(obj, masks: dict, x: jax.Array) -> jax.Array:
  """The pruned random CNN from its kept entries, with real convolutions: per layer
  ``h = relu(z[..., j, None] * u'[j, k])`` (the block-diagonal 1x1 conv, channels ``j n + k``)
  then the ``kh x kw`` conv (or matmul) of ``h`` with the masked ``v``; with bias units,
  ``h`` also carries the ``n`` constant channels ``relu(beta')``, read at the bias tap."""
  shapes, layers = obj.kernel_shapes, []
  taps = bias_taps(shapes) if obj.bias is not None else (None,) * len(shapes)
  for i, (shape, tap) in enumerate(zip(shapes, taps)):
    u, v = obj.params["u"][i] * masks["u"][i], obj.params["v"][i] * masks["v"][i]
    const = kernel = None
    if obj.bias is not None:
      const = jax.nn.relu(obj.bias["beta"][i] * masks["beta"][i])
      kernel = _bias_kernel(obj.bias["w"][i] * masks["w"][i], None, tap, shape)

    def layer(z, p, u=u, v=v, shape=shape, const=const, kernel=kernel):
      h = jax.nn.relu(z[..., None] * u)
      h, k2 = h.reshape(h.shape[:-2] + (-1,)), _second_kernel(v, shape)
      if const is not None:
        h = jnp.concatenate([h, jnp.broadcast_to(const, h.shape[:-1] + const.shape)], -1)
        k2 = jnp.concatenate([k2, kernel], axis=-2)
      return _apply(h, k2, p)
    layers.append(layer)
  return _run(layers, shapes, x)


def _channel_network(obj, params: dict) -> rn.RandomNetwork:
  """The layers as ``random_net``'s MLP pairs: the second kernel of a conv layer is a dense
  map from the ``c_in n`` channels to ``s c_out`` outputs (one per kernel position and output
  channel), so ``random_net.dense_params`` and ``masks.dense_masks`` build both kernels."""
  vs = [jnp.swapaxes(v.reshape(v.shape[0], -1, s[-2], v.shape[-1]), 0, 1).reshape(
      -1, s[-2], v.shape[-1]) for v, s in zip(params["v"], obj.kernel_shapes)]
  return rn.RandomNetwork({"u": params["u"], "v": vs}, obj.filler_key, (),
                          obj.distribution)


def _as_conv_pairs(flat, shapes) -> list:
  """``random_net``'s ``2l`` MLP kernels (``_channel_network``) in conv shapes: per conv
  layer ``(1, 1, c_in, c_in n)`` and ``(kh, kw, c_in n, c_out)``."""
  out = []
  for i, shape in enumerate(shapes):
    m1, m2 = flat[2 * i], flat[2 * i + 1]
    if len(shape) == 4:
      m1 = m1.reshape((1, 1) + m1.shape)
      m2 = jnp.swapaxes(m2.reshape(m2.shape[0], -1, shape[-1]), 0, 1).reshape(
          tuple(shape[:2]) + (m2.shape[0], shape[-1]))
    out += [m1, m2]
  return out


def _with_bias_units(pairs, parts: dict, shapes) -> list[dict]:
  """``pairs`` plus the bias units, as ``{"kernel", "bias"}`` layers: the first kernel gains
  ``w_in`` as ``n`` more output channels (biases ``copy_bias`` then ``beta``), the second the
  bias channels' kernel (``_bias_kernel``), its bias ``out_bias``. ``parts``: per layer
  ``{"w_in", "copy_bias", "beta", "w", "w_off", "out_bias"}`` (values or masks)."""
  out = []
  for i, (shape, tap) in enumerate(zip(shapes, bias_taps(shapes))):
    p = {name: parts[name][i] for name in parts}
    m1, m2 = pairs[2 * i], pairs[2 * i + 1]
    out.append({"kernel": jnp.concatenate([m1, p["w_in"].reshape(m1.shape[:-1] + (-1,))],
                                          axis=-1),
                "bias": jnp.concatenate([p["copy_bias"].reshape(-1), p["beta"]])})
    out.append({"kernel": jnp.concatenate([m2, _bias_kernel(p["w"], p["w_off"], tap, shape)],
                                          axis=-2), "bias": p["out_bias"]})
  return out


@jax.jit
def dense_random(obj) -> list:
  """The whole dense random CNN, ``2l`` layers: per conv layer the full 1x1 conv ``(1, 1,
  c_in, c_in n)`` (entries off the block diagonal drawn from the filler key) and the
  ``(kh, kw, c_in n, c_out)`` conv, per dense layer ``random_net.dense_params``' pair; with
  bias units ``{"kernel", "bias"}`` layers with ``n`` more channels (``_with_bias_units``)."""
  pairs = _as_conv_pairs(rn.dense_params(_channel_network(obj, obj.params)), obj.kernel_shapes)
  if obj.bias is None:
    return pairs
  return _with_bias_units(pairs, obj.bias, obj.kernel_shapes)


def dense_masks(obj, masks: dict) -> list:
  """Masks of ``dense_random``: the block-diagonal 1x1 entries and the kept ``v``; with
  bias units the kept ``beta`` and ``w`` (at the bias tap); every other bias, bias-channel
  tap and bias unit incoming weight pruned."""
  chan = _channel_network(obj, obj.params)
  pairs = _as_conv_pairs(masks_lib.dense_masks(
      chan, {"u": masks["u"], "v": _channel_network(obj, masks).params["v"]}),
      obj.kernel_shapes)
  if obj.bias is None:
    return pairs
  zeros = {name: [jnp.zeros(a.shape, jnp.uint8) for a in obj.bias[name]]
           for name in ("w_in", "copy_bias", "w_off", "out_bias")}
  return _with_bias_units(pairs, dict(zeros, beta=masks["beta"], w=masks["w"]),
                          obj.kernel_shapes)


@jax.jit
def dense_params(obj, masks: dict) -> list:
  """The ``2l`` masked dense layers: literally the pruned random CNN (``dense_forward``
  runs it); kernels, or ``{"kernel", "bias"}`` layers with bias units."""
  return masks_lib.apply_masks(dense_random(obj), dense_masks(obj, masks))


@jax.jit
def dense_forward(dense: Sequence, x: jax.Array) -> jax.Array:
  """Runs ``dense_params``' layers as the plain CNN they are: per target layer the first
  kernel (1x1 conv or matmul, + bias), ReLU, the second (+ bias), then the target's stages."""
  ks, bs = targets_lib.split_layers(dense)
  shapes = [tuple(m2.shape[:-2]) + (m1.shape[-2], m2.shape[-1])
            for m1, m2 in zip(ks[::2], ks[1::2])]
  layers = [functools.partial(
      lambda z, p, a, ba, b, bb: _apply(jax.nn.relu(_apply(z, a, None if p is None else 0, ba)),
                                        b, p, bb),
      a=a, ba=ba, b=b, bb=bb) for a, ba, b, bb in zip(ks[::2], bs[::2], ks[1::2], bs[1::2])]
  return _run(layers, shapes, x)
