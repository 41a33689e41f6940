"""Finding tickets: masks that prune a random network to approximate a target.

Methods (SPEC sections 2-3):

* ``"network"``: Theorem 1. For target layer ``W`` (``d_out x d_in``) and every ``(o, j)``,
  two SubsetSum problems with target ``W[o, j]`` over the products ``v_{o,j,k} u_{j,k}``,
  one for the copies with ``u > 0`` and one for ``u < 0``. Each sign half is capped at
  ``max_half`` copies (surplus copies are pruned) so every instance has the same size.
  All instances of one size (over all layers) are one solver call.
* ``"single"``: the same network, but each sign half keeps at most one copy, the one whose
  product is closest to the target (Malach et al.-style baseline; error ~ 1/n).
* ``"direct"``: no network (the official code's Experiment 1): every weight of output row
  ``o`` is a subset sum of the same ``n`` i.i.d. ``U[low, high]`` coefficients.

The SubsetSum solver is pluggable (``find_ticket(..., objective=, epsilon=, solve_fn=)``):
``"min_error"`` (``solve_subset_sum``, the default), ``"fewest_terms"``
(``fewest_terms.solve_fewest_terms``: the fewest products within ``epsilon``), or any
``solve_fn(targets (B,), coefficients (B, m))`` returning ``.mask`` and ``.error`` (e.g. a
sharded or a blocked host-side solver). The steps around the solver are public building
blocks too (``check_target``, ``layer_instances``, ``single_choice``, ``layer_masks``), for
callers that vmap them over grids (``lth_jax.sweep``).

Target kernels use the JAX convention ``(d_in, d_out)``: ``W = kernel.T``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
from flax import struct

from lth_jax import _checks
from lth_jax import random_net as rn
from lth_jax import objectives
from lth_jax import subset_sum

METHODS = ("network", "single", "direct")
OBJECTIVES = objectives.OBJECTIVES
SolveFn = objectives.SolveFn
objective_solver = objectives.objective_solver
objective_max_n = objectives.objective_max_n


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


class LayerInstances(NamedTuple):
  """The ``2 * d_out * d_in`` SubsetSum instances of one target layer (``"network"``):
  per weight ``(o, j)`` and sign half ``h`` (``u > 0``, ``u <= 0``), target ``W[o, j]``
  over the products ``v[o, j, k] u[j, k]`` of the half's copies ``k``.

  Attributes:
    targets: ``(2, d_out, d_in)``, ``W`` once per half.
    products: ``(2, d_out, d_in, m)``, zero where a half has fewer than ``m`` copies.
    valid: ``(2, d_in, m)`` bool, the slots holding a copy.
    copy_index: ``(2, d_in, m)`` int, which copy of input ``j`` sits in each slot
      (members in copy order; meaningless where not ``valid``).
    slot: ``(d_in, n)`` int32, where each copy sits in ``concat(halves)`` (``-1``: not in
      any instance, the half's surplus beyond ``m``).
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


def check_target(target: Sequence[jax.Array],
                 layer_sizes: Sequence[int] | None = None) -> list[jax.Array]:
  """Validates a target: non-empty ``(d_in, d_out)`` kernels that chain, finite (when
  concrete), and of ``layer_sizes`` when given. Returns the kernels as float32.

  Raises:
    ValueError: naming the offending layer.
  """
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
  _checks.check_finite([(f"layer {i}", k) for i, k in enumerate(kernels)], "target")
  return kernels


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


def layer_instances(u: jax.Array, v: jax.Array, kernel: jax.Array,
                    max_half: int) -> LayerInstances:
  """The SubsetSum instances of one target layer (each sign half capped at ``max_half``).

  Args:
    u: ``(d_in, n)``; v: ``(d_out, d_in, n)``: one layer of ``RandomNetwork.params``.
    kernel: the target layer ``(d_in, d_out)``.
    max_half: ``m``, the instance size (static): the first ``m`` member copies per half.
  Returns:
    ``LayerInstances`` (``(2, d_out, d_in)`` targets, ``(..., m)`` products).
  """
  d_out, d_in, _ = v.shape
  w = kernel.T  # (d_out, d_in)
  idx, valid, slot = _sign_halves(u, max_half)  # (2, d_in, m)
  u_h = jnp.take_along_axis(u[None], idx, axis=-1)  # (2, d_in, m)
  v_h = jnp.take_along_axis(v[None], idx[:, None], axis=-1)  # (2, d_out, d_in, m)
  prods = jnp.where(valid[:, None], v_h * u_h[:, None], 0.0)
  targets = jnp.broadcast_to(w[None], (2, d_out, d_in))
  return LayerInstances(targets, prods, valid, idx, slot)


def single_choice(targets: jax.Array, prods: jax.Array, valid: jax.Array) -> jax.Array:
  """The ``"single"`` method's subsets: per instance at most one product, the closest,
  if it beats the empty subset.

  Args:
    targets ``(2, d_out, d_in)``, prods ``(2, d_out, d_in, m)``, valid ``(2, d_in, m)``
    (the fields of ``LayerInstances``).
  Returns:
    chosen ``(2, d_out, d_in, m)`` bool.
  """
  err = jnp.abs(targets[..., None] - prods)
  best = jnp.argmin(jnp.where(valid[:, None], err, jnp.inf), axis=-1)
  one = jax.nn.one_hot(best, prods.shape[-1], dtype=bool) & valid[:, None]
  better = jnp.sum(jnp.where(one, err, 0.0), -1) < jnp.abs(targets)
  return one & better[..., None]


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
  # Scatter back to copies: copy k of input j sits at slot[j, k] of concat(halves).
  flat = jnp.concatenate([chosen[0], chosen[1]], axis=-1)  # (d_out, d_in, 2m)
  gathered = jnp.take_along_axis(flat, jnp.maximum(slot, 0)[None], axis=-1)
  mask_v = gathered & (slot >= 0)[None]
  mask_u = jnp.any(mask_v, axis=0)
  return LayerMasks(mask_u.astype(jnp.uint8), mask_v.astype(jnp.uint8), errors, effective)


def sample_direct_coefficients(
    key: chex.PRNGKey,
    target: Sequence[jax.Array],
    copies: int,
    low: float | None = None,
    high: float | None = None,
) -> DirectCoefficients:
  """The ``"direct"`` variant's random coefficients: per layer ``(d_out, copies)``
  i.i.d. ``U[low, high]``, default range = the target's global weight range."""
  kernels = check_target(target)
  if not _checks.is_int(copies) or copies < 1:
    raise ValueError(f"copies must be a positive int, got {copies!r}")
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
    objective: str = "min_error",
    epsilon: float | None = None,
    solve_fn: SolveFn | None = None,
) -> Ticket:
  """Masks that prune ``random_net`` to approximate ``target``.

  Args:
    random_net: a ``RandomNetwork`` (methods ``"network"``, ``"single"``) or
      ``DirectCoefficients`` (method ``"direct"``).
    target: list of kernels ``(d_in, d_out)``.
    method: ``"network"``, ``"single"`` or ``"direct"``.
    max_half: per-sign-half instance size cap (``"network"``), one int or one per layer;
      default ``default_max_half(copies)``.
    objective: which subset each SubsetSum instance gets (``objective_solver``):
      ``"min_error"`` (closest) or ``"fewest_terms"`` (fewest terms within ``epsilon``).
      ``"single"`` solves no SubsetSum and ignores it.
    epsilon: the per-instance tolerance of ``"fewest_terms"``.
    solve_fn: instead of ``objective``, a solver ``(targets (B,), coefficients (B, m))``
      -> result with ``.mask`` bool ``(B, m)`` and ``.error`` ``(B,)`` (``"direct"``
      reads it). It is called outside ``jit`` with all layers' instances of one size
      at once (one call per distinct size), so it may be jitted, sharded or host code.
      Per-instance results must not depend on the batch they come in.

  Returns:
    Ticket (masks 0/1 uint8, per-weight errors, effective kernels, parameter counts).

  Raises:
    ValueError: an unknown method or objective, a bad ``max_half``, a target that is
      empty, does not chain or does not match the network's ``layer_sizes``, params of
      the wrong shapes, or (for concrete arrays) NaN/Inf in the target, the random
      network's ``u``/``v`` or the direct coefficients.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if solve_fn is not None and objective != "min_error":
    raise ValueError(f"give objective ({objective!r}) or solve_fn, not both")
  limit = objective_max_n(objective)  # (validates the name)
  if solve_fn is None and method != "single":
    solve_fn = objective_solver(objective, epsilon)
  if method == "direct":
    if not isinstance(random_net, DirectCoefficients):
      raise ValueError("method 'direct' needs DirectCoefficients "
                       "(sample_direct_coefficients), not a RandomNetwork")
    return _direct_ticket(random_net, target, solve_fn)
  if not isinstance(random_net, rn.RandomNetwork):
    raise ValueError(f"method {method!r} needs a RandomNetwork (sample_random_network)")
  kernels = check_target(target, random_net.layer_sizes)
  check_random_network(random_net)
  copies = random_net.copies
  if max_half is None:
    caps = [default_max_half(n) for n in copies]
  elif isinstance(max_half, int):
    caps = [max_half] * len(copies)
  else:
    caps = list(max_half)
  if len(caps) != len(copies) or any(c < 1 or c > limit for c in caps):
    raise ValueError(f"max_half must be in [1, {limit}] per layer, got {max_half}")
  if method == "single":
    caps = list(copies)  # one product per half: no instance-size cost to cap
  layers = _network_instances(random_net.params, kernels, caps=tuple(caps))
  if method == "network":
    chosen = objectives.solve_masks([(inst.targets, inst.products) for inst in layers], solve_fn)
  else:
    chosen = _single_choices(layers)
  masks, errors, effective, kept = _network_assemble(chosen, layers)
  return Ticket(masks, errors, effective, rn.num_params(random_net), kept, method)


# A network ticket in three steps: instances, the solver (outside jit, any solve_fn),
# masks. Per-instance results do not depend on the steps' boundaries.
@functools.partial(jax.jit, static_argnames=("caps",))
def _network_instances(params, kernels, caps):
  return [layer_instances(u, v, k, m)
          for u, v, k, m in zip(params["u"], params["v"], kernels, caps)]


@jax.jit
def _single_choices(layers):
  return [single_choice(inst.targets, inst.products, inst.valid) for inst in layers]


@jax.jit
def _network_assemble(chosen, layers):
  """Masks, errors, effective kernels of every layer and the kept-parameter count."""
  masks_u, masks_v, errors, effective = [], [], [], []
  kept = jnp.int32(0)
  for ch, inst in zip(chosen, layers):
    mu, mv, err, eff = layer_masks(ch, inst.targets, inst.products, inst.valid, inst.slot)
    masks_u.append(mu)
    masks_v.append(mv)
    errors.append(err.T)
    effective.append(jnp.transpose(eff, (0, 2, 1)))
    kept = kept + jnp.sum(mu, dtype=jnp.int32) + jnp.sum(mv, dtype=jnp.int32)
  return {"u": masks_u, "v": masks_v}, errors, effective, kept


def _direct_ticket(coefs: DirectCoefficients, target, solve_fn) -> Ticket:
  kernels = check_target(target)
  if len(coefs.coefficients) != len(kernels):
    raise ValueError(f"{len(coefs.coefficients)} coefficient layers for {len(kernels)} "
                     "target layers")
  total = 0
  for i, (c, k) in enumerate(zip(coefs.coefficients, kernels)):
    if jnp.ndim(c) != 2 or c.shape[0] != k.shape[1]:
      raise ValueError(f"coefficients {jnp.shape(c)} do not match kernel {k.shape} (need "
                       "d_out rows)")
    if c.shape[1] < 1:
      raise ValueError(f"coefficient layer {i} has no coefficients per weight: {c.shape}")
    total += int(k.size) * int(c.shape[1])
  if len({int(c.shape[1]) for c in coefs.coefficients}) != 1:
    raise ValueError("all layers need the same number of coefficients per weight")
  _checks.check_finite([(f"[{i}]", c) for i, c in enumerate(coefs.coefficients)],
                "direct coefficients")
  t, c = _direct_instances(coefs.coefficients, kernels)
  res = solve_fn(t, c)  # all layers' weights in one solver call
  masks, errors, approx, kept = _direct_assemble(res.mask, res.error, c, kernels)
  return Ticket({"coefficients": masks}, errors, approx, total, kept, "direct")


@jax.jit
def _direct_instances(coefficients, kernels):
  """Targets ``(B,)`` and coefficients ``(B, n)`` of every weight, (layer, o, j) order
  (rows of a layer share their coefficients)."""
  n = coefficients[0].shape[1]
  t = jnp.concatenate([k.T.reshape(-1) for k in kernels])
  c = jnp.concatenate([jnp.broadcast_to(c[:, None, :], (k.shape[1], k.shape[0], n)).reshape(-1, n)
                       for c, k in zip(coefficients, kernels)])
  return t, c


@jax.jit
def _direct_assemble(mask, error, c, kernels):
  """Per-layer masks, errors, approximated kernels and the kept count from the solution
  (``mask (B, n)``, ``error (B,)``) of ``_direct_instances``' ``c (B, n)``."""
  n = c.shape[1]
  masks, errors, approx = [], [], []
  start = 0
  for k in kernels:
    d_in, d_out = k.shape
    rows = slice(start, start + d_in * d_out)
    start += d_in * d_out
    layer_mask = mask[rows].reshape(d_out, d_in, n)
    masks.append(layer_mask.astype(jnp.uint8))
    errors.append(error[rows].reshape(d_out, d_in).T)
    values = jnp.sum(jnp.where(layer_mask, c[rows].reshape(d_out, d_in, n), 0.0), axis=-1)
    approx.append(values.T)
  kept = jnp.sum(mask, dtype=jnp.int32)
  return masks, errors, approx, kept
