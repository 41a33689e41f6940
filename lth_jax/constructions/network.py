"""``"network"``: Theorem 1 of Pensia et al. (SPEC section 2), a real pruned depth-2l network.

For target layer ``W`` (``d_out x d_in``) and ``n`` copies per input, the random layer pair
is ``U`` (``d_in, n``: the block-diagonal ``M1`` entries a ticket can keep) and ``V``
(``d_out, d_in, n``). Every weight ``(o, j)`` is two SubsetSum problems with target
``W[o, j]`` over the products ``v[o, j, k] u[j, k]``, one over the copies with ``u > 0`` and
one over ``u <= 0``. Each sign half is capped at ``m`` copies: per instance ``(o, j, half)``
the ``m`` member copies with the largest ``|v[o, j, k] u[j, k]|`` (ties: lower copy index)
are kept and the surplus is pruned, so every instance has size ``m`` and a half with more
than ``m`` members still gains from more copies (keeping the first ``m`` in copy order made
extra copies useless: ``benchmarks/bench_caps.py`` measures both rules). Only copies below
the width take part, so a narrower width's instances are those of the truncated network.
Since ``relu(u z) = u relu(z)`` for ``u > 0`` and ``|u| relu(-z)`` for ``u < 0``, the pruned
network's layer is ``z -> relu(z) @ P - relu(-z) @ N`` with ``P`` (``N``) the kept products
summed over the ``u > 0`` (``u < 0``) copies: the compact ``effective`` form
``(2, d_in, d_out)``.
"""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lth_jax import _checks
from lth_jax import masks as masks_lib
from lth_jax import random_net as rn
from lth_jax import subset_sum
from lth_jax import targets as targets_lib
import lth_jax.constructions.base as base


class LayerInstances(NamedTuple):
  """The ``2 * d_out * d_in`` SubsetSum instances of one target layer: per weight ``(o, j)``
  and sign half ``h`` (``u > 0``, ``u <= 0``), target ``W[o, j]`` over the products
  ``v[o, j, k] u[j, k]`` of the half's kept copies ``k`` (at most ``m``: those with the
  largest ``|v u|``, so which copies are kept depends on ``o``).

  Attributes:
    targets: ``(2, d_out, d_in)``, ``W`` once per half.
    products: ``(2, d_out, d_in, m)``, by decreasing ``|v u|``; zero where a half has fewer
      than ``m`` copies.
    valid: ``(2, d_in, m)`` bool, the slots holding a copy (slot ``s`` iff ``s`` is below
      the half's member count and ``m``: the same for every output ``o``).
    copy_index: ``(2, d_out, d_in, m)`` int, which copy of input ``j`` sits in each slot of
      instance ``(o, j)`` (meaningless where not ``valid``).
    slot: ``(d_out, d_in, n)`` int32, where copy ``k`` sits in ``concat(halves)`` of
      instance ``(o, j)`` (``-1``: not in it: beyond the width, or the half's surplus
      beyond ``m``).
  """

  targets: jax.Array
  products: jax.Array
  valid: jax.Array
  copy_index: jax.Array
  slot: jax.Array


class LayerMasks(NamedTuple):
  """One target layer's part of a network ticket (``layer_masks``).

  Attributes:
    mask_u: ``(d_in, n)`` uint8, kept first-layer entries (a copy feeding a kept product).
    mask_v: ``(d_out, d_in, n)`` uint8, kept second-layer entries.
    errors: ``(d_out, d_in)``, per weight the larger of the two halves' errors.
    effective: ``(2, d_out, d_in)``, the kept products' sums per half.
  """

  mask_u: jax.Array
  mask_v: jax.Array
  errors: jax.Array
  effective: jax.Array


def default_max_half(copies: int) -> int:
  """Instance size per sign half: about the mean plus one standard deviation of
  Binomial(copies, 1/2), so most halves keep all their copies while the
  meet-in-the-middle cost 2^(m/2) stays that of a typical half."""
  return max(1, min(copies, subset_sum.MAX_N, math.ceil(copies / 2 + math.sqrt(copies) / 2)))


