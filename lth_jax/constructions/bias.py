"""``"bias"``: the ``"network"`` construction plus bias units (Fischer, Gadhikar & Burkholz
2021, "Lottery tickets with nonzero biases"), for targets whose layers have biases.

Per target layer ``(d_in -> d_out)`` the random layer pair is ``"network"``'s (``u``
``(d_in, n)``, ``v`` ``(d_out, d_in, n)``: every weight is two SubsetSum problems over the
products ``v u``, one per sign of ``u``) plus a block of ``n`` BIAS UNITS in the hidden
layer: unit ``k`` has a random bias ``beta[k]`` and outgoing weights ``w[:, k]``
``(d_out, n)``. Its incoming weights are pruned, so it outputs the constant
``relu(beta[k])``: a unit with ``beta > 0`` adds ``w[o, k] beta[k]`` to output ``o``. Every
target bias ``b[o]`` is one SubsetSum problem over those products (``beta > 0`` units only,
capped like a sign half at the ``m`` largest ``|w beta|``: ``bias_instances``), and a unit is
kept when some output uses it (``bias_masks``). A bias-free layer has target ``b = 0``: the
empty subset, error 0.

The dense random network is i.i.d. everywhere, biases included: every unit's bias (the
copy units', the bias units', each output unit's) and every weight is drawn from
``distribution`` (``random_net.DISTRIBUTIONS``). Why ``beta`` from the same distribution
and only ``beta > 0`` used (about half of the ``n`` units), rather than positive biases: the
paper's existence argument works on a network whose biases are i.i.d. like its weights and
first selects the units with positive bias (its reference code draws the bias block from
``U(0, 1)`` directly "for simplicity"); drawing the whole network i.i.d. keeps the dense
network a plain random MLP and charges the construction for the unusable units. The ticket
prunes the copy units' and output units' biases and the bias units' incoming weights:
pruning only, no kept value changes.

Effective form per layer: ``{"kernel": (2, d_in, d_out), "bias": (d_out,)}`` (the network
pairs and the kept bias products' sums); ``Assembled.bias_errors``: per layer ``(d_out,)``.
Conv constructions reuse ``sample_bias_units``, ``bias_instances`` and ``bias_masks``.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from lth_jax import _checks
from lth_jax import masks as masks_lib
from lth_jax import random_net as rn
from lth_jax import targets as targets_lib
import lth_jax.constructions.base as base
import lth_jax.constructions.network as network

# fold_in of the sample key that draws the bias block (network's draw uses the key itself).
_BIAS_FOLD = 3


@struct.dataclass
class BiasNetwork:
  """``"network"``'s random network plus the random biases and bias units.

  Attributes:
    net: the weight part (``RandomNetwork``: ``u``, ``v``; its ``filler_key`` fills ``M1``).
    params: per layer ``i`` (copy axis last, nested in the width):
      ``{"beta": [(n,)], "w": [(d_out, n)], "copy_bias": [(d_in, n)],
      "out_bias": [(d_out,)], "w_in": [(d_in, n)]}``: the bias units' biases, outgoing
      and incoming weights, and the copy units' and output units' biases.
  """

  net: rn.RandomNetwork
  params: dict

  @property
  def layer_sizes(self) -> tuple:
    return self.net.layer_sizes

  @property
  def copies(self) -> tuple[int, ...]:
    return self.net.copies

  @property
  def distribution(self) -> str:
    return self.net.distribution

  @property
  def maskable(self) -> dict:
    """The entries a ticket can keep, shaped like its masks: ``{"u", "v", "beta", "w"}``."""
    return dict(self.net.params, beta=self.params["beta"], w=self.params["w"])


class BiasInstances(NamedTuple):
  """The ``d_out`` bias SubsetSum instances of one layer (``bias_instances``).

  Attributes:
    targets: ``(d_out,)``, the target bias.
    products: ``(d_out, m)``: ``w[o, k] beta[k]`` of the ``m`` usable units (``beta > 0``,
      below the width) with the largest ``|w beta|``, decreasing; zero in unused slots.
    valid: ``(m,)`` bool, slots holding a unit (the same for every output).
    slot: ``(d_out, n)`` int32, where unit ``k`` sits in instance ``o`` (``-1``: unused).
  """

  targets: jax.Array
  products: jax.Array
  valid: jax.Array
  slot: jax.Array


def sample_bias_units(key, d_in: int, d_out: int, copies: int, distribution: str) -> dict:
  """One layer's random biases and bias units: ``{"beta" (n,), "w" (d_out, n),
  "copy_bias" (d_in, n), "out_bias" (d_out,), "w_in" (d_in, n)}``, i.i.d. from
  ``distribution``; unit ``k`` from ``fold_in(., k)`` (nested in ``copies``)."""
  ks = jax.random.split(key, 5)
  return dict(beta=rn._per_copy(ks[0], copies, (), distribution),
              w=rn._per_copy(ks[1], copies, (d_out,), distribution),
              copy_bias=rn._per_copy(ks[2], copies, (d_in,), distribution),
              out_bias=rn._draw(ks[3], (d_out,), distribution),
              w_in=rn._per_copy(ks[4], copies, (d_in,), distribution))


def bias_instances(beta: jax.Array, w: jax.Array, bias: jax.Array, max_size: int,
                   width=None) -> BiasInstances:
  """The SubsetSum instances of one layer's biases: per output ``o``, target ``bias[o]``
  over ``w[o, k] relu(beta[k])`` of the units with ``beta > 0`` and ``k < width`` (capped at
  the ``max_size`` largest ``|w beta|``). ``network.layer_instances`` with ``beta`` as the
  one-input ``u`` does the selection: its ``u > 0`` half is exactly the usable units.

  Args:
    beta: ``(n,)``; w: ``(d_out, n)``; bias: ``(d_out,)``; max_size: ``m`` (static).
    width: units ``k >= width`` take no part (int or traced scalar; None: all ``n``).
  """
  inst = network.layer_instances(beta[None, :], w[:, None, :], bias[None, :], max_size,
                                 width)
  slot = inst.slot[:, 0]
  return BiasInstances(inst.targets[0, :, 0], inst.products[0, :, 0], inst.valid[0, 0],
                       jnp.where(slot < max_size, slot, -1))


def bias_masks(chosen: jax.Array, inst: BiasInstances):
  """``(mask_beta (n,), mask_w (d_out, n)`` uint8, ``errors (d_out,)``, ``effective
  (d_out,))`` from the chosen subsets ``(d_out, m)`` bool: a unit's bias is kept when some
  output keeps its outgoing weight."""
  chosen = chosen & inst.valid
  effective = jnp.sum(jnp.where(chosen, inst.products, 0.0), axis=-1)
  errors = jnp.abs(effective - inst.targets)
  mask_w = jnp.take_along_axis(chosen, jnp.maximum(inst.slot, 0), axis=-1) & (inst.slot >= 0)
  return (jnp.any(mask_w, axis=0).astype(jnp.uint8), mask_w.astype(jnp.uint8), errors,
          effective)


def layer_biases(target) -> list:
  """Per layer the target bias ``(d_out,)`` (zeros for a bare-kernel layer; ``d_out`` is the
  kernel's last axis, so conv kernels too)."""
  kernels, biases = targets_lib.split_layers(target)
  return [jnp.zeros(k.shape[-1], jnp.float32) if b is None else b
          for k, b in zip(kernels, biases)]


def layer_bias_instances(beta: list, w: list, biases: list, width, cap, sizes
                         ) -> tuple[list, list]:
  """Every layer's bias problems ``(targets (d_out,), products (d_out, m))`` and their
  ``BiasInstances`` (``bias_instances`` at ``m = sizes[i]``, slots at or beyond ``cap``
  unused); ``width``/``cap``: one for all layers or one per layer (ints or traced)."""
  problems, aux = [], []
  for i, b in enumerate(biases):
    m = sizes[i]
    bi = bias_instances(beta[i], w[i], b, m, base.per_layer(width, i))
    valid = bi.valid & (jnp.arange(m) < base.per_layer(cap, i))
    bi = bi._replace(products=jnp.where(valid, bi.products, 0.0), valid=valid)
    problems.append((bi.targets, bi.products))
    aux.append(bi)
  return problems, aux


def assemble_biases(aux: list, solutions: list):
  """``(masks {"beta": [(n,)], "w": [(d_out, n)]}, errors [(d_out,)], effective biases
  [(d_out,)], kept int32)`` from ``layer_bias_instances``' aux and their solutions."""
  masks, errors, effective, kept = dict(beta=[], w=[]), [], [], jnp.int32(0)
  for bi, (chosen, _) in zip(aux, solutions):
    m_beta, m_w, err, eff = bias_masks(chosen, bi)
    masks["beta"].append(m_beta)
    masks["w"].append(m_w)
    errors.append(err)
    effective.append(eff)
    kept = kept + jnp.sum(m_beta, dtype=jnp.int32) + jnp.sum(m_w, dtype=jnp.int32)
  return masks, errors, effective, kept


# --------------------------------------------------------------------------------------
# The Construction functions.
# --------------------------------------------------------------------------------------


def attach(net: rn.RandomNetwork, key) -> BiasNetwork:
  """``net`` plus its random biases and bias units (``sample_bias_units`` per layer from
  ``fold_in(key, i)``, ``n`` units per layer: the layer's copies)."""
  return _attach(net, key)


@jax.jit
def _attach(net, key):
  sizes = net.layer_sizes
  layers = [sample_bias_units(jax.random.fold_in(key, i), sizes[i], sizes[i + 1], n,
                              net.distribution) for i, n in enumerate(net.copies)]
  return BiasNetwork(net, {name: [p[name] for p in layers] for name in layers[0]})


def sample(key, target, width, *, distribution: str = "uniform") -> BiasNetwork:
  """``network.sample(key, ...)`` plus ``attach`` from ``fold_in(key, 3)`` (nested)."""
  net = network.sample(key, target, width, distribution=distribution)
  return attach(net, jax.random.fold_in(key, _BIAS_FOLD))


def check(obj, target) -> list:
  """The target layers (biased or not, float32) after checking ``obj`` fits them."""
  if not isinstance(obj, BiasNetwork):
    raise ValueError(f"this method prunes a BiasNetwork (constructions.bias.sample), got "
                     f"{type(obj).__name__}")
  layers = targets_lib.check_target(target, obj.layer_sizes, allow_bias=True)
  network.check_random_network(obj.net)
  sizes, p = obj.layer_sizes, obj.params
  for i, n in enumerate(obj.copies):
    want = dict(beta=(n,), w=(sizes[i + 1], n), copy_bias=(sizes[i], n),
                out_bias=(sizes[i + 1],), w_in=(sizes[i], n))
    got = {name: tuple(p[name][i].shape) for name in want}
    if got != want:
      raise ValueError(f"bias units of layer {i} have shapes {got}, expected {want}")
  _checks.check_finite([(f"{name}[{i}]", a) for name in p for i, a in enumerate(p[name])],
                       "random network biases")
  return layers


def widths(obj: BiasNetwork) -> tuple[int, ...]:
  return obj.copies


instance_size = network.instance_size


def instances(obj: BiasNetwork, layers, width, cap, *, sizes) -> base.Instances:
  """``network.instances``' problems for the kernels, then per layer the bias problems
  ``(targets (d_out,), products (d_out, m))``; ``aux = (network's aux, [BiasInstances])``."""
  kernels = targets_lib.split_layers(layers)[0]
  inst = network.instances(obj.net, kernels, width, cap, sizes=sizes)
  problems, aux = layer_bias_instances(obj.params["beta"], obj.params["w"],
                                       layer_biases(layers), width, cap, sizes)
  return base.Instances(inst.problems + problems, (inst.aux, aux))


def assemble(layers, inst: base.Instances, solutions) -> base.Assembled:
  """Network's masks ``{"u", "v"}`` plus ``{"beta": [(n,)], "w": [(d_out, n)]}``;
  ``bias_errors``: per layer ``(d_out,)``; effective ``{"kernel", "bias"}`` per layer."""
  num = len(inst.aux[1])
  out = network.assemble(layers, base.Instances(inst.problems[:num], inst.aux[0]),
                         solutions[:num])
  b_masks, bias_errors, eff_b, kept = assemble_biases(inst.aux[1], solutions[num:])
  effective = [{"kernel": k, "bias": b} for k, b in zip(out.effective, eff_b)]
  return base.Assembled(dict(out.masks, **b_masks), out.weight_errors, effective,
                        out.kept + kept, bias_errors)


def effective_forward(effective, x: jax.Array) -> jax.Array:
  """Per layer ``z -> relu(z) @ P - relu(-z) @ N + b`` (ReLU between layers)."""
  for i, layer in enumerate(effective):
    pos, neg = layer["kernel"][0], layer["kernel"][1]
    x = jax.nn.relu(x) @ pos - jax.nn.relu(-x) @ neg + layer["bias"]
    if i + 1 < len(effective):
      x = jax.nn.relu(x)
  return x


@jax.jit
def structured_forward(obj: BiasNetwork, masks: dict, x: jax.Array) -> jax.Array:
  """The pruned network through its structured view: network's copy-unit layer plus the
  kept bias units' constant ``relu(beta') @ w'^T`` (pruned biases and incoming weights
  are zero, so they are left out). ``x``: ``(batch, d_0)``."""
  num = len(masks["u"])
  for i in range(num):
    u = obj.net.params["u"][i] * masks["u"][i]
    v = obj.net.params["v"][i] * masks["v"][i]
    beta = obj.params["beta"][i] * masks["beta"][i]
    w = obj.params["w"][i] * masks["w"][i]
    hidden = jax.nn.relu(x[:, :, None] * u[None])  # (b, d_in, n)
    x = jnp.einsum("bjk,ojk->bo", hidden, v) + jax.nn.relu(beta) @ w.T
    if i + 1 < num:
      x = jax.nn.relu(x)
  return x


@jax.jit
def dense_random(obj: BiasNetwork) -> list[dict]:
  """The whole dense random network, ``2l`` layers ``{"kernel", "bias"}``: layer ``2i-1``
  ``(d_in, n d_in + n)`` (copy units, then bias units), layer ``2i`` ``(n d_in + n, d_out)``."""
  p, out = obj.params, []
  kernels = rn.dense_params(obj.net)
  for i in range(len(p["beta"])):
    out.append({"kernel": jnp.concatenate([kernels[2 * i], p["w_in"][i]], axis=1),
                "bias": jnp.concatenate([p["copy_bias"][i].reshape(-1), p["beta"][i]])})
    out.append({"kernel": jnp.concatenate([kernels[2 * i + 1], p["w"][i].T], axis=0),
                "bias": p["out_bias"][i]})
  return out


def dense_masks(obj: BiasNetwork, masks: dict) -> list[dict]:
  """Masks of ``dense_random``: network's dense masks; the copy units' and output units'
  biases and the bias units' incoming weights always pruned."""
  base_masks = masks_lib.dense_masks(obj.net, masks)
  out = []
  for i, (m_beta, m_w) in enumerate(zip(masks["beta"], masks["w"])):
    d_in, n = masks["u"][i].shape
    out.append({"kernel": jnp.concatenate([base_masks[2 * i], jnp.zeros((d_in, n),
                                                                         jnp.uint8)], axis=1),
                "bias": jnp.concatenate([jnp.zeros(d_in * n, jnp.uint8), m_beta])})
    out.append({"kernel": jnp.concatenate([base_masks[2 * i + 1], m_w.T], axis=0),
                "bias": jnp.zeros(m_w.shape[0], jnp.uint8)})
  return out


def dense_params(obj: BiasNetwork, masks: dict) -> list[dict]:
  """The ``2l`` masked dense layers with biases: literally the pruned random MLP
  (``targets.forward`` runs it)."""
  return masks_lib.apply_masks(dense_random(obj), dense_masks(obj, masks))


def num_params(kernel_shapes, width) -> int:
  """Every dense entry: network's kernels plus per layer ``n (d_in + 1 + d_out)`` for the
  bias units and ``n d_in + d_out`` biases of the copy and output units."""
  extra = sum(int(base.per_layer(width, i)) * (2 * a + 1 + b) + b
              for i, (a, b) in enumerate(kernel_shapes))
  return network.num_params(kernel_shapes, width) + extra


def width_factor(kernel_shapes, width) -> float:
  """Widest random layer / widest target layer: ``max_i(n_i (d_{i-1} + 1)) / max_i d_i``."""
  sizes = base.layer_sizes_of(kernel_shapes)
  return max(int(base.per_layer(width, i)) * (a + 1)
             for i, a in enumerate(sizes[:-1])) / max(sizes)


depth = network.depth


BIAS = base.register(base.from_module(sys.modules[__name__], "bias", stream=3,
                                      prunes_network=True))
