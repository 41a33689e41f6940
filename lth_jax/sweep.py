"""Width x seed sweeps of the ticket constructions, each whole grid as ONE jitted XLA program.

``sweep(target, widths, num_seeds, method, key=...)`` measures, for every (width, seed):
max and mean per-weight error, the fraction of weights within ``epsilon``, the sup of
``||f(x) - g(x)||_2`` over the unit ball (random unit vectors + projected gradient ascent,
``evaluation.sup_output_error``), the analytic upper bound, accuracy on a dataset when one
is given, parameter counts of the random object and of the ticket, and the
over-parameterisation factors. ``sweep_targets`` does several targets and methods at once,
still as one program (all SubsetSum instances of one size go to one solver call).

How the grid becomes one program (no Python loop over widths or seeds around jitted calls):

* Nested random networks: per seed, the WIDEST network is sampled once; the network with
  ``w`` copies is exactly its first ``w`` copies (``random_net`` draws copy ``k`` from
  ``fold_in(key, k)``). For width ``w``, each sign half takes its member copies among the
  first ``w`` (at most ``cap_w = default_max_half(w)`` of them, as ``find_ticket`` does),
  zero-padded to the common instance size ``m = default_max_half(max width)``: a zero
  coefficient never changes the set of subset sums, so every width's instance keeps its
  optimum. ``width`` and ``cap_w`` are traced, so one function is vmapped over seeds and
  widths. For ``"single"`` the halves are not capped (``m`` = max width), as in
  ``find_ticket``.
* ``"direct"``: per seed and layer, coefficient ``k`` of output row ``o`` is drawn from
  ``fold_in(key, k)`` (``nested_direct_coefficients``), so the first ``w`` coefficients of the
  widest draw are the width-``w`` draw; coefficients beyond ``w`` are zeroed.
* All instances of one size (every target, method, width and seed) go to ONE
  ``solve_subset_sum`` call.
* Evaluation (sup error, accuracy) is a ``lax.map`` over all grid points of a target (every
  method) inside the same program, so memory stays that of a few grid points. A ticket is
  evaluated through its per-layer kernel pair (``two_kernel_forward``): for the network
  methods this is the pruned depth-2l network's output exactly (``relu(u z) = u relu(z)`` for
  ``u > 0``, ``|u| relu(-z)`` for ``u < 0``; tested against ``structured_forward``), without
  the copy axis. The analytic bound is computed on the host from the per-weight errors.

Per width, the results equal ``find_ticket`` on ``truncate_copies(widest, w)`` (errors up to
float32 rounding of the solver's fixed-point grid; ties may pick different but equally good
subsets). Seeds: target ``t``, seed ``s`` uses ``fold_in(fold_in(key, t), s)``; the networks of
``"network"`` and ``"single"`` are the same draw, and so are the evaluation points of all
methods, so methods are compared on identical randomness.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import time
from collections.abc import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lth_jax import construction
from lth_jax import evaluation
from lth_jax import objectives
from lth_jax import random_net as rn
from lth_jax import subset_sum
from lth_jax import theory

METHODS = construction.METHODS
# Traces of the grid program (one per distinct static configuration); tests read it.
TRACE_COUNTS: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """Measurements of one (target, method) over a width x seed grid (numpy, host side).

  Attributes:
    method: ``"network"``, ``"single"`` or ``"direct"``.
    layer_sizes: the target's ``(d_0, ..., d_l)``.
    widths: ``(W,)`` copies per input (``"direct"``: coefficients per weight).
    num_seeds: ``S``.
    epsilon: the per-weight threshold of ``fraction_within_epsilon``.
    max_weight_error, mean_weight_error, fraction_within_epsilon: ``(W, S)`` over all
      weights of all layers (``"network"``/``"single"``: a weight's error is the larger of
      its two sign halves' errors).
    sup_error: ``(W, S)`` estimate (from below) of ``sup_{||x||<=1} ||f(x) - g(x)||_2``.
    bound: ``(W, S)`` analytic upper bound on the same sup (``evaluation.analytic_bound``).
    accuracy: ``(W, S)`` ticket accuracy on the given dataset, or ``None``.
    target_accuracy: the target's accuracy on that dataset, or ``None``.
    params_random: ``(W,)`` parameters of the random object: the dense random network
      (every entry of its ``2l`` kernels), or ``width`` coefficients per weight (direct).
    params_kept: ``(W, S)`` nonzero mask entries of the ticket.
    target_params: weights of the target.
    width_factor: ``(W,)`` random-network width / target width, i.e.
      ``max_i(w d_{i-1}) / max_i d_i`` (``"direct"``: ``w``, coefficients per weight).
    param_factor: ``(W,)`` ``params_random / target_params``.
  """

  method: str
  layer_sizes: tuple
  widths: np.ndarray
  num_seeds: int
  epsilon: float
  max_weight_error: np.ndarray
  mean_weight_error: np.ndarray
  fraction_within_epsilon: np.ndarray
  sup_error: np.ndarray
  bound: np.ndarray
  accuracy: np.ndarray | None
  target_accuracy: float | None
  params_random: np.ndarray
  params_kept: np.ndarray
  target_params: int
  width_factor: np.ndarray
  param_factor: np.ndarray

  def rows(self, **extra) -> list[dict]:
    """One dict per (width, seed), plain Python types; ``extra`` is added to every row."""
    out = []
    for i, w in enumerate(self.widths):
      for s in range(self.num_seeds):
        row = dict(extra)
        row.update(
            method=self.method, layer_sizes=list(self.layer_sizes), width=int(w), seed=s,
            epsilon=float(self.epsilon),
            max_weight_error=float(self.max_weight_error[i, s]),
            mean_weight_error=float(self.mean_weight_error[i, s]),
            fraction_within_epsilon=float(self.fraction_within_epsilon[i, s]),
            sup_error=float(self.sup_error[i, s]), bound=float(self.bound[i, s]),
            accuracy=None if self.accuracy is None else float(self.accuracy[i, s]),
            target_accuracy=self.target_accuracy,
            params_random=int(self.params_random[i]), params_kept=int(self.params_kept[i, s]),
            target_params=int(self.target_params), width_factor=float(self.width_factor[i]),
            param_factor=float(self.param_factor[i]))
        out.append(row)
    return out


# --------------------------------------------------------------------------------------
# Static bookkeeping: sizes, caps, parameter counts.
# --------------------------------------------------------------------------------------


def instance_size(method: str, widths: Sequence[int], max_half: int | None = None) -> int:
  """The common padded instance size of a grid: per sign half for ``"network"`` (capped as
  ``find_ticket`` caps it) and ``"single"`` (every copy; no solver call), coefficients per
  weight for ``"direct"``."""
  widest = max(widths)
  if method == "network":
    return max_half if max_half is not None else construction.default_max_half(widest)
  return widest


def _caps(method, widths, max_half):
  if method == "network":
    if max_half is not None:
      return tuple(max_half for _ in widths)
    return tuple(construction.default_max_half(w) for w in widths)
  return tuple(widths)  # single: every member copy; direct: unused


def random_params(layer_sizes: Sequence[int], width: int, method: str) -> int:
  """Parameters of the random object at ``width`` copies (see ``SweepResult``); the same
  count as ``theory.random_params``, which the summary compares it with."""
  return theory.random_params(layer_sizes, width, method)


def width_factor(layer_sizes: Sequence[int], width: int, method: str) -> float:
  """Random-network width / target width (``"direct"``: ``width``)."""
  sizes = tuple(layer_sizes)
  if method == "direct":
    return float(width)
  return max(width * a for a in sizes[:-1]) / max(sizes)


def _check_grid(widths, num_seeds, method, epsilon, max_half):
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  widths = tuple(int(w) for w in widths)
  if not widths or any(w < 1 for w in widths):
    raise ValueError(f"widths must be a non-empty list of positive integers, got {widths}")
  if len(set(widths)) != len(widths):
    raise ValueError(f"widths must be distinct, got {widths}")
  if int(num_seeds) < 1:
    raise ValueError(f"num_seeds must be positive, got {num_seeds}")
  if not 0.0 < float(epsilon) < 1.0:
    raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
  if method == "direct" and max(widths) > subset_sum.MAX_N:
    raise ValueError(f"method 'direct' solves one instance of `width` coefficients per "
                     f"weight; widths up to {subset_sum.MAX_N} (solver MAX_N), got "
                     f"{max(widths)}")
  if max_half is not None and not 1 <= int(max_half) <= subset_sum.MAX_N:
    raise ValueError(f"max_half must be in [1, {subset_sum.MAX_N}], got {max_half}")
  return widths


# --------------------------------------------------------------------------------------
# Random draws (nested in the width).
# --------------------------------------------------------------------------------------


def nested_direct_coefficients(key: chex.PRNGKey, target: Sequence[jax.Array],
                               copies: int) -> construction.DirectCoefficients:
  """``"direct"`` coefficients, nested in ``copies``: per layer ``(d_out, copies)`` i.i.d.
  ``U[low, high]`` (the target's global weight range), coefficient ``k`` of every row drawn
  from ``fold_in(layer_key, k)``, so the first ``w`` columns ARE the ``copies = w`` draw."""
  kernels = [jnp.asarray(k, jnp.float32) for k in target]
  all_w = jnp.concatenate([k.reshape(-1) for k in kernels])
  low, high = jnp.min(all_w), jnp.max(all_w)
  coefs = []
  for i, k in enumerate(kernels):
    layer_key = jax.random.fold_in(key, i)
    draw = lambda c, d=k.shape[1], lk=layer_key: jax.random.uniform(
        jax.random.fold_in(lk, c), (d,), jnp.float32, low, high)
    coefs.append(jax.vmap(draw, out_axes=1)(jnp.arange(copies)))
  return construction.DirectCoefficients(coefs, low, high)


def _seed_keys(key, target_index, num_seeds):
  """``(num_seeds,)`` keys of target ``target_index``: seed ``s`` is
  ``fold_in(fold_in(key, target_index), s)``."""
  base = jax.random.fold_in(key, target_index)
  return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(num_seeds))


# --------------------------------------------------------------------------------------
# One grid point's instances (vmapped over seeds and widths by the callers).
# --------------------------------------------------------------------------------------


def _network_point(u, v, kernel, width, cap, m):
  """SubsetSum instances of one layer at one (width, seed), size ``m`` (zero-padded).

  Args:
    u: ``(d_in, W)``, v: ``(d_out, d_in, W)``: the seed's widest network, one layer.
    kernel: ``(d_in, d_out)``; width, cap: traced int32 scalars.
  Returns:
    targets ``(2, d_out, d_in)``, products ``(2, d_out, d_in, m)``, valid ``(2, d_in, m)``,
    slot ``(d_in, W)``.
  """
  targets, prods, valid, idx, slot = construction.layer_instances(u, v, kernel, m)
  # Members are ordered by copy index, so those among the first `width` copies are a prefix.
  valid = valid & (idx < width) & (jnp.arange(m) < cap)
  prods = jnp.where(valid[:, None], prods, 0.0)
  return targets, prods, valid, slot


def _grid_network(params, kernels, widths, caps, m):
  """All layers' instances over the grid: leaves with leading ``(W, S)``."""
  per_point = lambda u, v, k, w, c: _network_point(u, v, k, w, c, m)
  over_seeds = jax.vmap(per_point, in_axes=(0, 0, None, None, None))
  over_grid = jax.vmap(over_seeds, in_axes=(None, None, None, 0, 0))
  return [over_grid(u, v, k, widths, caps)
          for u, v, k in zip(params["u"], params["v"], kernels)]


def _direct_point(coef, kernel, width):
  """Direct instances of one layer: targets ``(d_out, d_in)``, coefficients
  ``(d_out, d_in, Wd)`` (row ``o``'s first ``width`` coefficients, the rest zero)."""
  coef = jnp.where(jnp.arange(coef.shape[-1]) < width, coef, 0.0)
  w = kernel.T
  return w, jnp.broadcast_to(coef[:, None, :], w.shape + coef.shape[-1:])


def _grid_direct(coefs, kernels, widths):
  per_point = lambda c, k, w: _direct_point(c, k, w)
  over_seeds = jax.vmap(per_point, in_axes=(0, None, None))
  over_grid = jax.vmap(over_seeds, in_axes=(None, None, 0))
  return [over_grid(c, k, widths) for c, k in zip(coefs, kernels)]


# --------------------------------------------------------------------------------------
# Metrics and evaluation.
# --------------------------------------------------------------------------------------


def _weight_stats(errors, epsilon):
  """errors: list of per-layer ``(..., a, b)`` -> max, mean, fraction <= epsilon."""
  flat = jnp.concatenate([e.reshape(e.shape[:2] + (-1,)) for e in errors], axis=-1)
  return (jnp.max(flat, -1), jnp.mean(flat, -1),
          jnp.mean((flat <= epsilon).astype(jnp.float32), -1))


def _accuracy(g, images, labels, batch):
  """Fraction of ``argmax g(images) == labels``, ``lax.map`` over example batches."""
  n = images.shape[0]
  pad = (-n) % batch
  x = jnp.pad(images, ((0, pad), (0, 0))).reshape(-1, batch, images.shape[-1])
  y = jnp.pad(labels, (0, pad), constant_values=-1).reshape(-1, batch)
  correct = jax.lax.map(lambda xy: jnp.sum(jnp.argmax(g(xy[0]), -1) == xy[1]), (x, y))
  return jnp.sum(correct) / n


def two_kernel_forward(layers: Sequence[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
  """A pruned network through its per-layer kernel pair ``(P, N)``, both ``(d_in, d_out)``:
  ``z -> relu(z) @ P - relu(-z) @ N``, with ReLU between layers (not after the last).

  For a network ticket, ``P`` (``N``) is the sum over the kept ``u > 0`` (``u < 0``) copies
  of the kept products ``v u``: since ``relu(u z) = u relu(z)`` for ``u > 0`` and
  ``|u| relu(-z)`` for ``u < 0``, this equals the pruned depth-2l network's output exactly
  (``evaluation.structured_forward``, up to float32 summation order) without its copy axis.
  For ``"direct"``, ``P = N = K`` gives ``z @ K``.
  """
  for i, (pos, neg) in enumerate(layers):
    x = jax.nn.relu(x) @ pos - jax.nn.relu(-x) @ neg
    if i + 1 < len(layers):
      x = jax.nn.relu(x)
  return x


def _evaluate(kernels, layers, seeds, seed_keys, data, opts):
  """sup error (and accuracy) of every grid point, one ``lax.map`` over the points.

  Args:
    kernels: the target. layers: per layer ``(P, N)`` with a leading point axis ``G``.
    seeds: ``(G,)`` seed of each point (its evaluation key). data: ``(images, labels)``.
  Returns:
    sup ``(G,)``, accuracy ``(G,)`` (NaN without data).
  """
  f = lambda x: evaluation.forward(kernels, x)
  num = seeds.shape[0]
  batch = opts["eval_batch"]
  pad = (-num) % batch  # no remainder: lax.map would compile its body twice
  pad_fn = lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, 0)]) if pad else a
  layers, seeds = jax.tree.map(pad_fn, (layers, seeds))

  def one(args):
    point, seed = args
    g = lambda x: two_kernel_forward(point, x)
    key = jax.random.fold_in(seed_keys[seed], 2)
    sup, _ = evaluation.sup_output_error(f, g, kernels[0].shape[0], key, opts["num_points"],
                                         opts["ascent_steps"])
    acc = jnp.float32(jnp.nan) if data is None else _accuracy(g, *data, opts["data_batch"])
    return sup, acc

  sup, acc = jax.lax.map(one, (layers, seeds), batch_size=batch)
  return sup[:num], acc[:num]


# --------------------------------------------------------------------------------------
# The program.
# --------------------------------------------------------------------------------------


def _flat(a):
  """``(W, S, ...)`` -> ``(W * S, ...)``."""
  return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


@functools.partial(jax.jit, static_argnames=("specs", "num_seeds", "opts"))
def _grid_program(targets, key, epsilon, data, *, specs, num_seeds, opts):
  """Every (target, method) spec's whole width x seed grid, one XLA program: the seeds
  ``0 .. num_seeds - 1`` of every target through ``_grid_body``."""
  TRACE_COUNTS["grid_program"] += 1
  seed_keys = [_seed_keys(key, t, num_seeds) for t in range(len(targets))]
  return _grid_body(targets, epsilon, data, seed_keys, specs=specs, opts=opts)


def _grid_body(targets, epsilon, data, seed_keys, *, specs, opts):
  """The grid program (unjitted) for the given seed keys.

  Args:
    targets: tuple of targets (lists of ``(d_in, d_out)`` kernels).
    epsilon: float32 scalar. data: ``(images, labels)`` or None.
    seed_keys: per target ``(S,)`` typed keys (a list, or a ``(T, S)`` array): the seeds
      of the grid, e.g. one device's block of them (``lth_jax.distributed``).
    specs: tuple of ``(target_index, method, widths, caps, m)``; opts: hashable tuple of
      ``(name, value)`` pairs (num_points, ascent_steps, eval_batch, data_batch,
      distribution).
  Returns:
    per spec a dict of ``(W, S, ...)`` grids (per-weight errors included, so the host can
    compute the analytic bound) and the per-target ``target_accuracy``.
  """
  opts = dict(opts)
  sizes = [construction.target_layer_sizes(t) for t in targets]
  num_seeds = seed_keys[0].shape[0]

  # Widest draws, one per target and seed (network and single share the networks).
  nets, coefs = {}, {}
  for t, method, widths, _, _ in specs:
    if method == "direct":
      coefs[t] = max(coefs.get(t, 0), max(widths))
    else:
      nets[t] = max(nets.get(t, 0), max(widths))
  nets = {t: jax.vmap(lambda k, t=t, w=w: rn.sample_random_network(
      jax.random.fold_in(k, 0), sizes[t], w, opts["distribution"]).params)(seed_keys[t])
          for t, w in nets.items()}
  coefs = {t: jax.vmap(lambda k, t=t, w=w: nested_direct_coefficients(
      jax.random.fold_in(k, 1), targets[t], w).coefficients)(seed_keys[t])
           for t, w in coefs.items()}

  # Instances of every spec, vmapped over widths and seeds; then one solver call per size.
  grids, problems, owners = [], [], []
  for j, (t, method, widths, caps, m) in enumerate(specs):
    w_arr = jnp.asarray(widths, jnp.int32)
    if method == "direct":
      grid = _grid_direct(coefs[t], targets[t], w_arr)
      problems += grid
      owners += [j] * len(grid)
    else:
      grid = _grid_network(nets[t], targets[t], w_arr, jnp.asarray(caps, jnp.int32), m)
      if method == "network":
        problems += [(tg, pr) for tg, pr, _, _ in grid]
        owners += [j] * len(grid)
    grids.append(grid)
  solved = collections.defaultdict(list)
  for j, sol in zip(owners, objectives.solve_grouped(problems, subset_sum.solve_subset_sum, size_multiple=2)):
    solved[j].append(sol)

  grid_vmap = lambda fn: jax.vmap(jax.vmap(fn))
  out = [None] * len(specs)
  pending = collections.defaultdict(list)  # target -> [(spec, layers (P, N), seeds)]
  for j, (t, method, widths, _, _) in enumerate(specs):
    if method == "direct":
      in_width = jnp.arange(max(widths))[None, :] < jnp.asarray(widths)[:, None]
      # Padding coefficients are zero: choosing them changes nothing, so never keep them.
      masks = [mask & in_width[:, None, None, None, :] for mask, _ in solved[j]]
      errors = [err for _, err in solved[j]]  # (W, S, d_out, d_in)
      effective = [jnp.swapaxes(jnp.sum(jnp.where(mk, c, 0.0), -1), -1, -2)
                   for mk, (_, c) in zip(masks, grids[j])]  # (W, S, d_in, d_out)
      kept = sum(jnp.sum(mk, axis=(2, 3, 4), dtype=jnp.int32) for mk in masks)
      layers = [(e, e) for e in effective]
    else:
      if method == "network":
        chosen = [mask for mask, _ in solved[j]]
      else:
        chosen = [grid_vmap(construction.single_choice)(tg, pr, va)
                  for tg, pr, va, _ in grids[j]]
      layer_out = [grid_vmap(construction.layer_masks)(ch, tg, pr, va, sl)
                   for ch, (tg, pr, va, sl) in zip(chosen, grids[j])]
      errors = [lo[2] for lo in layer_out]  # (W, S, d_out, d_in)
      kept = sum(jnp.sum(lo[0], axis=(2, 3), dtype=jnp.int32) +
                 jnp.sum(lo[1], axis=(2, 3, 4), dtype=jnp.int32) for lo in layer_out)
      # effective (W, S, 2, d_out, d_in): kept products summed over the u > 0 / u < 0 copies
      layers = [(jnp.swapaxes(lo[3][:, :, 0], -1, -2), jnp.swapaxes(lo[3][:, :, 1], -1, -2))
                for lo in layer_out]
    max_e, mean_e, frac = _weight_stats(errors, epsilon)
    out[j] = dict(max_weight_error=max_e, mean_weight_error=mean_e,
                  fraction_within_epsilon=frac, params_kept=kept, weight_errors=errors)
    seeds = jnp.tile(jnp.arange(num_seeds), len(widths))
    pending[t].append((j, jax.tree.map(_flat, layers), seeds, len(widths)))

  # Evaluation: all methods' grid points of a target in one lax.map.
  for t, items in pending.items():
    layers = jax.tree.map(lambda *a: jnp.concatenate(a), *[it[1] for it in items])
    seeds = jnp.concatenate([it[2] for it in items])
    sup, acc = _evaluate(targets[t], layers, seeds, seed_keys[t], data, opts)
    target_acc = None if data is None else _accuracy(
        lambda x, k=targets[t]: evaluation.forward(k, x), *data, opts["data_batch"])
    start = 0
    for j, _, _, num_w in items:
      count = num_w * num_seeds
      out[j]["sup_error"] = sup[start:start + count].reshape(num_w, num_seeds)
      out[j]["accuracy"] = (None if data is None
                            else acc[start:start + count].reshape(num_w, num_seeds))
      out[j]["target_accuracy"] = target_acc
      start += count
  return out


@functools.lru_cache(maxsize=None)
def _program_with_options(options):
  """``_grid_program`` compiled with XLA ``compiler_options`` (own trace cache)."""
  return jax.jit(_grid_program.__wrapped__, static_argnames=("specs", "num_seeds", "opts"),
                 compiler_options=dict(options))


def _sharded_grid(mesh, targets, key, epsilon, data, *, specs, num_seeds, opts, options):
  """``_grid_program``'s outputs with the seeds split over ``mesh``: the padded seed
  count's keys (the same keys for the first ``num_seeds``) go to
  ``distributed.sharded_grid_program``, which runs ``_grid_body`` per device."""
  from lth_jax import sharding  # pylint: disable=g-import-not-at-top  (sharded runs only)
  padded = sharding.padded_size(num_seeds, mesh)
  seed_keys = jnp.stack([_seed_keys(key, t, padded) for t in range(len(targets))])
  out = sharding.sharded_grid_program(_grid_body, mesh, targets, epsilon, data, seed_keys,
                                         specs=specs, opts=opts, compiler_options=options)
  if padded != num_seeds:
    out = jax.tree.map(lambda a: a[:, :num_seeds] if a.ndim >= 2 else a, out)
  return out


def host_analytic_bound(target: Sequence[np.ndarray], weight_errors: Sequence[np.ndarray]
                        ) -> np.ndarray:
  """``evaluation.analytic_bound`` in numpy, batched over leading axes of the errors.

  Args:
    target: kernels ``(d_in, d_out)``; weight_errors: per layer ``(..., d_in, d_out)``.
  Returns:
    the bound, shape ``weight_errors[0].shape[:-2]``.
  """
  delta = np.zeros(np.shape(weight_errors[0])[:-2], np.float64)
  radius = 1.0
  for k, e in zip(target, weight_errors):
    w_norm = np.linalg.norm(np.asarray(k, np.float64), ord=2)
    e_norm = np.linalg.norm(np.asarray(e, np.float64), ord=2, axis=(-2, -1))
    delta = e_norm * (radius + delta) + w_norm * delta
    radius = radius * w_norm
  return delta


# --------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------


def _prepare_data(dataset, sizes_list):
  if dataset is None:
    return None
  images, labels = dataset
  images = jnp.asarray(images, jnp.float32)
  images = images.reshape(images.shape[0], -1)
  labels = jnp.asarray(labels, jnp.int32)
  if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
    raise ValueError(f"dataset has {images.shape[0]} inputs and {labels.shape[0]} labels")
  for sizes in sizes_list:
    if sizes[0] != images.shape[1]:
      raise ValueError(f"target input size {sizes[0]} does not match the dataset's "
                       f"{images.shape[1]} features per example")
    if int(jnp.max(labels)) >= sizes[-1] or int(jnp.min(labels)) < 0:
      raise ValueError(f"labels must lie in [0, {sizes[-1]}) for a target with {sizes[-1]} "
                       "outputs")
  return images, labels


def sweep_targets(
    targets: Sequence[Sequence[jax.Array]],
    widths: Sequence[int] | Mapping[str, Sequence[int]],
    num_seeds: int,
    methods: Sequence[str] = ("network",),
    *,
    key: chex.PRNGKey,
    epsilon: float = 0.01,
    dataset: tuple[np.ndarray, np.ndarray] | None = None,
    num_points: int = 2048,
    ascent_steps: int = 30,
    max_half: int | None = None,
    distribution: str = "uniform",
    eval_batch: int = 4,
    data_batch: int = 512,
    compiler_options: Mapping[str, int | str | bool] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> list[dict[str, SweepResult]]:
  """Sweeps several targets and methods over width x seed grids as ONE jitted program.

  Args:
    targets: list of targets, each a list of ``(d_in, d_out)`` kernels.
    widths: copies per input (``"direct"``: coefficients per weight), one list for all
      methods or a mapping ``method -> list``.
    num_seeds: seeds ``0 .. num_seeds - 1``.
    methods: subset of ``("network", "single", "direct")``.
    key: PRNG key; target ``t`` seed ``s`` uses ``fold_in(fold_in(key, t), s)``.
    epsilon: threshold of ``fraction_within_epsilon`` (per weight), in (0, 1).
    dataset: ``(images, labels)``; accuracy is measured when given (targets must take the
      flattened images and have one output per class).
    num_points, ascent_steps: sup-error estimate (``evaluation.sup_output_error``).
    max_half: ``"network"`` instance size per sign half for every width (default:
      ``default_max_half(width)`` per width, as ``find_ticket``).
    distribution: random network entries, ``"uniform"`` or ``"normal"``.
    eval_batch: grid points evaluated together (memory vs speed).
    data_batch: examples per accuracy batch.
    compiler_options: XLA options for the grid program, e.g.
      ``{"xla_backend_optimization_level": 1}`` (faster compiles, slower solving).
    mesh: a 1-D device mesh (``distributed.make_instance_mesh``): every device runs the
      grid program on its block of seeds (``distributed.sharded_grid_program``; the seed
      count is padded to a multiple of the device count, extra seeds are computed and
      dropped). Same results, float32 grid reductions up to the last bit.

  Returns:
    ``results[t][method]``: a ``SweepResult`` per target and method.
  """
  if not targets:
    raise ValueError("no targets")
  kernels = tuple([jnp.asarray(k, jnp.float32) for k in construction.check_target(t)]
                  for t in targets)
  sizes = [construction.target_layer_sizes(k) for k in kernels]
  methods = tuple(methods)
  if not methods or len(set(methods)) != len(methods):
    raise ValueError(f"methods must be a non-empty list of distinct methods, got {methods}")
  per_method = {}
  for method in methods:
    ws = widths[method] if isinstance(widths, Mapping) else widths
    per_method[method] = _check_grid(ws, num_seeds, method, epsilon, max_half)
  if distribution not in rn.DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {rn.DISTRIBUTIONS}, got {distribution!r}")
  if num_points < 1 or ascent_steps < 0 or eval_batch < 1 or data_batch < 1:
    raise ValueError("num_points, eval_batch and data_batch must be positive, ascent_steps "
                     "non-negative")
  data = _prepare_data(dataset, sizes)
  specs = tuple((t, method, per_method[method], _caps(method, per_method[method], max_half),
                 instance_size(method, per_method[method], max_half))
                for t in range(len(kernels)) for method in methods)
  opts = tuple(sorted(dict(num_points=int(num_points), ascent_steps=int(ascent_steps),
                           eval_batch=int(eval_batch), data_batch=int(data_batch),
                           distribution=distribution).items()))
  options = tuple(sorted(compiler_options.items())) if compiler_options else None
  if mesh is not None:
    raw = _sharded_grid(mesh, kernels, key, jnp.float32(epsilon), data, specs=specs,
                        num_seeds=int(num_seeds), opts=opts, options=options)
  else:
    program = _program_with_options(options) if options else _grid_program
    raw = program(kernels, key, jnp.float32(epsilon), data, specs=specs,
                  num_seeds=int(num_seeds), opts=opts)
  # Multi-host: outputs sharded over other processes' devices are not addressable here,
  # so gather them to every process (numpy) instead of jax.device_get.
  from lth_jax import sharding  # pylint: disable=g-import-not-at-top
  raw = jax.tree.map(sharding.to_host, raw)
  results = [dict() for _ in kernels]
  for (t, method, ws, _, _), r in zip(specs, raw):
    target_params = sum(a * b for a, b in zip(sizes[t][:-1], sizes[t][1:]))
    p_random = np.asarray([random_params(sizes[t], w, method) for w in ws], np.int64)
    results[t][method] = SweepResult(
        method=method, layer_sizes=tuple(sizes[t]), widths=np.asarray(ws), num_seeds=num_seeds,
        epsilon=float(epsilon), max_weight_error=np.asarray(r["max_weight_error"]),
        mean_weight_error=np.asarray(r["mean_weight_error"]),
        fraction_within_epsilon=np.asarray(r["fraction_within_epsilon"]),
        sup_error=np.asarray(r["sup_error"]),
        bound=host_analytic_bound(
            kernels[t], [np.swapaxes(np.asarray(e), -1, -2) for e in r["weight_errors"]]),
        accuracy=None if r["accuracy"] is None else np.asarray(r["accuracy"]),
        target_accuracy=None if r["target_accuracy"] is None else float(r["target_accuracy"]),
        params_random=p_random, params_kept=np.asarray(r["params_kept"]),
        target_params=target_params,
        width_factor=np.asarray([width_factor(sizes[t], w, method) for w in ws]),
        param_factor=p_random / target_params)
  return results


def sweep(
    target: Sequence[jax.Array],
    widths: Sequence[int],
    num_seeds: int,
    method: str = "network",
    *,
    key: chex.PRNGKey,
    epsilon: float = 0.01,
    dataset: tuple[np.ndarray, np.ndarray] | None = None,
    num_points: int = 2048,
    ascent_steps: int = 30,
    max_half: int | None = None,
    distribution: str = "uniform",
    compiler_options: Mapping[str, int | str | bool] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> SweepResult:
  """One target, one method, every (width, seed): one jitted program (see module doc).

  Args and measurements as ``sweep_targets``; equal to ``sweep_targets([target], ...)[0]``.
  """
  return sweep_targets([target], widths, num_seeds, (method,), key=key, epsilon=epsilon,
                       dataset=dataset, num_points=num_points, ascent_steps=ascent_steps,
                       max_half=max_half, distribution=distribution,
                       compiler_options=compiler_options, mesh=mesh)[0][method]


def copies_needed(result: SweepResult, epsilon: float, metric: str = "sup_error") -> np.ndarray:
  """Per seed, the smallest width of the grid from which ``metric <= epsilon`` holds at
  every larger width of the grid (``inf`` if never). ``(S,)`` float."""
  values = np.asarray(getattr(result, metric))
  order = np.argsort(result.widths)
  widths = np.asarray(result.widths)[order]
  ok = values[order] <= epsilon  # (W, S)
  # suffix-all: reached and stays reached
  stays = np.flip(np.logical_and.accumulate(np.flip(ok, 0), 0), 0)
  out = np.full(result.num_seeds, np.inf)
  for s in range(result.num_seeds):
    idx = np.nonzero(stays[:, s])[0]
    if idx.size:
      out[s] = widths[idx[0]]
  return out


def random_target(key: chex.PRNGKey, layer_sizes: Sequence[int],
                  spectral_norm: float = 1.0) -> list[jax.Array]:
  """Gaussian kernels ``(d_in, d_out)`` rescaled to the given spectral norm per layer."""
  sizes = tuple(int(d) for d in layer_sizes)
  if len(sizes) < 2 or any(d < 1 for d in sizes):
    raise ValueError(f"layer_sizes must list >= 2 positive sizes, got {layer_sizes}")
  if not spectral_norm > 0:
    raise ValueError(f"spectral_norm must be positive, got {spectral_norm}")
  out = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    k = jax.random.normal(jax.random.fold_in(key, i), (a, b), jnp.float32)
    out.append(k * (spectral_norm / jnp.linalg.norm(k, ord=2)))
  return out


def summarize(result: SweepResult) -> dict[str, np.ndarray]:
  """Per width, the mean over seeds of every ``(W, S)`` measurement (NaN-free inputs)."""
  keys = ("max_weight_error", "mean_weight_error", "fraction_within_epsilon", "sup_error",
          "bound", "params_kept")
  out = {k: np.mean(getattr(result, k), axis=1) for k in keys}
  if result.accuracy is not None:
    out["accuracy"] = np.mean(result.accuracy, axis=1)
  return out


# --------------------------------------------------------------------------------------
# The experiment behind `python -m experiments.sweep` (importable from a notebook).
# --------------------------------------------------------------------------------------

DATASETS = ("fashion_mnist", "mnist", "kmnist", "synthetic")
DONE_FILE = "done.json"  # written last by run_experiment: the run finished


def validate_config(config) -> None:
  """Raises ValueError whose message starts with the offending ``config.<field>``."""
  def bad(field, msg):
    raise ValueError(f"config.{field}: {msg}")

  sw = config.sweep
  for m in sw.methods:
    if m not in METHODS:
      bad("sweep.methods", f"unknown method {m!r}; choose from {METHODS}")
  if len(set(sw.methods)) != len(tuple(sw.methods)):
    bad("sweep.methods", f"methods must be distinct, got {tuple(sw.methods)}")
  for field in ("widths", "direct_widths"):
    ws = tuple(sw[field])
    if not ws and sw.methods:
      bad(f"sweep.{field}", "empty")
    if any((not isinstance(w, int)) or isinstance(w, bool) or w < 1 for w in ws):
      bad(f"sweep.{field}", f"widths must be positive integers, got {ws}")
    if len(set(ws)) != len(ws):
      bad(f"sweep.{field}", f"widths must be distinct, got {ws}")
  if "direct" in sw.methods and max(sw.direct_widths) > subset_sum.MAX_N:
    bad("sweep.direct_widths", f"at most {subset_sum.MAX_N} coefficients per weight (the "
        f"solver's MAX_N), got {max(sw.direct_widths)}")
  if not 0.0 < sw.epsilon < 1.0:
    bad("sweep.epsilon", f"must be in (0, 1), got {sw.epsilon}")
  if sw.num_seeds < 1:
    bad("sweep.num_seeds", f"must be positive, got {sw.num_seeds}")
  if sw.num_points < 1 or sw.ascent_steps < 0 or sw.eval_batch < 1:
    bad("sweep.num_points", "num_points and eval_batch must be positive, ascent_steps >= 0")
  if not 0 <= sw.max_half <= subset_sum.MAX_N:
    bad("sweep.max_half", f"must be in [0, {subset_sum.MAX_N}] (0: default), got {sw.max_half}")
  if sw.distribution not in rn.DISTRIBUTIONS:
    bad("sweep.distribution", f"must be one of {rn.DISTRIBUTIONS}, got {sw.distribution!r}")
  if not -1 <= sw.xla_opt_level <= 3:
    bad("sweep.xla_opt_level", f"must be in [-1, 3] (-1: XLA default), got {sw.xla_opt_level}")
  for sizes in config.targets.sizes:
    if len(sizes) < 2 or any((not isinstance(d, int)) or d < 1 for d in sizes):
      bad("targets.sizes", f"each target needs >= 2 positive layer sizes, got {sizes}")
  if not config.targets.spectral_norm > 0:
    bad("targets.spectral_norm", f"must be positive, got {config.targets.spectral_norm}")
  if config.targets.npz_layout not in ("torch", "jax"):
    bad("targets.npz_layout", f"must be 'torch' or 'jax', got {config.targets.npz_layout!r}")
  if config.targets.npz and not os.path.isfile(os.path.expanduser(config.targets.npz)):
    bad("targets.npz", f"no such file: {config.targets.npz}")
  if config.data.name and config.data.name not in DATASETS:
    bad("data.name", f"unknown dataset {config.data.name!r}; choose from {DATASETS} or ''")
  if config.data.name and config.data.limit < 1:
    bad("data.limit", f"must be positive, got {config.data.limit}")
  if config.targets.npz and not config.data.name and sw.methods:
    pass  # an npz target without data: swept like the random targets, without accuracy
  lu = config.lueker
  if lu.trials < 0:
    bad("lueker.trials", f"must be >= 0 (0: skip), got {lu.trials}")
  if lu.trials:
    if not 0.0 < lu.epsilon < 1.0:
      bad("lueker.epsilon", f"must be in (0, 1), got {lu.epsilon}")
    if not 0.0 < lu.spacing < lu.epsilon:
      bad("lueker.spacing", f"must be in (0, lueker.epsilon), got {lu.spacing}")
  # Sizes are checked even when the check is skipped: a bad one is a typo either way.
  from lth_jax import lueker  # pylint: disable=g-import-not-at-top
  for field, kind in (("uniform_sizes", "uniform"), ("product_sizes", "products")):
    if any((not isinstance(n, int)) or isinstance(n, bool) or n < 1 for n in lu[field]):
      bad(f"lueker.{field}", f"sizes must be positive integers, got {tuple(lu[field])}")
    # Beyond the solver's size the check still runs (an exact reduction), but every extra
    # coefficient doubles its cost: n = 60 would start a job of years.
    top = lueker.max_size(kind)
    if any(n > top for n in lu[field]):
      why = (f"the solver's MAX_N = {subset_sum.MAX_N}" if kind == "uniform" else
             f"the expected largest sign half must fit the solver's MAX_N = "
             f"{subset_sum.MAX_N}")
      bad(f"lueker.{field}", f"sizes at most {top} ({why}), got {tuple(lu[field])}")
  dev = config.get("devices", None) or {}
  num_proc, proc_id = dev.get("num_processes", 0), dev.get("process_id", -1)
  if num_proc < 0:
    bad("devices.num_processes", f"must be >= 0 (0: from the environment), got {num_proc}")
  if proc_id < -1 or (num_proc and proc_id >= num_proc):
    bad("devices.process_id", f"must be -1 (from the environment) or in [0, num_processes), "
        f"got {proc_id}")
  if not sw.methods and not lu.trials:
    bad("sweep.methods", "nothing to do: no methods and lueker.trials = 0")
  if sw.methods and not config.targets.sizes and not config.targets.npz and not config.data.name:
    bad("targets.sizes", "no targets: give sizes, an npz file or a dataset")


def check_config_args(argv: Sequence[str], default_config: str, name: str = "config") -> None:
  """Checks ``argv``'s ``--config`` flags before absl defines and parses them.

  ml_collections loads ``--config=file.py:preset`` and resolves every ``--config.<field>``
  override while the flag is defined or parsed, and reports an unknown preset or field with
  a traceback. This raises ``ValueError`` starting with ``config:`` / ``config.<field>:``
  instead, like ``validate_config`` (the entry point prints it as one line). Values are
  left to ml_collections and ``validate_config``.

  Args:
    argv: the command line, program name first.
    default_config: the ``--config`` value used when ``argv`` gives none.
    name: the config flag's name.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top  (entry point only)
  from ml_collections import config_dict
  from ml_collections.config_flags import config_flags  # ConfigFileFlagParser: not re-exported
  from ml_collections.config_flags import config_path
  try:
    argv = flags.FLAGS.read_flags_from_files(list(argv), force_gnu=False)  # --flagfile=
  except flags.Error:
    return  # absl reports it
  spec, overrides, args = default_config, [], list(argv[1:])
  for i, arg in enumerate(args):
    if arg == "--":
      break
    if re.fullmatch(rf"--?{name}(=.*)?", arg):  # --config=x or --config x
      spec = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else spec)
    elif re.match(rf"--?(no)?{name}\.", arg):  # the pattern ml_collections matches
      overrides.append(arg.split("=", 1)[0].split(".", 1)[1])
  try:
    config = config_flags.ConfigFileFlagParser(name).parse(spec)
    config.keys()  # a file that failed to load comes back as a placeholder that raises
  except OSError as e:  # the loader's last line says why: "[Errno 2] No such file ..."
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise ValueError(f"{name}: cannot load {spec!r}: {lines[-1] if lines else e}") from None
  except (TypeError, ValueError) as e:
    # ml_collections re-raises get_config's error with a traceback text; report the original.
    raise ValueError(f"{name}: {e.__context__ or e}") from None
  for path in overrides:
    try:
      config_path.get_type(path, config)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
      node, where = config, name
      msg = f"cannot override {path!r}"
      for part in re.sub(r"\[[^\]]*\]", "", path).split("."):
        if not isinstance(node, config_dict.ConfigDict):
          msg = f"{where} is a value ({type(node).__name__}), not a group of fields"
          break
        if part not in node:
          msg = f"unknown field {part!r} in {where} (fields: {', '.join(node.keys())})"
          break
        node, where = node[part], f"{where}.{part}"
      raise ValueError(f"{name}.{path}: {msg}") from None


def _target_name(sizes):
  return "x".join(str(d) for d in sizes)


def build_targets(config) -> list[tuple[str, list[jax.Array]]]:
  """The random targets of ``config.targets.sizes`` (and the npz one), named by sizes."""
  key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
  out = []
  for i, sizes in enumerate(config.targets.sizes):
    out.append((f"random_{_target_name(sizes)}",
                random_target(jax.random.fold_in(key, i), sizes, config.targets.spectral_norm)))
  if config.targets.npz and not config.data.name:
    from lth_jax import targets as targets_lib
    kernels = targets_lib.load_npz_target(os.path.expanduser(config.targets.npz),
                                          config.targets.npz_layout)
    out.append((f"npz_{_target_name(construction.target_layer_sizes(kernels))}", kernels))
  return out


def _data_target(config):
  """(name, kernels, (images, labels)) for the dataset experiment."""
  from lth_jax import data as data_lib
  data_dir = os.path.expanduser(config.data.data_dir) if config.data.data_dir else None
  test = data_lib.load_dataset(config.data.name, "test", data_dir, limit=config.data.limit,
                               seed=config.seed)
  if config.targets.npz:
    from lth_jax import targets as targets_lib
    kernels = targets_lib.load_npz_target(os.path.expanduser(config.targets.npz),
                                          config.targets.npz_layout)
    name = "npz"
  else:
    from lth_jax import models, training
    train = data_lib.load_dataset(config.data.name, "train", data_dir,
                                  limit=config.data.train_limit, seed=config.seed)
    model = models.MLP(tuple(config.data.train_hidden) + (10,))
    logging.info("training a bias-free %s target on %s (%d examples, %d epochs)",
                 "-".join(map(str, (784,) + tuple(model.widths))), config.data.name,
                 len(train.labels), config.data.train_epochs)
    params, _ = training.train_classifier(
        model, train, None, epochs=config.data.train_epochs,
        learning_rate=config.data.learning_rate, key=jax.random.key(config.seed), log_every=0)
    kernels = models.kernels_from_params(params)
    name = "trained"
  kernels = [jnp.asarray(k, jnp.float32) for k in kernels]
  sizes = construction.target_layer_sizes(kernels)
  return (f"{name}_{config.data.name}_{_target_name(sizes)}", kernels,
          (test.images.reshape(len(test.labels), -1), test.labels))


def estimated_keys(sizes_list, widths, num_seeds, method, max_half=None) -> float:
  """Sort keys the solver processes for a grid (the dominant cost; 0 for ``"single"``)."""
  if method == "single":
    return 0.0
  m = instance_size(method, widths, max_half)
  per_instance = 2.0 ** ((m + 1) // 2 + 1)
  weights = sum(sum(a * b for a, b in zip(s[:-1], s[1:])) for s in sizes_list)
  halves = 2 if method == "network" else 1
  return per_instance * weights * halves * len(widths) * num_seeds


def _median_row(result, field):
  arr = getattr(result, field)
  return None if arr is None else np.median(arr, axis=1)


def summary_rows(named_results, epsilon) -> list[dict]:
  """Per (target, method): copies needed (median over seeds) beside the theory numbers.

  Parameter counts: ``params_needed_median`` is the measured random object's size
  (``SweepResult.params_random``) at each seed's copies needed, median over seeds (None if
  most seeds never reached epsilon); ``theory_params`` is ``theory.construction_size``'s at
  the theory copies; ``lower_bound_params`` the counting bound P summed over layers.
  """
  out = []
  for name, per_method in named_results:
    for method, r in per_method.items():
      sizes = r.layer_sizes
      needed = copies_needed(r, epsilon)
      med = float(np.median(needed))
      const = theory.C_DIRECT if method == "direct" else theory.C_NETWORK
      cs = theory.construction_size(sizes, epsilon, const, method)
      lower = [theory.counting_lower_bound(a, b, epsilon) for a, b in zip(sizes[:-1], sizes[1:])]
      # needed[s] is a grid width (or inf): look its measured parameter count up.
      by_width = dict(zip((int(w) for w in r.widths), (int(p) for p in r.params_random)))
      params_needed = float(np.median([by_width[int(n)] if math.isfinite(n) else math.inf
                                       for n in needed]))
      out.append(dict(
          target=name, method=method, layer_sizes=list(sizes), epsilon=epsilon,
          copies_needed_median=med if math.isfinite(med) else None,
          copies_needed_per_seed=[float(x) if math.isfinite(x) else None for x in needed],
          max_width=int(max(r.widths)),
          params_needed_median=params_needed if math.isfinite(params_needed) else None,
          max_params=int(max(r.params_random)),
          theory_copies=list(cs.copies), theory_constant=const, theory_params=int(cs.params),
          fitted_constant=(med / max(theory.log_term(sizes, epsilon))
                           if math.isfinite(med) else None),
          lower_bound_per_input=max(lb.per_input for lb in lower),
          lower_bound_width=max(lb.width for lb in lower),
          lower_bound_params=sum(lb.params for lb in lower),
          malach_width_factor=theory.malach_width_factor(sizes),
          measured_width_factor=(width_factor(sizes, int(med), method)
                                 if math.isfinite(med) else None)))
  return out


def format_grid_table(named_results, epsilon) -> str:
  """One block per target: per width, each method's median (over seeds) sup error, max
  per-weight error and fraction of weights within epsilon."""
  lines = []
  for name, per_method in named_results:
    methods = list(per_method)
    widths = sorted({int(w) for r in per_method.values() for w in r.widths})
    any_r = next(iter(per_method.values()))
    head = f"{'width':>5}"
    for m in methods:
      head += f" | {m + ' sup':>12} {'max|w|':>9} {'<=eps':>5}"
    acc = any(r.accuracy is not None for r in per_method.values())
    lines.append(f"target {name} (sizes {list(any_r.layer_sizes)}, {any_r.num_seeds} seeds, "
                 f"medians over seeds; <=eps: fraction of weights within {epsilon:g})"
                 + (f", target accuracy {any_r.target_accuracy:.4f}" if acc else ""))
    lines.append(head)
    for w in widths:
      line = f"{w:>5}"
      for m in methods:
        r = per_method[m]
        idx = np.nonzero(r.widths == w)[0]
        if not idx.size:
          line += f" | {'':>12} {'':>9} {'':>5}"
          continue
        i = idx[0]
        line += (f" | {np.median(r.sup_error[i]):>12.3e} {np.median(r.max_weight_error[i]):>9.2e}"
                 f" {np.median(r.fraction_within_epsilon[i]):>5.2f}")
        if r.accuracy is not None:
          line += f" acc {np.median(r.accuracy[i]):.4f}"
      lines.append(line)
    lines.append("")
  return "\n".join(lines)


def format_summary_table(summary) -> str:
  """Copies needed to reach ``sup error <= epsilon`` and the random object's parameters at
  them, beside the theory's numbers (construction size, counting lower bound, Malach)."""
  def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)

  def needed(value, limit, spec):  # '>W': not reached within the grid
    return fmt(value, spec) if value is not None else f">{limit}"

  copies = f"{'needed':>7} {'theory':>6} {'C':>4} {'C fit':>5} {'LB':>5}"
  params = f"{'needed':>8} {'theory':>8} {'LB P':>7}"
  lines = [f"copies per input needed for sup_(|x|<=1) |f(x) - g(x)| <= eps "
           f"(median over seeds; '>W': not reached within the grid's max width W)",
           f"{'':<27} {'copies per input n':^{len(copies)}} | "
           f"{'params':^{len(params)}} |",
           f"{'target':<18} {'method':<8} {copies} | {params} | {'LB width':>8} {'Malach':>8}"]
  for row in summary:
    lines.append(
        f"{row['target']:<18} {row['method']:<8} "
        f"{needed(row['copies_needed_median'], row['max_width'], '.0f'):>7} "
        f"{max(row['theory_copies']):>6d} {row['theory_constant']:>4g} "
        f"{fmt(row['fitted_constant'], '.2f'):>5} {row['lower_bound_per_input']:>5.2f} | "
        f"{needed(row['params_needed_median'], row['max_params'], '.0f'):>8} "
        f"{row['theory_params']:>8d} {row['lower_bound_params']:>7.0f} | "
        f"{row['lower_bound_width']:>8.1f} {row['malach_width_factor']:>8.3g}")
  lines.append(
      "copies: theory = ceil(C log2(d_in d_out l / eps)) (lth_jax.theory; C fit = needed / "
      "log2(...)); LB = counting lower bound per input (LB width / d_in)\n"
      "params: random network (direct: coefficients) at the copies needed (measured) and at "
      "the theory copies; LB P = d_in d_out log2(1/(2 eps)) summed over layers\n"
      "LB width = P / (d_in + d_out) hidden units; Malach = width factor d^4 l^2 (constant "
      "1, no eps term)")
  return "\n".join(lines)


def plot_error_vs_copies(named_results, path=None, epsilon=None):
  """Sup error (median over seeds, band: min-max) vs copies per input, log y, one panel per
  target; dashed: the max per-weight error. Returns the figure (saved if ``path``)."""
  import matplotlib
  if path is not None:
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from lth_jax import files as files_lib
  num = len(named_results)
  cols = min(num, 4)
  rows = -(-num // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False,
                           sharey=True)
  colors = {"network": "tab:blue", "direct": "tab:green", "single": "tab:red"}
  for ax, (name, per_method) in zip(axes.flat, named_results):
    for m, r in per_method.items():
      order = np.argsort(r.widths)
      w = r.widths[order]
      sup = np.maximum(r.sup_error[order], 1e-9)
      ax.plot(w, np.median(sup, 1), "o-", ms=3, color=colors.get(m), label=f"{m}: sup error")
      ax.fill_between(w, sup.min(1), sup.max(1), color=colors.get(m), alpha=0.15, lw=0)
      ax.plot(w, np.maximum(np.median(r.max_weight_error[order], 1), 1e-9), "--", lw=1,
              color=colors.get(m), alpha=0.8, label=f"{m}: max per-weight error")
      if m == "single":  # ~1/n reference through the median at the middle width
        mid = len(w) // 2
        ref = np.median(sup, 1)[mid] * w[mid] / w
        ax.plot(w, ref, ":", color="gray", lw=1, label="~1/n")
    if epsilon is not None:
      ax.axhline(epsilon, color="k", lw=0.8, alpha=0.5)
    ax.set_yscale("log")
    ax.set_title(f"target {name}", fontsize=10)
    ax.set_xlabel("copies per input n (direct: coefficients per weight)")
    ax.grid(alpha=0.3, which="both")
  for ax in axes[:, 0]:
    ax.set_ylabel("error (median over seeds)")
  for ax in list(axes.flat)[num:]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7, loc="lower left")
  fig.suptitle("SubsetSum tickets: error falls exponentially in n (network, direct); "
               "best single unit: ~1/n", fontsize=11)
  fig.tight_layout()
  if path is not None:
    files_lib.save_figure(fig, path)
  return fig


