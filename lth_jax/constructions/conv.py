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

Biases (the target's layers ``{"kernel", "bias"}``; ``attach``): per layer ``n`` bias
channels in the first (1x1) layer (``constructions.bias.sample_bias_units``: a random bias
``beta[k]``, the incoming weights pruned, so the channel is the constant ``relu(beta[k])`` at
every pixel) whose second-layer weights ``w[o, k]`` are kept at ONE kernel tap that reads
inside the image for every output pixel (``conv_forward.bias_taps``: the centre tap of a
padded conv, the corner of a valid one; the zero padding would cut the constant elsewhere).
Each target bias ``b[o]`` is one SubsetSum problem over ``w[o, k] relu(beta[k])``
(``bias.layer_bias_instances`` appended to ``instances``, ``bias.assemble_biases`` in
``assemble``); ``effective`` is then ``{"kernel": (2, *kernel_shape), "bias": (c_out,)}``
per layer. The dense random CNN has a random bias on every channel and unit and random
bias-channel weights at every tap; the ticket prunes all but the kept ``beta`` and ``w``.
Without biases (bare-kernel targets) nothing of this exists: the draw, ticket and forwards
are those of the bias-free construction. The forwards are in ``conv_forward``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from lth_jax import _checks
from lth_jax import random_net as rn
from lth_jax import targets as targets_lib
import lth_jax.constructions.base as base
import lth_jax.constructions.bias as bias_lib
import lth_jax.constructions.network as network
import lth_jax.constructions.conv_forward as fwd

# The forwards (``conv_forward``), part of this construction's interface.
target_forward = fwd.target_forward
effective_forward = fwd.effective_forward
structured_forward = fwd.structured_forward
dense_random = fwd.dense_random
dense_params = fwd.dense_params
dense_forward = fwd.dense_forward
spatial = fwd.spatial

# fold_in of the sample key that draws the bias units (bias.sample's), and of a layer's key
# that draws the bias channels' weights at the taps other than the bias tap.
_BIAS_FOLD = 3
_OFF_TAPS_FOLD = 5


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
    bias: None (no bias units), or per layer (``attach``) ``{"beta": [(n,)], "w": [(c_out,
      n)], "copy_bias": [(c_in, n)], "out_bias": [(c_out,)], "w_in": [(c_in, n)], "w_off":
      [(c_out, s - 1, n)]}``: ``bias.sample_bias_units``' draw plus the bias channels'
      weights at the taps other than the bias tap (in tap order).
  """

  params: dict
  filler_key: jax.Array
  kernel_shapes: tuple = struct.field(pytree_node=False)
  distribution: str = struct.field(pytree_node=False, default="uniform")
  bias: dict | None = None

  @property
  def copies(self) -> tuple[int, ...]:
    return tuple(int(u.shape[-1]) for u in self.params["u"])


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


def check_layers(target) -> tuple[list[jax.Array], list]:
  """``(check_kernels(kernels), biases)`` of a target whose layers are kernels or
  ``{"kernel", "bias"}`` (``targets.split_layers``): biases float32 ``(c_out,)`` and finite,
  or None for bare-kernel layers. ValueError naming the layer otherwise."""
  raw_kernels, raw_biases = targets_lib.split_layers(target)
  kernels = check_kernels(raw_kernels)
  biases = [None if b is None else jnp.asarray(b, jnp.float32) for b in raw_biases]
  for i, (k, b) in enumerate(zip(kernels, biases)):
    if b is not None and b.shape != (k.shape[-1],):
      raise ValueError(f"layer {i}: bias shape {b.shape}, expected ({k.shape[-1]},)")
  _checks.check_finite([(f"bias {i}", b) for i, b in enumerate(biases) if b is not None],
                       "target")
  return kernels, biases


class _BiasedAux(NamedTuple):
  """``instances``' aux with bias units: ``network.instances``' and the bias instances'."""

  net: Any
  bias: list


# --------------------------------------------------------------------------------------
# Sampling and the SubsetSum view.
# --------------------------------------------------------------------------------------


def sample(key, target, width, *, distribution: str = "uniform") -> RandomCNN:
  """Per layer ``u (c_in, n)`` and ``v (c_out, s c_in, n)``, copy ``k`` from
  ``fold_in(., k)`` (nested in ``width``: one int or one per layer); for an MLP target the
  draw of ``network.sample``. A target with biases also gets bias units: ``attach`` from
  ``fold_in(key, 3)`` (for an MLP target the draw of ``bias.sample``)."""
  if distribution not in rn.DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {rn.DISTRIBUTIONS}, got {distribution!r}")
  kernels, biases = check_layers(target)
  shapes = tuple(tuple(int(d) for d in k.shape) for k in kernels)
  _, copies = rn._check_sizes((1,) * (len(shapes) + 1), width)
  obj = _sample(key, shapes, copies, distribution)
  if any(b is not None for b in biases):
    obj = attach(obj, jax.random.fold_in(key, _BIAS_FOLD))
  return obj


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample(key, shapes, copies, distribution):
  key_u, key_v, filler_key = jax.random.split(key, 3)  # random_net's order
  us, vs = [], []
  for i, (shape, n) in enumerate(zip(shapes, copies)):
    c_in, c_out = shape[-2:]
    us.append(rn._per_copy(jax.random.fold_in(key_u, i), n, (c_in,), distribution))
    vs.append(rn._per_copy(jax.random.fold_in(key_v, i), n, (c_out, spatial(shape) * c_in),
                           distribution))
  return RandomCNN({"u": us, "v": vs}, filler_key, shapes, distribution)


def attach(obj: RandomCNN, key) -> RandomCNN:
  """``obj`` with bias units: layer ``i`` from ``k = fold_in(key, i)``,
  ``bias.sample_bias_units(k, c_in, c_out, n)`` and the other taps' weights ``w_off`` from
  ``fold_in(k, 5)``; unit ``j`` from ``fold_in(., j)`` (nested). ValueError for a conv whose
  padding leaves no in-image tap (``conv_forward.bias_taps``)."""
  fwd.bias_taps(obj.kernel_shapes)
  return _attach(obj, key)


@jax.jit
def _attach(obj, key):
  layers = []
  for i, (shape, n) in enumerate(zip(obj.kernel_shapes, obj.copies)):
    k = jax.random.fold_in(key, i)
    units = bias_lib.sample_bias_units(k, shape[-2], shape[-1], n, obj.distribution)
    units["w_off"] = rn._per_copy(jax.random.fold_in(k, _OFF_TAPS_FOLD), n,
                                  (shape[-1], spatial(shape) - 1), obj.distribution)
    layers.append(units)
  return obj.replace(bias={name: [p[name] for p in layers] for name in layers[0]})


def truncate_copies(obj: RandomCNN, copies) -> RandomCNN:
  """The first ``copies`` copies (one int or one per layer): ``sample`` at that width."""
  _, copies = rn._check_sizes((1,) * (len(obj.kernel_shapes) + 1), copies)
  if any(c > have for c, have in zip(copies, obj.copies)):
    raise ValueError(f"cannot truncate copies {obj.copies} to larger {copies}")
  bias = None if obj.bias is None else {
      name: [a if name == "out_bias" else a[..., :c] for a, c in zip(obj.bias[name], copies)]
      for name in obj.bias}
  return obj.replace(params={name: [a[..., :c] for a, c in zip(obj.params[name], copies)]
                             for name in ("u", "v")}, bias=bias)


def matrix_network(obj: RandomCNN) -> rn.RandomNetwork:
  """The SubsetSum view: per layer ``u`` repeated over the ``s`` kernel positions
  ``(s c_in, n)`` and ``v (c_out, s c_in, n)``, a one-layer ``network`` instance per layer
  for the kernel ``as_matrix(K)`` (layers do not chain: ``layer_sizes`` is empty)."""
  us = [jnp.tile(u, (spatial(s), 1)) for u, s in zip(obj.params["u"], obj.kernel_shapes)]
  return rn.RandomNetwork({"u": us, "v": obj.params["v"]}, obj.filler_key, (),
                          obj.distribution)


def check(obj, target) -> list:
  """The target's layers (float32; bare kernels stay bare) after checking ``obj`` fits."""
  if not isinstance(obj, RandomCNN):
    raise ValueError(f"method 'conv' prunes a RandomCNN (conv.sample), got "
                     f"{type(obj).__name__}")
  kernels, biases = check_layers(target)
  if obj.bias is None and any(b is not None for b in biases):
    raise ValueError("the target has biases but the random CNN has no bias units: sample it "
                     "from the biased target (conv.sample) or add them (conv.attach)")
  shapes = tuple(tuple(k.shape) for k in kernels)
  if shapes != tuple(obj.kernel_shapes):
    raise ValueError(f"target kernel shapes {shapes} do not match the random CNN's "
                     f"{tuple(obj.kernel_shapes)}")
  for i, (u, v, s) in enumerate(zip(obj.params["u"], obj.params["v"], shapes)):
    n = u.shape[-1]
    if u.shape != (s[-2], n) or v.shape != (s[-1], spatial(s) * s[-2], n) or n < 1:
      raise ValueError(f"random CNN layer {i}: u {u.shape}, v {v.shape} do not fit kernel {s}")
  _checks.check_finite([(f"{name}[{i}]", a) for name in ("u", "v")
                        for i, a in enumerate(obj.params[name])], "random CNN params")
  if obj.bias is not None:
    _check_bias_units(obj)
  return targets_lib.join_layers(kernels, biases)


def _check_bias_units(obj: RandomCNN) -> None:
  fwd.bias_taps(obj.kernel_shapes)
  for i, (s, n) in enumerate(zip(obj.kernel_shapes, obj.copies)):
    want = dict(beta=(n,), w=(s[-1], n), copy_bias=(s[-2], n), out_bias=(s[-1],),
                w_in=(s[-2], n), w_off=(s[-1], spatial(s) - 1, n))
    got = {name: tuple(obj.bias[name][i].shape) for name in want}
    if got != want:
      raise ValueError(f"bias units of layer {i} have shapes {got}, expected {want}")
  _checks.check_finite([(f"{name}[{i}]", a) for name in obj.bias
                        for i, a in enumerate(obj.bias[name])], "random CNN biases")


def widths(obj: RandomCNN) -> tuple[int, ...]:
  return obj.copies


instance_size = network.instance_size


def instances(obj: RandomCNN, layers, width, cap, *, sizes) -> base.Instances:
  """``network.instances`` of ``matrix_network(obj)`` for the matrix views of the kernels;
  with bias units then ``bias.layer_bias_instances`` (one problem per output channel; zero
  targets for bare-kernel layers), ``aux`` a ``_BiasedAux``."""
  kernels = targets_lib.split_layers(layers)[0]
  inst = network.instances(matrix_network(obj), [targets_lib.as_matrix(k) for k in kernels],
                           width, cap, sizes=sizes)
  if obj.bias is None:
    return inst
  problems, aux = bias_lib.layer_bias_instances(obj.bias["beta"], obj.bias["w"],
                                                bias_lib.layer_biases(layers), width, cap,
                                                sizes)
  return base.Instances(inst.problems + problems, _BiasedAux(inst.aux, aux))


def assemble(layers, inst: base.Instances, solutions) -> base.Assembled:
  """``network.assemble`` on the matrix view, reshaped: masks ``{"u": [(c_in, n)], "v":
  [(c_out, s c_in, n)]}`` (a channel's 1x1 entry is kept when any kernel position uses it),
  errors kernel-shaped, ``effective`` ``(2, *kernel_shape)``; with bias units also masks
  ``{"beta": [(n,)], "w": [(c_out, n)]}``, ``bias_errors`` and effective ``{"kernel",
  "bias"}`` layers (``bias.assemble_biases``)."""
  kernels = targets_lib.split_layers(layers)[0]
  if isinstance(inst.aux, _BiasedAux):
    num = len(inst.problems) - len(inst.aux.bias)
    out = _assemble_weights(kernels, base.Instances(inst.problems[:num], inst.aux.net),
                            solutions[:num])
    b_masks, bias_errors, eff_b, kept = bias_lib.assemble_biases(inst.aux.bias,
                                                                  solutions[num:])
    return base.Assembled(dict(out.masks, **b_masks), out.weight_errors,
                          targets_lib.join_layers(out.effective, eff_b), out.kept + kept,
                          bias_errors)
  return _assemble_weights(kernels, inst, solutions)


def _assemble_weights(kernels, inst: base.Instances, solutions) -> base.Assembled:
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


def num_params(kernel_shapes, width, *, bias_units: bool = False) -> int:
  """Every entry of the dense random CNN: ``sum_i n_i c_in (c_in + s c_out)``; with bias
  units also ``n_i (c_in + 1 + s c_out)`` (the bias channels' weights and biases) and the
  ``n_i c_in + c_out`` biases of the copy channels and outputs."""
  total = 0
  for i, s in enumerate(kernel_shapes):
    n, c_in, c_out, taps = int(base.per_layer(width, i)), s[-2], s[-1], spatial(s)
    total += n * c_in * (c_in + taps * c_out)
    if bias_units:
      total += n * (c_in + 1 + taps * c_out) + n * c_in + c_out
  return total


def num_params_of(obj: RandomCNN) -> int:
  """``num_params`` of this draw (with its bias units, if any)."""
  return num_params(obj.kernel_shapes, obj.copies, bias_units=obj.bias is not None)


def width_factor(kernel_shapes, width) -> float:
  """Widest random layer / widest target layer, in channels (units for dense layers)."""
  widest = max(max(s[-2], s[-1]) for s in kernel_shapes)
  return max(int(base.per_layer(width, i)) * s[-2]
             for i, s in enumerate(kernel_shapes)) / widest


def depth(num_layers: int) -> int:
  return 2 * num_layers


CONV = base.register(base.from_module(sys.modules[__name__], "conv", stream=5,
                                      prunes_network=True))