def check_random_network(net: rn.RandomNetwork) -> None:
  """Validates a ``RandomNetwork``: per layer ``i``, ``u`` of shape ``(d_{i-1}, n_i)`` and
  ``v`` of shape ``(d_i, d_{i-1}, n_i)`` with ``n_i >= 1`` (``layer_sizes``), finite
  entries (when concrete).

  Raises:
    ValueError: naming the offending layer (a NaN in ``u`` or ``v`` would otherwise give
      silently empty or wrong SubsetSum instances).
  """
  us, vs = net.params.get("u", []), net.params.get("v", [])
  sizes = net.layer_sizes
  if len(us) != len(sizes) - 1 or len(vs) != len(sizes) - 1:
    raise ValueError(f"random network has {len(us)} u and {len(vs)} v layers for layer "
                     f"sizes {tuple(sizes)} ({len(sizes) - 1} layers)")
  for i, (u, v) in enumerate(zip(us, vs)):
    d_in, d_out = sizes[i], sizes[i + 1]
    n = u.shape[-1] if u.ndim == 2 else -1
    if u.shape != (d_in, n) or v.shape != (d_out, d_in, n) or n < 1:
      raise ValueError(f"random network layer {i}: u {u.shape} and v {v.shape} must be "
                       f"(d_in, n) = ({d_in}, n) and (d_out, d_in, n) = ({d_out}, {d_in}, n), "
                       "n >= 1")
  _checks.check_finite([(f"{name}[{i}]", a) for name in ("u", "v")
                        for i, a in enumerate(net.params[name])], "random network params")


def _sign_halves(u, v, max_half, width=None):
  """Per instance ``(o, j, half)`` the ``max_half`` member copies below ``width`` with the
  largest ``|v[o, j, k] u[j, k]|``, ties to the lower copy index.

  One three-key sort per ``(o, j)`` (half, then ``-|v u|``, then copy index) orders both
  halves at once; a second sort inverts it for the scatter back to copies.

  Args:
    u: ``(d_in, n)``; v: ``(d_out, d_in, n)``.
    max_half: ``m`` (static).
    width: copies ``k >= width`` take no part (int or traced int32 scalar; None: all ``n``).
  Returns:
    index ``(2, d_out, d_in, m)`` into the copy axis, valid ``(2, d_in, m)`` bool, and
    slot ``(d_out, d_in, n)``: where each copy sits in ``concat(halves)`` (``-1``: unused).
  """
  d_out, d_in, n = v.shape
  m = max_half
  k = jnp.arange(n, dtype=jnp.int32)
  below = k < (n if width is None else width)
  group = jnp.where(below, jnp.where(u > 0, 0, 1), 2).astype(jnp.int32)  # (d_in, n)
  counts = jnp.stack([jnp.sum(group == h, axis=-1, dtype=jnp.int32) for h in (0, 1)])
  iota = jnp.broadcast_to(k, v.shape)
  _, _, order = jax.lax.sort((jnp.broadcast_to(group, v.shape), -jnp.abs(v * u), iota),
                             num_keys=3)  # (d_out, d_in, n): half 0, half 1, the rest
  _, rank = jax.lax.sort((order, iota), num_keys=1)  # position of copy k in `order`
  start = jnp.stack([jnp.zeros_like(counts[0]), counts[0]])  # (2, d_in): each half's start
  at = start[:, None, :, None] + jnp.arange(m)  # (2, 1, d_in, m)
  idx = jnp.take_along_axis(order[None], jnp.minimum(at, n - 1), axis=-1)  # (2, d_out, d_in, m)
  valid = jnp.arange(m) < jnp.minimum(counts, m)[..., None]
  in_half = rank - jnp.where(group == 1, counts[0][:, None], 0)
  slot = jnp.where((group < 2) & (in_half < m), group * m + in_half, -1).astype(jnp.int32)
  return idx, valid, slot