def plot_overparam_vs_d(named_results, summary, epsilon, path=None):
  """Copies per input needed for sup error <= epsilon vs target width d (log2 x-axis):
  measured (median over seeds, dots per seed), the construction's ``C log2(d^2 l / eps)``,
  and the counting lower bound per input. Returns the figure (saved if ``path``)."""
  import matplotlib
  if path is not None:
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from lth_jax import files as files_lib
  fig, ax = plt.subplots(figsize=(9.0, 4.6))
  colors = {"network": "tab:blue", "direct": "tab:green", "single": "tab:red"}
  shift = {"network": 0.96, "direct": 1.0, "single": 1.04}  # keep markers apart
  by_method = collections.defaultdict(list)
  for row in summary:
    sizes = row["layer_sizes"]
    by_method[row["method"]].append((max(sizes), len(sizes) - 1, row))
  all_d = sorted({d for v in by_method.values() for d, _, _ in v})
  if not all_d:
    return fig
  top = 0
  for m, items in by_method.items():
    items.sort(key=lambda x: x[0])
    ds, meds, censored = [], [], []
    for d, _, row in items:
      seeds = [s for s in row["copies_needed_per_seed"] if s is not None]
      ax.scatter([d] * len(seeds), seeds, s=8, color=colors.get(m), alpha=0.35)
      if row["copies_needed_median"] is None:
        censored.append((d, row["max_width"]))
      else:
        ds.append(d)
        meds.append(row["copies_needed_median"])
      top = max(top, row["max_width"])
    if ds:
      ax.plot(ds, meds, "o-", color=colors.get(m), label=f"{m}: measured (median)")
    if censored:
      ax.plot([c[0] * shift.get(m, 1.0) for c in censored], [c[1] + 1 for c in censored], "^",
              ms=9,
              color=colors.get(m), mfc="none", label=f"{m}: not reached within the grid")
  dd = np.geomspace(min(all_d), max(all_d), 50)
  for const, label, style in ((theory.C_NETWORK, "network", "-"),
                              (theory.C_DIRECT, "direct", "--")):
    curve = const * np.log2(dd * dd / epsilon)
    ax.plot(dd, curve, style, color=colors.get(label), lw=1, alpha=0.7,
            label=f"construction C log2(d^2/eps), C={const:g} ({label}, lth_jax.theory)")
    if label in by_method:
      top = max(top, float(curve.max()))
  lb = theory.counting_lower_bound(2, 2, epsilon).per_input
  ax.axhline(lb, color="k", ls=":", lw=1, label=f"counting lower bound: {lb:.2f} per input")
  mal = theory.malach_width_factor((min(all_d), min(all_d)))
  ax.plot([], [], " ", label=f"Malach et al. factor d^4 l^2: {mal:.0f} .. "
          f"{theory.malach_width_factor((max(all_d), max(all_d))):.2g} (off scale)")
  ax.set_xscale("log", base=2)
  ax.set_xticks(all_d, [str(d) for d in all_d])
  ax.set_xlabel("target width d (d x d layer)")
  ax.set_ylabel(f"copies per input for sup error <= {epsilon:g}")
  ax.set_ylim(0, top * 1.12)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  ax.set_title("copies per input needed vs target width d: measured, and the construction's "
               "C log2(d^2/eps)", fontsize=9)
  fig.tight_layout()
  if path is not None:
    files_lib.save_figure(fig, path)
  return fig


