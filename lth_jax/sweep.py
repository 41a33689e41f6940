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
  from lth_jax import distributed  # pylint: disable=g-import-not-at-top  (sharded runs only)
  padded = distributed.padded_size(num_seeds, mesh)
  seed_keys = jnp.stack([_seed_keys(key, t, padded) for t in range(len(targets))])
  out = distributed.sharded_grid_program(_grid_body, mesh, targets, epsilon, data, seed_keys,
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
  from lth_jax import distributed  # pylint: disable=g-import-not-at-top  (calls back into sweep)
  raw = jax.tree.map(distributed.to_host, raw)
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