def layer_instances(u: jax.Array, v: jax.Array, kernel: jax.Array, max_half: int,
                    width=None) -> LayerInstances:
  """The SubsetSum instances of one target layer (each sign half capped at ``max_half``).

  Args:
    u: ``(d_in, n)``; v: ``(d_out, d_in, n)``: one layer of ``RandomNetwork.params``.
    kernel: the target layer ``(d_in, d_out)``.
    max_half: ``m``, the instance size (static): per instance the ``m`` member copies with
      the largest ``|v u|``.
    width: only copies ``k < width`` take part (int or traced scalar; None: all ``n``).
  Returns:
    ``LayerInstances`` (``(2, d_out, d_in)`` targets, ``(..., m)`` products).
  """
  d_out, d_in, _ = v.shape
  w = kernel.T  # (d_out, d_in)
  idx, valid, slot = _sign_halves(u, v, max_half, width)
  prods = jnp.take_along_axis((v * u)[None], idx, axis=-1)  # (2, d_out, d_in, m)
  prods = jnp.where(valid[:, None], prods, 0.0)
  targets = jnp.broadcast_to(w[None], (2, d_out, d_in))
  return LayerInstances(targets, prods, valid, idx, slot)


def layer_masks(chosen: jax.Array, targets: jax.Array, prods: jax.Array, valid: jax.Array,
                slot: jax.Array) -> LayerMasks:
  """Masks, per-weight errors and effective kernels of one layer from chosen subsets.

  Args:
    chosen: ``(2, d_out, d_in, m)`` bool, the subset chosen per instance (a solver's
      ``mask``); slots that are not ``valid`` are ignored.
    targets, prods, valid, slot: from ``layer_instances``.
  Returns:
    ``LayerMasks(mask_u (d_in, n) uint8, mask_v (d_out, d_in, n) uint8,
    errors (d_out, d_in), effective (2, d_out, d_in))``.
  """
  chosen = chosen & valid[:, None]
  effective = jnp.sum(jnp.where(chosen, prods, 0.0), axis=-1)  # (2, d_out, d_in)
  errors = jnp.max(jnp.abs(effective - targets), axis=0)
  # Scatter back to copies: copy k sits at slot[o, j, k] of instance (o, j)'s concat(halves).
  flat = jnp.concatenate([chosen[0], chosen[1]], axis=-1)  # (d_out, d_in, 2m)
  gathered = jnp.take_along_axis(flat, jnp.maximum(slot, 0), axis=-1)
  mask_v = gathered & (slot >= 0)
  mask_u = jnp.any(mask_v, axis=0)  # a copy is kept when any output uses it
  return LayerMasks(mask_u.astype(jnp.uint8), mask_v.astype(jnp.uint8), errors, effective)


# --------------------------------------------------------------------------------------
# The Construction functions.
# --------------------------------------------------------------------------------------


def sample(key, target, width, *, distribution: str = "uniform") -> rn.RandomNetwork:
  """``sample_random_network`` for the target's sizes (copy ``k`` from ``fold_in(key, k)``:
  nested in ``width``)."""
  return rn.sample_random_network(key, targets_lib.target_layer_sizes(target), width,
                                  distribution)


def check(net, target) -> list[jax.Array]:
  if not isinstance(net, rn.RandomNetwork):
    raise ValueError(f"this method prunes a RandomNetwork (sample_random_network), got "
                     f"{type(net).__name__}")
  kernels = targets_lib.check_target(target, net.layer_sizes)
  check_random_network(net)
  return kernels


def widths(net: rn.RandomNetwork) -> tuple[int, ...]:
  return net.copies


def instance_size(width: int, cap: int | None) -> int:
  """Per sign half: ``cap``, default ``default_max_half(width)``."""
  return default_max_half(width) if cap is None else int(cap)