def run_lueker(config, progress=True):
  """The Lueker coverage check of ``config.lueker``; list of ``lueker.Coverage``."""
  from lth_jax import lueker
  from lth_jax import files as files_lib
  from lth_jax import progress as progress_lib
  lu = config.lueker
  key = jax.random.fold_in(jax.random.key(config.seed), 2_000_003)
  grid_points = len(lueker.grid(lu.epsilon, lu.spacing))
  jobs = [("uniform", n) for n in lu.uniform_sizes] + [("products", n) for n in lu.product_sizes]

  def cost(kind, n):
    return lueker.solver_keys(lueker.instance_size(kind, n), lu.trials, grid_points)

  total = sum(cost(k, n) for k, n in jobs)
  meter = progress_lib.Progress(total, "lueker check", "solver keys",
                                every=0.0 if progress else math.inf)
  done, out = 0.0, []
  for kind, n in jobs:
    out.append(lueker.coverage(jax.random.fold_in(jax.random.fold_in(key, n), len(kind)), n,
                               kind, trials=lu.trials, epsilon=lu.epsilon, spacing=lu.spacing))
    done += cost(kind, n)
    meter.update(done, note=f"{kind} n={n}: covered {out[-1].covered:.2f}")
  return out


def sweep_widths(config) -> dict[str, tuple[int, ...]]:
  """``method -> widths`` of ``config.sweep`` (``"direct"`` has its own)."""
  sw = config.sweep
  widths = {"network": tuple(sw.widths), "single": tuple(sw.widths),
            "direct": tuple(sw.direct_widths)}
  return {m: widths[m] for m in sw.methods}


