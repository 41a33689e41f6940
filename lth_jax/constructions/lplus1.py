"""``"lplus1"``: Burkholz 2022's depth ``L + 1`` construction for a bias-free ReLU target.

The random network (``LPlus1Network``) for a target with sizes ``d_0 .. d_L`` and copies
``c_0 .. c_{L-1}`` (``c_i``: copies of every input of target layer ``i``) has ``L + 1``
layers:

* a univariate copy layer: unit ``(j, k)`` (``k < c_0``) of input ``j`` keeps only its
  weight ``u[j, k]`` from ``x_j`` (the rest of the dense ``(d_0, c_0 d_0)`` kernel is
  filler, always pruned, as in ``random_net.dense_params``);
* one random layer per target layer ``i``, ``V_i`` of shape ``(d_{i+1}, n_out, d_i, c_i)``:
  every target neuron ``o`` of layer ``i + 1`` has ``n_out = c_{i+1}`` copies ``p`` (one
  copy, ``n_out = 1``, for the output layer), each reading every copy ``(j, k)`` below it.

Each copy of a hidden target neuron approximates ``relu(z_o)`` at scale 1, so the copies are
interchangeable inputs of the next layer: for target layers ``i >= 1`` every weight
``W[o, j]`` and output copy ``p`` is ONE SubsetSum instance over the plain samples
``V_i[o, p, j, k]`` of the ``c_i`` input copies (no products). Target layer 0 reads the copy
layer: ``relu(u x) = u relu(x)`` (``u > 0``) or ``|u| relu(-x)`` (``u < 0``), so, as in
``"network"``, each weight and output copy is TWO instances over the products ``v u``, one
per sign half (``network.layer_instances``). With ``L = 1`` this is ``"network"``'s depth-2
network. Instance counts: ``2 d_0 d_1 n_out(0) + sum_{i>=1} d_i d_{i+1} n_out(i)``, i.e.
``c`` times ``"network"``'s for hidden layers. Random parameters (dense, fillers included):
``d_0 * c_0 d_0 + sum_i (c_i d_i)(n_out(i) d_{i+1})`` — quadratic in the copies where
``"network"`` is linear, for depth ``L + 1`` instead of ``2L``.

Every instance has ``m`` slots (``instance_size``, ``network.default_max_half(width)`` by
default): the ``m`` largest ``|v u|`` of a sign half in layer 0, the ``m`` largest ``|v|`` of
the ``c_i`` copies later (``network._sign_halves`` with ``u = 1``); the surplus is pruned.
Copies at or beyond the width (input axis: zero coefficients; output axis: the copy's
instances get zero target and coefficients and its mask is cleared) take no part.

Nesting: ``u[j, k]`` from ``fold_in(key_u, k)`` and ``V_i[:, p, :, k]`` from
``fold_in(fold_in(key_i, p), k)``, so the width-``w`` draw is ``u[:, :w]`` and
``V_i[:, :w, :, :w]`` (``[..., :w]`` for the output layer) of any wider draw.

The paper's code (RelationalML/LT-existence) draws the copy layer from U[-2, 2], adds bias
units and, when an instance misses epsilon, redraws and books extra width; here every entry
is U[-1, 1] or N(0, 1) (``random_net.DISTRIBUTIONS``), targets are bias-free, and SubsetSum
is exact. Per-weight errors are the worst over a weight's used output copies (and halves);
``evaluation.analytic_bound`` assumes ``network``'s propagation, whereas here an input
copy's error reaches the next layer times the chosen ``|v|``, so that bound is not an upper
bound for this construction: ``BOUNDED = False`` (the sweep reports no bound, and
``approximation_error``'s is NaN). Leaky ReLU is not offered: targets, their forward
(``targets.forward``) and the grid's evaluation are ReLU-only, so a leaky target has no
representation to approximate.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
from flax import struct

from lth_jax import _checks
from lth_jax import masks as masks_lib
from lth_jax import random_net as rn
from lth_jax import targets as targets_lib
import lth_jax.constructions.base as base
import lth_jax.constructions.network as network


@struct.dataclass
class LPlus1Network:
  """A sampled depth-``L+1`` random network (structured view + the filler key).

  Attributes:
    params: ``{"u": (d_0, c_0), "v": [V_i (d_{i+1}, n_out_i, d_i, c_i)]}``,
      ``n_out_i = c_{i+1}`` (hidden) or 1 (the output layer).
    filler_key: key of the copy layer's dense entries outside the structured view.
    layer_sizes: target sizes ``(d_0, ..., d_L)``.
    distribution: ``"uniform"`` (U[-1, 1]) or ``"normal"`` (N(0, 1)).
  """

  params: dict
  filler_key: jax.Array
  layer_sizes: tuple = struct.field(pytree_node=False)
  distribution: str = struct.field(pytree_node=False, default="uniform")

  @property
  def copies(self) -> tuple[int, ...]:
    return tuple(int(v.shape[-1]) for v in self.params["v"])


def _out_copies(copies, i):
  """Output copies of target layer ``i`` (1 for the last)."""
  return copies[i + 1] if i + 1 < len(copies) else 1


def _nested(key, n_out, n_in, shape, distribution):
  """``(d_out, n_out, d_in, n_in)`` draws, ``shape = (d_out, d_in)``; entry ``[:, p, :, k]``
  from ``fold_in(fold_in(key, p), k)`` (nested in both copy axes)."""
  keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(jnp.arange(n_out))
  draws = jax.vmap(lambda k: rn._per_copy(k, n_in, shape, distribution))(keys)
  return jnp.moveaxis(draws, 0, 1)  # (n_out, d_out, d_in, n_in) -> (d_out, n_out, ...)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample(key, sizes, copies, distribution):
  key_u, key_v, filler_key = jax.random.split(key, 3)
  u = rn._per_copy(key_u, copies[0], (sizes[0],), distribution)
  vs = [_nested(jax.random.fold_in(key_v, i), _out_copies(copies, i), c,
                (sizes[i + 1], sizes[i]), distribution) for i, c in enumerate(copies)]
  return LPlus1Network({"u": u, "v": vs}, filler_key, sizes, distribution)


def sample(key, target, width, *, distribution: str = "uniform") -> LPlus1Network:
  """The depth-``L+1`` random network for the target's sizes; ``width``: copies per input
  of each target layer (one int or one per layer). Nested in ``width``."""
  if distribution not in rn.DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {rn.DISTRIBUTIONS}, got {distribution!r}")
  sizes, copies = rn._check_sizes(targets_lib.target_layer_sizes(target), width)
  return _sample(key, sizes, copies, distribution)


def check(net, target) -> list[jax.Array]:
  if not isinstance(net, LPlus1Network):
    raise ValueError(f"this method prunes an LPlus1Network (lplus1.sample), got "
                     f"{type(net).__name__}")
  kernels = targets_lib.check_target(target, net.layer_sizes)
  sizes, copies = net.layer_sizes, net.copies
  u = net.params["u"]
  if u.shape != (sizes[0], copies[0]):
    raise ValueError(f"copy layer u {u.shape} must be (d_0, c_0) = ({sizes[0]}, {copies[0]})")
  for i, v in enumerate(net.params["v"]):
    want = (sizes[i + 1], _out_copies(copies, i), sizes[i], copies[i])
    if v.shape != want:
      raise ValueError(f"random layer {i}: v {v.shape} must be {want}")
  _checks.check_finite([("u", u)] + [(f"v[{i}]", v) for i, v in enumerate(net.params["v"])],
                       "random network params")
  return kernels


def widths(net: LPlus1Network) -> tuple[int, ...]:
  return net.copies


def instance_size(width: int, cap: int | None) -> int:
  """Slots per instance (a sign half in layer 0, the copies later): ``cap``, default
  ``network.default_max_half(width)``."""
  return network.default_max_half(width) if cap is None else int(cap)


def instances(net: LPlus1Network, kernels, width, cap, *, sizes) -> base.Instances:
  """Per layer ``i`` the problems: layer 0 ``(targets (2, D, d_0), products (2, D, d_0,
  m))``, later ``(targets (D, d_i), samples (D, d_i, m))``, ``D = d_{i+1} n_out`` (output
  copy ``p`` of neuron ``o`` at ``o n_out + p``); ``aux = (valid (2, d_i, m), slot
  (D, d_i, c_i), used (D,))``, ``used``: the output copy is below the width."""
  problems, aux = [], []
  num = len(kernels)
  for i, (v, k) in enumerate(zip(net.params["v"], kernels)):
    d_out, n_out, d_in, n_in = v.shape
    m = sizes[i]
    first = i == 0
    u = net.params["u"] if first else jnp.ones((d_in, n_in), v.dtype)  # plain samples
    w_out = base.per_layer(width, i + 1) if i + 1 < num else 1
    used = jnp.tile(jnp.arange(n_out) < w_out, d_out)  # (D,)
    inst = network.layer_instances(u, v.reshape(d_out * n_out, d_in, n_in),
                                   jnp.repeat(k, n_out, axis=1), m, base.per_layer(width, i))
    valid = inst.valid & (jnp.arange(m) < base.per_layer(cap, i))
    coefs = jnp.where(valid[:, None] & used[None, :, None, None], inst.products, 0.0)
    targets = jnp.where(used[None, :, None], inst.targets, 0.0)
    problems.append((targets, coefs) if first else (targets[0], coefs[0]))
    aux.append((valid, inst.slot, used))
  return base.Instances(problems, aux)


def _layer(problem, aux, chosen, first):
  """One layer's ``network.LayerMasks`` with unused output copies cleared (later layers'
  single instances are half 0 of a pair whose half 1 is empty), and the kept samples
  ``(D, d_i, c_i)`` scattered back to copies (later layers: the masked ``V`` itself)."""
  (t, coefs), (valid, slot, used) = problem, aux
  if not first:
    t, coefs, chosen = (jnp.stack([a, jnp.zeros_like(a)]) for a in (t, coefs, chosen))
  chosen = chosen & used[None, :, None, None]
  lm = network.layer_masks(chosen, t, coefs, valid, slot)
  flat = jnp.concatenate([coefs[0], coefs[1]], axis=-1)  # (D, d_i, 2m)
  kept = jnp.take_along_axis(flat, jnp.maximum(slot, 0), axis=-1) * lm.mask_v
  return lm, kept


def assemble(kernels, inst: base.Instances, solutions) -> base.Assembled:
  """Masks ``{"u": (d_0, c_0), "v": [(d_{i+1}, n_out, d_i, c_i)]}`` (a copy-layer entry is
  kept when some kept entry reads it); per weight the largest error over its used output
  copies (and sign halves); effective: layer 0's kept products summed per half
  ``(2, d_0, D)``, then the masked dense kernels ``(d_i c_i, D)``."""
  masks_v, errors, effective = [], [], []
  kept = jnp.int32(0)
  mask_u = None
  for i, (problem, aux, (chosen, _)) in enumerate(zip(inst.problems, inst.aux, solutions)):
    d_in, d_out = kernels[i].shape
    lm, values = _layer(problem, aux, chosen, i == 0)
    n_in = lm.mask_v.shape[-1]
    used = aux[2].reshape(d_out, -1)
    err = jnp.max(jnp.where(used[:, :, None], lm.errors.reshape(d_out, -1, d_in), 0.0), 1)
    if i == 0:
      mask_u = lm.mask_u
      effective.append(jnp.transpose(lm.effective, (0, 2, 1)))
    else:
      effective.append(jnp.transpose(values, (1, 2, 0)).reshape(d_in * n_in, -1))
    masks_v.append(lm.mask_v.reshape(d_out, -1, d_in, n_in))
    errors.append(err.T)
    kept = kept + jnp.sum(lm.mask_v, dtype=jnp.int32)
  kept = kept + jnp.sum(mask_u, dtype=jnp.int32)
  return base.Assembled({"u": mask_u, "v": masks_v}, errors, effective, kept)


def effective_forward(effective, x: jax.Array) -> jax.Array:
  """The pruned network from its compact form: layer 0 as ``relu(x) @ P - relu(-x) @ N``
  (the copy layer folded in), then ``relu(z) @ K_i``. ``x``: ``(batch, d_0)``."""
  z = jax.nn.relu(x) @ effective[0][0] - jax.nn.relu(-x) @ effective[0][1]
  for k in effective[1:]:
    z = jax.nn.relu(z) @ k
  return z


@jax.jit
def structured_forward(net: LPlus1Network, masks: dict, x: jax.Array) -> jax.Array:
  """The pruned network through its structured view: ``h = relu(x[:, :, None] * U')``,
  then per layer ``einsum('bjk,opjk->bop', h, V')`` with ReLU between layers
  (``U' = U * mask_u``, ``V' = V * mask_v``). ``x``: ``(batch, d_0)``."""
  h = jax.nn.relu(x[:, :, None] * (net.params["u"] * masks["u"])[None])
  vs = net.params["v"]
  for i, (v, mv) in enumerate(zip(vs, masks["v"])):
    h = jnp.einsum("bjk,opjk->bop", h, v * mv)
    if i + 1 < len(vs):
      h = jax.nn.relu(h)
  return h[:, :, 0]


def _copy_layer(net: LPlus1Network, masks: dict | None):
  """The copy layer and layer 0 as ``random_net``'s structured pair (its dense view and
  masks give the first two dense kernels; ``masks`` None: the unmasked draw)."""
  v0 = net.params["v"][0]
  d_out, n_out, d_in, n_in = v0.shape
  pair = rn.RandomNetwork({"u": [net.params["u"]], "v": [v0.reshape(d_out * n_out, d_in, n_in)]},
                          net.filler_key, (d_in, d_out * n_out), net.distribution)
  if masks is None:
    return pair, None
  return pair, {"u": [masks["u"]], "v": [masks["v"][0].reshape(d_out * n_out, d_in, n_in)]}


def _flat_kernel(v):
  """``(d_out, n_out, d_in, n_in)`` -> the dense kernel ``(d_in n_in, d_out n_out)``."""
  d_out, n_out, d_in, n_in = v.shape
  return jnp.transpose(v, (2, 3, 0, 1)).reshape(d_in * n_in, d_out * n_out)


def dense_params(net: LPlus1Network, masks: dict) -> list[jax.Array]:
  """The ``L + 1`` masked dense kernels: literally the pruned random MLP (copy layer
  ``(d_0, c_0 d_0)`` with its filler, then ``(c_i d_i, n_out d_{i+1})``)."""
  pair, pair_masks = _copy_layer(net, masks)
  first = masks_lib.apply_masks(rn.dense_params(pair), masks_lib.dense_masks(pair, pair_masks))
  rest = [_flat_kernel(v * mv) for v, mv in zip(net.params["v"][1:], masks["v"][1:])]
  return first + rest


def _dense_shapes(kernel_shapes, width):
  """Per dense layer ``(rows, cols)``."""
  num = len(kernel_shapes)
  c = [int(base.per_layer(width, i)) for i in range(num)]
  out = [(kernel_shapes[0][0], c[0] * kernel_shapes[0][0])]
  for i, (a, b) in enumerate(kernel_shapes):
    out.append((c[i] * a, (c[i + 1] if i + 1 < num else 1) * b))
  return out


def num_params(kernel_shapes, width) -> int:
  """Every entry of the dense kernels: ``d_0 c_0 d_0 + sum_i c_i d_i n_out_i d_{i+1}``."""
  return sum(a * b for a, b in _dense_shapes(kernel_shapes, width))


def width_factor(kernel_shapes, width) -> float:
  """Widest random layer / widest target layer."""
  sizes = base.layer_sizes_of(kernel_shapes)
  return max(b for _, b in _dense_shapes(kernel_shapes, width)) / max(sizes)


def depth(num_layers: int) -> int:
  return num_layers + 1


# A copy's error is scaled by the chosen |v| of the next layer: network's bound does not hold.
BOUNDED = False

LPLUS1 = base.register(base.from_module(sys.modules[__name__], "lplus1", stream=4,
                                        prunes_network=True))