def instances(net: rn.RandomNetwork, kernels, width, cap, *, sizes) -> base.Instances:
  """Per layer the problems ``(targets (2, d_out, d_in), products (2, d_out, d_in, m))`` and
  ``aux = (valid (2, d_in, m), slot (d_out, d_in, n))``."""
  problems, aux = [], []
  for i, (u, v, k) in enumerate(zip(net.params["u"], net.params["v"], kernels)):
    m = sizes[i]
    inst = layer_instances(u, v, k, m, base.per_layer(width, i))
    # Slots are by decreasing |v u|, so the first `cap` are the top `cap`: a cap below m
    # gives the instances of instance_size = cap.
    valid = inst.valid & (jnp.arange(m) < base.per_layer(cap, i))
    problems.append((inst.targets, jnp.where(valid[:, None], inst.products, 0.0)))
    aux.append((valid, inst.slot))
  return base.Instances(problems, aux)


def assemble(kernels, inst: base.Instances, solutions) -> base.Assembled:
  """Masks ``{"u": [(d_in, n)], "v": [(d_out, d_in, n)]}``; an ``M1`` entry is kept only
  when its unit feeds some kept ``M2`` entry. Per-weight error: the larger half's."""
  del kernels  # the targets are in the problems
  masks_u, masks_v, errors, effective = [], [], [], []
  kept = jnp.int32(0)
  for (t, prods), (valid, slot), (chosen, _) in zip(inst.problems, inst.aux, solutions):
    mu, mv, err, eff = layer_masks(chosen, t, prods, valid, slot)
    masks_u.append(mu)
    masks_v.append(mv)
    errors.append(err.T)
    effective.append(jnp.transpose(eff, (0, 2, 1)))
    kept = kept + jnp.sum(mu, dtype=jnp.int32) + jnp.sum(mv, dtype=jnp.int32)
  return base.Assembled({"u": masks_u, "v": masks_v}, errors, effective, kept)


def effective_forward(effective, x: jax.Array) -> jax.Array:
  """The pruned network from its ``(2, d_in, d_out)`` per-layer sums, without the copy axis."""
  return base.pair_forward([(e[0], e[1]) for e in effective], x)


@jax.jit
def structured_forward(net: rn.RandomNetwork, masks: dict, x: jax.Array) -> jax.Array:
  """The pruned depth-2l random network through its structured view:
  ``y = einsum('bjk,ojk->bo', relu(x[:, :, None] * U'), V')`` per layer, ``U' = U * mask_u``,
  ``V' = V * mask_v``, without the block-diagonal ``M1``. ``x``: ``(batch, d_0)``."""
  num = len(net.params["u"])
  for i in range(num):
    u = net.params["u"][i] * masks["u"][i]
    v = net.params["v"][i] * masks["v"][i]
    hidden = jax.nn.relu(x[:, :, None] * u[None])  # (b, d_in, n)
    x = jnp.einsum("bjk,ojk->bo", hidden, v)
    if i + 1 < num:
      x = jax.nn.relu(x)
  return x


def dense_params(net: rn.RandomNetwork, masks: dict) -> list[jax.Array]:
  """The ``2l`` masked dense kernels: literally the pruned random MLP."""
  return masks_lib.apply_masks(rn.dense_params(net), masks_lib.dense_masks(net, masks))


def num_params(kernel_shapes, width) -> int:
  """Every entry of the dense network's kernels: ``sum_i n_i d_{i-1} (d_{i-1} + d_i)``."""
  return sum(int(base.per_layer(width, i)) * a * (a + b)
             for i, (a, b) in enumerate(kernel_shapes))


def width_factor(kernel_shapes, width) -> float:
  """Widest random layer / widest target layer: ``max_i(n_i d_{i-1}) / max_i d_i``."""
  sizes = base.layer_sizes_of(kernel_shapes)
  return max(int(base.per_layer(width, i)) * a for i, a in enumerate(sizes[:-1])) / max(sizes)


def depth(num_layers: int) -> int:
  return 2 * num_layers


NETWORK = base.register(base.from_module(sys.modules[__name__], "network", stream=0,
                                         prunes_network=True))