def sweep_kwargs(config) -> dict:
  """The keyword arguments ``run_experiment`` gives ``sweep_targets`` (all but ``dataset``
  and ``mesh``), compiler options from ``config.sweep.xla_opt_level`` included."""
  sw = config.sweep
  return dict(key=jax.random.key(config.seed), epsilon=sw.epsilon, num_points=sw.num_points,
              ascent_steps=sw.ascent_steps, max_half=sw.max_half or None,
              distribution=sw.distribution, eval_batch=sw.eval_batch,
              compiler_options=(None if sw.xla_opt_level < 0 else
                                {"xla_backend_optimization_level": sw.xla_opt_level}))


def _devices(config):
  """(shard, distributed, initialize kwargs) of ``config.devices`` (absent in older configs)."""
  dev = config.get("devices", None) or {}
  multi = bool(dev.get("distributed", False))
  kwargs = {}
  if dev.get("coordinator_address", ""):
    kwargs["coordinator_address"] = dev["coordinator_address"]
  if dev.get("num_processes", 0) > 0:
    kwargs["num_processes"] = int(dev["num_processes"])
  if dev.get("process_id", -1) >= 0:
    kwargs["process_id"] = int(dev["process_id"])
  return bool(dev.get("shard", False)) or multi, multi, kwargs


