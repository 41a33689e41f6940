"""Finding tickets: masks that prune a random network to approximate a target.

Methods (SPEC sections 2-3):

* ``"network"``: Theorem 1. For target layer ``W`` (``d_out x d_in``) and every ``(o, j)``,
  two SubsetSum problems with target ``W[o, j]`` over the products ``v_{o,j,k} u_{j,k}``,
  one for the copies with ``u > 0`` and one for ``u < 0``. Each sign half is capped at
  ``max_half`` copies (surplus copies are pruned) so every instance has the same size.
  All instances of a layer are one ``solve_subset_sum`` call.
* ``"single"``: the same network, but each sign half keeps at most one copy, the one whose
  product is closest to the target (Malach et al.-style baseline; error ~ 1/n).
* ``"direct"``: no network (the official code's Experiment 1): every weight of output row
  ``o`` is a subset sum of the same ``n`` i.i.d. ``U[low, high]`` coefficients.

Target kernels use the JAX convention ``(d_in, d_out)``: ``W = kernel.T``.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
from flax import struct

from lth_jax import random_net as rn
from lth_jax import subset_sum

METHODS = ("network", "single", "direct")


@struct.dataclass
class DirectCoefficients:
  """Coefficients of the ``"direct"`` variant: per layer ``(d_out, n)``, one row per output."""

  coefficients: list
  low: jax.Array
  high: jax.Array


@struct.dataclass
class Ticket:
  """The result of ``find_ticket``.

  Attributes:
    masks: 0/1 uint8 pytree shaped like the random network's params
      (``{"u": [...], "v": [...]}``); for ``"direct"``, ``{"coefficients": [...]}`` with
      one ``(d_out, d_in, n)`` mask per layer (which coefficients each weight sums).
    weight_errors: per layer ``(d_in, d_out)`` per-weight errors (for ``"network"``:
      the larger of the two sign halves' errors, the quantity the error bound uses).
    effective_kernels: per layer, ``(2, d_in, d_out)`` for network methods (the kept
      products' sums over the u > 0 and u < 0 copies), ``(d_in, d_out)`` for ``"direct"``.
    num_params_random: parameters of the random object (dense random network, or
      ``n`` coefficients per weight for ``"direct"``).
    num_params_kept: nonzero mask entries (for network methods, an ``M1`` entry counts
      only when its unit feeds some kept ``M2`` entry).
    method: the method used.
  """

  masks: dict
  weight_errors: list
  effective_kernels: list
  num_params_random: int = struct.field(pytree_node=False)
  num_params_kept: jax.Array
  method: str = struct.field(pytree_node=False)


def default_max_half(copies: int) -> int:
  """Instance size per sign half: about the mean plus one standard deviation of
  Binomial(copies, 1/2), so most halves keep all their copies while the
  meet-in-the-middle cost 2^(m/2) stays that of a typical half."""
  return max(1, min(copies, subset_sum.MAX_N, math.ceil(copies / 2 + math.sqrt(copies) / 2)))


def _check_target(target, layer_sizes=None):
  kernels = [jnp.asarray(k, jnp.float32) for k in target]
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
  if not any(isinstance(k, jax.core.Tracer) for k in kernels):
    for i, k in enumerate(kernels):
      if not bool(jnp.all(jnp.isfinite(k))):
        raise ValueError(f"target layer {i} contains NaN or Inf")
  return kernels


def target_layer_sizes(target: Sequence[jax.Array]) -> tuple[int, ...]:
  """``(d_0, ..., d_l)`` of a list of ``(d_in, d_out)`` kernels."""
  return (int(target[0].shape[0]),) + tuple(int(k.shape[1]) for k in target)


def _sign_halves(u, max_half):
  """Per input, the first ``max_half`` copies with u > 0 and with u <= 0.

  Args:
    u: ``(d_in, n)``.
  Returns:
    index ``(2, d_in, m)`` into the copy axis, valid ``(2, d_in, m)`` bool, and
    slot ``(d_in, n)``: where each copy sits in ``concat(halves)`` (``-1``: surplus).
  """
  d_in, n = u.shape
  m = max_half
  k = jnp.arange(n)
  pos = u > 0
  halves_idx, halves_valid = [], []
  slot = jnp.full((d_in, n), -1, jnp.int32)
  for h, member in enumerate((pos, ~pos)):
    order = jnp.argsort(jnp.where(member, k, n + k), axis=-1, stable=True)  # members first
    count = jnp.sum(member, axis=-1, keepdims=True)
    idx = order[:, :m] if m <= n else jnp.pad(order, ((0, 0), (0, m - n)))
    valid = jnp.arange(m)[None, :] < jnp.minimum(count, m)
    halves_idx.append(idx)
    halves_valid.append(valid)
    rank = jnp.argsort(order, axis=-1)  # position of copy k within this half's order
    slot = jnp.where(member & (rank < m), h * m + rank, slot)
  return jnp.stack(halves_idx), jnp.stack(halves_valid), slot


def _layer_instances(u, v, w, max_half):
  """The SubsetSum instances of one target layer.

  Args:
    u: ``(d_in, n)``; v: ``(d_out, d_in, n)``; w: target ``(d_out, d_in)``.
  Returns:
    targets ``(2, d_out, d_in)``, products ``(2, d_out, d_in, m)`` (zero where a half
    has fewer than ``m`` copies), valid ``(2, d_in, m)``, slot ``(d_in, n)``.
  """
  d_out, d_in, _ = v.shape
  idx, valid, slot = _sign_halves(u, max_half)  # (2, d_in, m)
  u_h = jnp.take_along_axis(u[None], idx, axis=-1)  # (2, d_in, m)
  v_h = jnp.take_along_axis(v[None], idx[:, None], axis=-1)  # (2, d_out, d_in, m)
  prods = jnp.where(valid[:, None], v_h * u_h[:, None], 0.0)
  targets = jnp.broadcast_to(w[None], (2, d_out, d_in))
  return targets, prods, valid, slot


def _single_choice(targets, prods, valid):
  """Per instance at most one product: the closest, if it beats the empty subset."""
  err = jnp.abs(targets[..., None] - prods)
  best = jnp.argmin(jnp.where(valid[:, None], err, jnp.inf), axis=-1)
  one = jax.nn.one_hot(best, prods.shape[-1], dtype=bool) & valid[:, None]
  better = jnp.sum(jnp.where(one, err, 0.0), -1) < jnp.abs(targets)
  return one & better[..., None]


def _layer_masks(chosen, targets, prods, valid, slot):
  """Masks, per-weight errors and effective kernels of one layer from chosen subsets.

  Returns:
    mask_u ``(d_in, n)`` uint8, mask_v ``(d_out, d_in, n)`` uint8,
    errors ``(d_out, d_in)``, effective ``(2, d_out, d_in)``.
  """
  chosen = chosen & valid[:, None]
  effective = jnp.sum(jnp.where(chosen, prods, 0.0), axis=-1)  # (2, d_out, d_in)
  errors = jnp.max(jnp.abs(effective - targets), axis=0)
  # Scatter back to copies: copy k of input j sits at slot[j, k] of concat(halves).
  flat = jnp.concatenate([chosen[0], chosen[1]], axis=-1)  # (d_out, d_in, 2m)
  gathered = jnp.take_along_axis(flat, jnp.maximum(slot, 0)[None], axis=-1)
  mask_v = gathered & (slot >= 0)[None]
  mask_u = jnp.any(mask_v, axis=0)
  return mask_u.astype(jnp.uint8), mask_v.astype(jnp.uint8), errors, effective


def _solve_grouped(problems):
  """One ``solve_subset_sum`` call per distinct instance size, over all layers' instances.

  Args:
    problems: list of (targets, products) per layer.
  Returns:
    list of chosen masks, shaped like each layer's products.
  """
  chosen = [None] * len(problems)
  sizes = sorted({p.shape[-1] for _, p in problems})
  for m in sizes:
    layers = [i for i, (_, p) in enumerate(problems) if p.shape[-1] == m]
    t = jnp.concatenate([problems[i][0].reshape(-1) for i in layers])
    c = jnp.concatenate([problems[i][1].reshape(-1, m) for i in layers])
    mask = subset_sum.solve_subset_sum(t, c).mask
    start = 0
    for i in layers:
      shape = problems[i][1].shape
      count = problems[i][0].size
      chosen[i] = mask[start:start + count].reshape(shape)
      start += count
  return chosen


def sample_direct_coefficients(
    key: chex.PRNGKey,
    target: Sequence[jax.Array],
    copies: int,
    low: float | None = None,
    high: float | None = None,
) -> DirectCoefficients:
  """The ``"direct"`` variant's random coefficients: per layer ``(d_out, copies)``
  i.i.d. ``U[low, high]``, default range = the target's global weight range."""
  kernels = _check_target(target)
  if copies < 1:
    raise ValueError(f"copies must be positive, got {copies}")
  all_w = jnp.concatenate([k.reshape(-1) for k in kernels])
  low = jnp.min(all_w) if low is None else jnp.asarray(low, jnp.float32)
  high = jnp.max(all_w) if high is None else jnp.asarray(high, jnp.float32)
  keys = jax.random.split(key, len(kernels))
  coefs = [jax.random.uniform(k_, (kern.shape[1], copies), jnp.float32, low, high)
           for k_, kern in zip(keys, kernels)]
  return DirectCoefficients(coefs, low, high)


def find_ticket(
    random_net: rn.RandomNetwork | DirectCoefficients,
    target: Sequence[jax.Array],
    method: str = "network",
    *,
    max_half: int | Sequence[int] | None = None,
) -> Ticket:
  """Masks that prune ``random_net`` to approximate ``target``.

  Args:
    random_net: a ``RandomNetwork`` (methods ``"network"``, ``"single"``) or
      ``DirectCoefficients`` (method ``"direct"``).
    target: list of kernels ``(d_in, d_out)``.
    method: ``"network"``, ``"single"`` or ``"direct"``.
    max_half: per-sign-half instance size cap (``"network"``), one int or one per layer;
      default ``default_max_half(copies)``.

  Returns:
    Ticket (masks 0/1 uint8, per-weight errors, effective kernels, parameter counts).
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if method == "direct":
    if not isinstance(random_net, DirectCoefficients):
      raise ValueError("method 'direct' needs DirectCoefficients "
                       "(sample_direct_coefficients), not a RandomNetwork")
    return _direct_ticket(random_net, target)
  if not isinstance(random_net, rn.RandomNetwork):
    raise ValueError(f"method {method!r} needs a RandomNetwork (sample_random_network)")
  kernels = _check_target(target, random_net.layer_sizes)
  copies = random_net.copies
  if max_half is None:
    caps = [default_max_half(n) for n in copies]
  elif isinstance(max_half, int):
    caps = [max_half] * len(copies)
  else:
    caps = list(max_half)
  if len(caps) != len(copies) or any(c < 1 or c > subset_sum.MAX_N for c in caps):
    raise ValueError(f"max_half must be in [1, {subset_sum.MAX_N}] per layer, got {max_half}")
  if method == "single":
    caps = list(copies)  # one product per half: no instance-size cost to cap
  masks, errors, effective, kept = _network_ticket(
      random_net.params, kernels, method=method, caps=tuple(caps))
  return Ticket(masks, errors, effective, rn.num_params(random_net), kept, method)


@functools.partial(jax.jit, static_argnames=("method", "caps"))
def _network_ticket(params, kernels, method, caps):
  """All layers of a network ticket in one program (one SubsetSum call per layer)."""
  layers = [_layer_instances(u, v, k.T, m)
            for u, v, k, m in zip(params["u"], params["v"], kernels, caps)]
  if method == "network":
    chosen = _solve_grouped([(t, p) for t, p, _, _ in layers])
  else:
    chosen = [_single_choice(t, p, valid) for t, p, valid, _ in layers]
  masks_u, masks_v, errors, effective = [], [], [], []
  kept = jnp.int32(0)
  for ch, (t, p, valid, slot) in zip(chosen, layers):
    mu, mv, err, eff = _layer_masks(ch, t, p, valid, slot)
    masks_u.append(mu)
    masks_v.append(mv)
    errors.append(err.T)
    effective.append(jnp.transpose(eff, (0, 2, 1)))
    kept = kept + jnp.sum(mu, dtype=jnp.int32) + jnp.sum(mv, dtype=jnp.int32)
  return {"u": masks_u, "v": masks_v}, errors, effective, kept


def _direct_ticket(coefs: DirectCoefficients, target) -> Ticket:
  kernels = _check_target(target)
  if len(coefs.coefficients) != len(kernels):
    raise ValueError(f"{len(coefs.coefficients)} coefficient layers for {len(kernels)} "
                     "target layers")
  total = 0
  for c, k in zip(coefs.coefficients, kernels):
    if c.ndim != 2 or c.shape[0] != k.shape[1]:
      raise ValueError(f"coefficients {c.shape} do not match kernel {k.shape} (need d_out rows)")
    total += int(k.size) * int(c.shape[1])
  masks, errors, approx, kept = _direct_solve(coefs.coefficients, kernels)
  return Ticket({"coefficients": masks}, errors, approx, total, kept, "direct")


@jax.jit
def _direct_solve(coefficients, kernels):
  """All layers' weights in one solver call (rows of a layer share their coefficients)."""
  n = coefficients[0].shape[1]
  if any(c.shape[1] != n for c in coefficients):
    raise ValueError("all layers need the same number of coefficients per weight")
  t = jnp.concatenate([k.T.reshape(-1) for k in kernels])
  c = jnp.concatenate([jnp.broadcast_to(c[:, None, :], (k.shape[1], k.shape[0], n)).reshape(-1, n)
                       for c, k in zip(coefficients, kernels)])
  res = subset_sum.solve_subset_sum(t, c)
  masks, errors, approx = [], [], []
  start = 0
  for k in kernels:
    d_in, d_out = k.shape
    rows = slice(start, start + d_in * d_out)
    start += d_in * d_out
    mask = res.mask[rows].reshape(d_out, d_in, n)
    masks.append(mask.astype(jnp.uint8))
    errors.append(res.error[rows].reshape(d_out, d_in).T)
    values = jnp.sum(jnp.where(mask, c[rows].reshape(d_out, d_in, n), 0.0), axis=-1)
    approx.append(values.T)
  kept = jnp.sum(res.mask, dtype=jnp.int32)
  return masks, errors, approx, kept