def _initialize_distributed(kwargs):
  """``distributed.initialize_distributed(True, **kwargs)`` once per process, its failure
  as a ``config.devices.distributed`` error."""
  from lth_jax import sharding  # pylint: disable=g-import-not-at-top
  if getattr(jax.distributed, "is_initialized", lambda: False)():
    return
  try:
    sharding.initialize_distributed(True, **kwargs)
  except (ValueError, RuntimeError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"config.devices.distributed: jax.distributed.initialize failed: {msg} "
                     "(outside a managed cluster set config.devices.coordinator_address, "
                     "num_processes and process_id)") from None


def run_experiment(config, out_dir, overwrite: bool = False) -> dict:
  """Runs the sweep (and Lueker check) of ``config`` and writes into ``out_dir``:
  ``results.jsonl`` (one row per target x method x width x seed, each with the config),
  ``summary.json`` (copies needed vs theory), ``lueker.jsonl``, the PNG figures
  ``error_vs_copies.png``, ``overparam_vs_d.png``, ``lueker.png``, and last ``done.json``
  (the marker of a finished run: a directory without it holds a killed or failed run).

  ``config.devices.shard``: every grid's seeds split over all devices
  (``distributed.make_instance_mesh``); ``config.devices.distributed``: first
  ``jax.distributed.initialize()`` (multi-host; implies ``shard``; arguments from the cluster
  or ``config.devices.coordinator_address`` etc.). Every process computes
  everything (the sharded programs need all of them); only process 0 prepares ``out_dir``
  and writes files.

  Returns:
    a dict with ``results`` ([(name, {method: SweepResult})]), ``summary``, ``lueker``,
    ``tables`` (text), ``files`` (those written by this process), ``seconds``, ``out_dir``
    and ``primary`` (whether this process wrote them).
  """
  from lth_jax import sharding  # pylint: disable=g-import-not-at-top
  from lth_jax import lueker
  from lth_jax import files as files_lib
  from lth_jax import progress as progress_lib
  validate_config(config)
  shard, multi, init_kwargs = _devices(config)
  if multi:
    _initialize_distributed(init_kwargs)  # before anything touches a device
  primary = sharding.is_primary()
  out = (files_lib.prepare_out_dir(out_dir, overwrite)[0] if primary
         else pathlib.Path(out_dir).expanduser())
  t0 = time.perf_counter()
  sw = config.sweep
  widths = sweep_widths(config)
  kwargs = sweep_kwargs(config)
  if shard:
    kwargs["mesh"] = sharding.make_instance_mesh()
    logging.info("sweep: seeds split over %d devices (%d process(es))",
                 sharding.num_devices(kwargs["mesh"]), jax.process_count())
  experiments = []  # (targets [(name, kernels)], dataset)
  if sw.methods:
    named = build_targets(config)
    if named:
      experiments.append((named, None))
    if config.data.name:
      name, kernels, data = _data_target(config)
      experiments.append(([(name, kernels)], data))
  named_results, rows = [], []
  cfg = files_lib.to_jsonable(config)
  for named, data in experiments:
    sizes = [construction.target_layer_sizes(k) for _, k in named]
    keys = sum(estimated_keys(sizes, widths[m], sw.num_seeds, m, sw.max_half or None)
               for m in sw.methods)
    points = sum(len(widths[m]) for m in sw.methods) * sw.num_seeds * len(named)
    logging.info("sweep: %d targets (%s) x methods %s x %d seeds = %d grid points, ~%.2g "
                 "solver keys, as one XLA program (compiled once)", len(named),
                 ", ".join(n for n, _ in named), "/".join(sw.methods), sw.num_seeds, points, keys)
    estimate = keys / 50e6 + 3 * len(named) + 5  # idle: 12 s, 5.7e8 keys, 4 targets
    with progress_lib.Heartbeat("sweep program", estimate=estimate,
                               interval=max(10.0, estimate / 20)):
      res = sweep_targets([k for _, k in named], widths, sw.num_seeds, tuple(sw.methods),
                          dataset=data, **kwargs)
    for (name, _), per_method in zip(named, res):
      named_results.append((name, per_method))
      for m, r in per_method.items():
        rows += r.rows(experiment=name, config=cfg)
  fields = ("max_weight_error", "mean_weight_error", "fraction_within_epsilon", "sup_error",
            "bound", "accuracy")
  files_lib.check_finite_rows(rows, fields)
  files = []
  tables = {}
  summary = summary_rows(named_results, sw.epsilon) if named_results else []
  if named_results:
    tables["grid"] = format_grid_table(named_results, sw.epsilon)
    tables["summary"] = format_summary_table(summary)
  if named_results and primary:
    files.append(files_lib.write_jsonl(out / "results.jsonl", rows))
    files.append(files_lib.atomic_write_text(
        out / "summary.json", json.dumps(files_lib.to_jsonable(
            dict(config=cfg, summary=summary)), indent=1, sort_keys=True)))
    import matplotlib.pyplot as plt
    fig = plot_error_vs_copies(named_results, out / "error_vs_copies.png", sw.epsilon)
    plt.close(fig)
    files.append(out / "error_vs_copies.png")
    single_layer = [(n, r) for n, r in named_results
                    if len(next(iter(r.values())).layer_sizes) == 2]
    fig = plot_overparam_vs_d(single_layer, [s for s in summary if len(s["layer_sizes"]) == 2],
                              sw.epsilon, out / "overparam_vs_d.png")
    plt.close(fig)
    files.append(out / "overparam_vs_d.png")
  coverage = []
  if config.lueker.trials:
    # Every process runs it (unsharded), so all of them reach the end together.
    coverage = run_lueker(config, progress=primary)
    tables["lueker"] = format_lueker_table(coverage)
  if coverage and primary:
    lrows = [dict(kind=c.kind, n=c.n, epsilon=c.epsilon, trials=c.trials, spacing=c.spacing,
                  covered=c.covered, covered_upper=c.covered_upper,
                  reference=lueker.REFERENCE.get(c.kind, {}).get(c.n), config=cfg)
             for c in coverage]
    files.append(files_lib.write_jsonl(out / "lueker.jsonl", lrows))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = {k: [c for c in coverage if c.kind == k] for k in lueker.KINDS}
    ax = lueker.plot_coverage(curves, {"uniform": theory.C_LUEKER_UNIFORM,
                                       "products": theory.C_LUEKER_HALF})
    ax.set_title(f"Lueker check: every z in [-1,1] within {config.lueker.epsilon:g}", fontsize=10)
    files.append(files_lib.save_figure(ax.figure, out / "lueker.png"))
    plt.close(ax.figure)
  seconds = time.perf_counter() - t0
  if primary:  # last: its presence says every other file is complete
    done = dict(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=seconds,
                files=sorted(pathlib.Path(f).name for f in files), preset=config.preset,
                devices=jax.device_count(), processes=jax.process_count(),
                sharded=shard)
    files.append(files_lib.atomic_write_text(
        out / DONE_FILE, json.dumps(done, indent=1, sort_keys=True)))
  return dict(results=named_results, summary=summary, lueker=coverage, tables=tables,
              files=[str(f) for f in files], seconds=seconds, out_dir=str(out),
              primary=primary)


def format_lueker_table(coverage) -> str:
  """Coverage per (kind, n) beside the SPEC's reference values."""
  from lth_jax import lueker
  lines = [f"{'kind':<9} {'n':>3} {'covered':>8} {'(upper)':>8} {'reference':>9} {'trials':>6}"]
  for c in coverage:
    ref = lueker.REFERENCE.get(c.kind, {}).get(c.n)
    lines.append(f"{c.kind:<9} {c.n:>3} {c.covered:>8.2f} {c.covered_upper:>8.2f} "
                 f"{'-' if ref is None else format(ref, '.2f'):>9} {c.trials:>6}")
  return "\n".join(lines)
