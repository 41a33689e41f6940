"""Experiment 1: approximate EVERY weight of a trained target by exact SubsetSum.

The paper's Table (Pensia et al. 2020, Experiment 1; SPEC section 5): a bias-free FC2
(784-500-10) is trained, each of its 397,000 weights is replaced by a subset sum of random
values, and the approximation is evaluated. One row per (variant, objective):

* variants: ``"direct"`` (the official code's shortcut: ``n`` i.i.d. ``U[low, high]``
  coefficients per output row, reused along the row; no network; for LeNet5 too, whose
  conv kernels ``(kh, kw, in, out)`` count as ``(kh * kw * in, out)`` matrices, one row
  per output channel) and ``"network"`` (MLP targets only; Theorem 1: a depth-``2l``
  random ReLU network pruned by two SubsetSum problems per weight, evaluated as that
  pruned network through ``structured_forward`` and checked against the literal dense
  masked network on a small batch);
* objectives: ``"min_error"`` (``solve_subset_sum``: the subset closest to the weight) and
  ``"fewest_terms"`` (``solve_fewest_terms``: among subsets within epsilon, the fewest
  terms; where none is within epsilon, the closest one).

The ticket's test accuracy is always its OWN forward pass (approximated kernels for
``"direct"``, the pruned random network for ``"network"``), never the target's. Weights
whose error exceeds epsilon are counted and reported, never fatal.

Everything is importable (Colab); ``experiments/subset_sum.py`` only parses flags and calls
``run_experiment1``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import resource
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lth_jax import construction
from lth_jax import data as data_lib
from lth_jax import evaluation
from lth_jax import models
from lth_jax import random_net as rn
from lth_jax import files as files_lib
from lth_jax import subset_sum
from lth_jax import targets as targets_lib
from lth_jax import training

__all__ = [
    "VARIANTS", "OBJECTIVES", "PAPER_FC2_DIRECT", "RESULTS_FILE", "TABLE_FILE",
    "ConfigError", "CopiesSearch", "validate_config", "load_target", "target_checkpoint_dir",
    "solve_instances", "direct_coefficients", "direct_ticket", "network_ticket",
    "search_copies", "kernels_accuracy", "ticket_accuracy", "dense_check", "peak_rss_mb",
    "run_experiment1", "format_table",
]

VARIANTS = ("direct", "network")
RESULTS_FILE = "results.jsonl"
TABLE_FILE = "table.txt"

# The official run (subset-sum/results/paper/fc2_approx.out): FC2 on MNIST, n = 21, one
# Gurobi MIP per weight.
PAPER_FC2_DIRECT = dict(initial_params=8_337_000, remaining_params=3_725_871,
                        remaining_ratio=9.39, target_params=397_000, fraction_within_eps=1.0,
                        target_accuracy=0.9719, solve_seconds=77_266.02,
                        solver="Gurobi MIP per weight, MIPGap 0.01, 36 cores")


class ConfigError(ValueError):
  """A bad configuration value; ``field`` is its dotted path (e.g. ``network.copies``)."""

  def __init__(self, field: str, message: str):
    super().__init__(f"config.{field}: {message}")
    self.field = field


# --------------------------------------------------------------------------------------
# Objectives (construction.objective_solver): "min_error" and "fewest_terms".
# --------------------------------------------------------------------------------------

OBJECTIVES = construction.OBJECTIVES
_objective_max_n = construction.objective_max_n


@functools.partial(jax.jit, static_argnames=("objective",))
def _solve_block(targets, coefficients, epsilon, objective):
  res = construction.objective_solver(objective, epsilon)(targets, coefficients)
  return res.mask, res.error


class _Progress:
  """Logs done/total, rate and ETA at most every ``every`` seconds (and at the end)."""

  def __init__(self, name: str, total: int, every: float = 10.0):
    self.name, self.total, self.every = name, max(int(total), 1), every
    self.start = self.last = time.perf_counter()
    self.done = 0

  def add(self, count: int) -> None:
    self.done += int(count)
    now = time.perf_counter()
    if now - self.last >= self.every or self.done >= self.total:
      self.last = now
      elapsed = now - self.start
      eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
      logging.info("%s: %d/%d instances (%.0f%%), %.1f s, ETA %.1f s", self.name, self.done,
                   self.total, 100.0 * self.done / self.total, elapsed, eta)


def solve_instances(targets: np.ndarray, coefficients: np.ndarray, *, objective: str,
                    epsilon: float, block_keys: int = 1 << 24,
                    progress: _Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Solves ``len(targets)`` SubsetSum instances in fixed-size blocks (one compiled shape).

  Args:
    targets: ``(N,)``; coefficients: ``(N, n)``.
    objective: one of ``OBJECTIVES``.
    epsilon: tolerance (used by ``"fewest_terms"``).
    block_keys: about this many meet-in-the-middle keys per block (progress granularity;
      the solvers bound their own memory by chunking).
    progress: optional progress reporter (``add`` is called per block).

  Returns:
    mask bool ``(N, n)`` and error float32 ``(N,)`` (numpy).
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {objective!r}")
  targets = np.asarray(targets, np.float32).reshape(-1)
  coefficients = np.asarray(coefficients, np.float32)
  total, n = coefficients.shape
  if targets.shape[0] != total:
    raise ValueError(f"{targets.shape[0]} targets for {total} coefficient rows")
  # The block size depends on n only: one compiled program per (n, objective), whatever
  # the number of instances (a compile costs far more than a block of padding).
  keys_per_instance = 2 ** ((n + 1) // 2 + 1)
  block = int(np.clip(block_keys // keys_per_instance, 256, 1 << 16))
  mask = np.zeros((total, n), bool)
  error = np.zeros((total,), np.float32)
  eps = jnp.float32(epsilon)

  def collect(start, stop, result):
    mask[start:stop] = np.asarray(result[0])[:stop - start]
    error[start:stop] = np.asarray(result[1])[:stop - start]
    if progress is not None:
      progress.add(stop - start)

  pending = None
  for start in range(0, total, block):
    stop = min(start + block, total)
    t = np.zeros((block,), np.float32)
    c = np.zeros((block, n), np.float32)
    t[:stop - start] = targets[start:stop]
    c[:stop - start] = coefficients[start:stop]
    result = _solve_block(t, c, eps, objective)  # dispatched asynchronously
    if pending is not None:
      collect(*pending)  # the previous block, while this one runs
    pending = (start, stop, result)
  if pending is not None:
    collect(*pending)
  return mask, error


# --------------------------------------------------------------------------------------
# The "direct" variant.
# --------------------------------------------------------------------------------------


def _as_matrix(kernel) -> np.ndarray:
  """A kernel as ``(d_in, d_out)``: conv ``(kh, kw, in, out)`` -> ``(kh * kw * in, out)``
  (the output axis is last for Dense and Conv alike, so each output channel is a row)."""
  k = np.asarray(kernel, np.float32)
  return k.reshape(-1, k.shape[-1])


def direct_coefficients(seed: int, target: Sequence[jax.Array], copies: int
                        ) -> construction.DirectCoefficients:
  """The ``"direct"`` coefficients exactly as ``run_experiment1`` draws them (the benchmark
  calls this too, so both solve the same instances): key ``fold_in(PRNGKey(seed), 1)``,
  per layer ``(d_out, copies)`` i.i.d. ``U[low, high]``, ``[low, high]`` = the target's
  global weight range over ALL its kernels.

  Args:
    seed: ``config.seed``.
    target: kernels ``(d_in, d_out)`` (an MLP) or LeNet5's (conv ``(kh, kw, in, out)``).
    copies: ``n``, coefficients per weight.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  if all(np.ndim(k) == 2 for k in target):
    return construction.sample_direct_coefficients(key, target, copies)
  # LeNet5: the layers' matrix views do not chain, so sample layer by layer with the global
  # range (sample_direct_coefficients checks an MLP chain).
  mats = [_as_matrix(k) for k in target]
  all_w = np.concatenate([m.reshape(-1) for m in mats])
  low, high = float(all_w.min()), float(all_w.max())
  keys = jax.random.split(key, len(mats))
  coefs = [construction.sample_direct_coefficients(k, [m], copies, low, high).coefficients[0]
           for k, m in zip(keys, mats)]
  return construction.DirectCoefficients(coefs, jnp.float32(low), jnp.float32(high))


def direct_ticket(target: Sequence[jax.Array], coefficients: construction.DirectCoefficients,
                  *, objective: str = "min_error", epsilon: float = 0.01,
                  block_keys: int = 1 << 24, progress_name: str | None = None
                  ) -> construction.Ticket:
  """Every weight of ``target`` as a subset sum of its output row's coefficients.

  Same ticket as ``construction.find_ticket(coefficients, target, "direct")`` for
  ``objective="min_error"``, but the solver is pluggable and runs in blocks with progress.

  Args:
    target: kernels ``(d_in, d_out)``, or conv kernels ``(kh, kw, in, out)`` (solved as
      ``(kh * kw * in, out)``: one coefficient vector per output channel).
    coefficients: from ``direct_coefficients`` or
      ``construction.sample_direct_coefficients`` (per layer ``(d_out, n)``).
    objective: ``"min_error"`` or ``"fewest_terms"``.
    epsilon: the per-weight tolerance (``"fewest_terms"``).

  Returns:
    ``Ticket`` with method ``"direct"``: masks ``{"coefficients": [(d_out, d_in, n)]}``
    (``d_in = kh * kw * in`` for conv kernels); ``weight_errors`` and
    ``effective_kernels`` shaped like the target's kernels.
  """
  shapes = [np.shape(k) for k in target]
  kernels = [_as_matrix(k) for k in target]
  coefs = [np.asarray(c, np.float32) for c in coefficients.coefficients]
  if len(coefs) != len(kernels):
    raise ValueError(f"{len(coefs)} coefficient layers for {len(kernels)} target layers")
  n = coefs[0].shape[1]
  for i, (c, k) in enumerate(zip(coefs, kernels)):
    if c.ndim != 2 or c.shape != (k.shape[1], n):
      raise ValueError(f"layer {i}: coefficients {c.shape} do not match kernel {k.shape} "
                       f"(need (d_out, n) = {(k.shape[1], n)})")
  flat_t = np.concatenate([k.T.reshape(-1) for k in kernels])  # (layer, o, j) order
  flat_c = np.concatenate([np.repeat(c, k.shape[0], axis=0) for c, k in zip(coefs, kernels)])
  progress = _Progress(progress_name or f"direct/{objective}", flat_t.size)
  mask, error = solve_instances(flat_t, flat_c, objective=objective, epsilon=epsilon,
                                block_keys=block_keys, progress=progress)
  masks, errors, approx = [], [], []
  start = 0
  for c, k, shape in zip(coefs, kernels, shapes):
    d_in, d_out = k.shape
    rows = slice(start, start + d_in * d_out)
    start += d_in * d_out
    m = mask[rows].reshape(d_out, d_in, n)
    masks.append(jnp.asarray(m, jnp.uint8))
    errors.append(jnp.asarray(error[rows].reshape(d_out, d_in).T.reshape(shape)))
    approx.append(jnp.asarray(np.sum(np.where(m, c[:, None, :], np.float32(0)), -1,
                                     dtype=np.float32).T.reshape(shape)))
  total = sum(int(k.size) * n for k in kernels)
  return construction.Ticket({"coefficients": masks}, errors, approx, total,
                             jnp.int32(int(mask.sum())), "direct")


# --------------------------------------------------------------------------------------
# The "network" variant (Theorem 1): construction.find_ticket with a blocked solver.
# --------------------------------------------------------------------------------------

class _Solved(NamedTuple):
  """What ``construction.find_ticket`` reads from a ``solve_fn``."""

  mask: np.ndarray  # bool (B, m)
  error: np.ndarray  # float32 (B,)


def _blocked_solver(objective: str, epsilon: float, block_keys: int,
                    progress: _Progress | None) -> construction.SolveFn:
  """``solve_instances`` as a ``find_ticket`` ``solve_fn`` (fixed-size blocks, progress)."""

  def solve(targets, coefficients):
    mask, error = solve_instances(np.asarray(targets), np.asarray(coefficients),
                                  objective=objective, epsilon=epsilon,
                                  block_keys=block_keys, progress=progress)
    return _Solved(mask, error)

  return solve


def _max_half(copies: int, max_half: int | None, limit: int = subset_sum.MAX_N) -> int:
  """The per-sign-half instance size for ``copies``: ``max_half``, or
  ``default_max_half(copies)`` when ``max_half`` is 0/None; never above ``copies`` or
  ``limit`` (the solver's maximum instance size)."""
  m = construction.default_max_half(copies) if not max_half else int(max_half)
  return max(1, min(m, int(copies), int(limit)))


def _layer_caps(max_half, num_layers: int) -> list:
  """``max_half`` per layer: None/int (every layer) or a sequence of one or ``num_layers``."""
  if max_half is None or isinstance(max_half, (int, np.integer)):
    return [max_half] * num_layers
  caps = list(max_half)
  if len(caps) == 1:
    return caps * num_layers
  if len(caps) != num_layers:
    raise ValueError(f"max_half has {len(caps)} entries for {num_layers} target layers "
                     "(give one for all layers or one per layer)")
  return caps


def _layer_errors(u, v, kernel, m, *, epsilon, block_keys, progress=None):
  """Per-weight errors ``(d_in, d_out)`` of one layer's min-error ticket: ``find_ticket``
  on the one-layer random network ``(u (d_in, n), v (d_out, d_in, n))``."""
  d_in, d_out = kernel.shape
  # Only the structured view is used (no dense forward): the filler key is never read.
  net = rn.RandomNetwork({"u": [u], "v": [v]}, jax.random.key(0), (d_in, d_out))
  ticket = construction.find_ticket(
      net, [kernel], "network", max_half=m,
      solve_fn=_blocked_solver("min_error", epsilon, block_keys, progress))
  return ticket.weight_errors[0]


def network_ticket(net: rn.RandomNetwork, target: Sequence[jax.Array], *,
                   objective: str = "min_error", epsilon: float = 0.01,
                   max_half: int | Sequence[int] | None = None, block_keys: int = 1 << 24,
                   progress_name: str | None = None) -> construction.Ticket:
  """Theorem-1 ticket of ``net`` for ``target`` with a pluggable SubsetSum objective.

  ``construction.find_ticket(net, target, "network", max_half=..., objective=...)``, with
  the SubsetSum instances solved in fixed-size blocks with progress logs.

  Args:
    net: the random network (``sample_random_network``), layer sizes of the target.
    target: kernels ``(d_in, d_out)``.
    objective: ``"min_error"`` or ``"fewest_terms"`` (per sign half).
    epsilon: per-weight tolerance (``"fewest_terms"``).
    max_half: per-sign-half instance size: one int, one per layer, or None/0 for
      ``default_max_half(copies)`` (capped at the objective's maximum instance size).

  Returns:
    ``Ticket`` with method ``"network"``.
  """
  kernels = [jnp.asarray(k, jnp.float32) for k in target]
  sizes = construction.target_layer_sizes(kernels)
  if sizes != tuple(net.layer_sizes):
    raise ValueError(f"target layer sizes {sizes} do not match the random network's "
                     f"{tuple(net.layer_sizes)}")
  limit = _objective_max_n(objective)
  caps = _layer_caps(max_half, len(kernels))
  if any(h and h > limit for h in caps):
    raise ValueError(f"max_half {caps} exceeds {objective}'s maximum instance size {limit}")
  caps = [_max_half(c, h, limit) for c, h in zip(net.copies, caps)]
  total = sum(2 * int(k.size) for k in kernels)
  progress = _Progress(progress_name or f"network/{objective}", total)
  return construction.find_ticket(
      net, kernels, "network", max_half=caps,
      solve_fn=_blocked_solver(objective, epsilon, block_keys, progress))


@dataclasses.dataclass
class CopiesSearch:
  """Result of ``search_copies``.

  Attributes:
    net: the random network with the chosen copies per layer.
    copies: chosen copies per layer (the smallest candidate meeting epsilon on every
      weight of the layer, or the largest candidate if none does).
    max_half: the per-sign-half instance size used per layer.
    log: per layer, per candidate tried: ``{"copies", "max_half", "misses",
      "worst_error", "rechecked"}`` (``worst_error``: the largest error among the weights
      re-solved at that candidate; ``rechecked``: how many were re-solved).
    seconds: wall time of the search.
  """

  net: rn.RandomNetwork
  copies: tuple
  max_half: tuple
  log: list
  seconds: float


def _pair_errors(u, v, w, o_idx, j_idx, m, epsilon, block_keys):
  """Minimum errors of the (o, j) pairs listed (both sign halves; max of the two)."""
  count = len(o_idx)
  padded = max(256, 1 << math.ceil(math.log2(count)))  # few distinct shapes to compile
  o_pad = np.zeros(padded, np.int64)
  j_pad = np.zeros(padded, np.int64)
  o_pad[:count], j_pad[:count] = o_idx, j_idx
  # Each pair as its own input of a one-layer network with one output.
  u_sel = jnp.asarray(u)[j_pad]  # (P, n)
  v_sel = jnp.asarray(v)[o_pad, j_pad][None]  # (1, P, n)
  kernel = jnp.asarray(w)[o_pad, j_pad][:, None]  # (P, 1)
  err = _layer_errors(u_sel, v_sel, kernel, m, epsilon=epsilon, block_keys=block_keys)
  return np.asarray(err)[:count, 0]


def search_copies(key: jax.Array, target: Sequence[jax.Array], candidates: Sequence[int], *,
                  epsilon: float = 0.01, max_half: int | Sequence[int] | None = None,
                  max_instance: int = subset_sum.MAX_N, distribution: str = "uniform",
                  block_keys: int = 1 << 24) -> CopiesSearch:
  """Per layer, the fewest copies (from ``candidates``) whose ticket meets ``epsilon`` on
  every weight, measured on the actual target.

  One random network is drawn with ``max(candidates)`` copies; smaller ones are its first
  copies (nested widths, ``truncate_copies``). Growing the copies (with a nondecreasing
  per-half size) only adds products to every SubsetSum instance, so a weight within epsilon
  stays within it: after a full solve at the first candidate only the missing weights are
  re-solved at the next.

  ``max_half`` (one int, or one per layer; None/0 = ``default_max_half(copies)``) and
  ``max_instance`` (the objectives' largest instance size) set the per-sign-half instance
  size ``m`` at each candidate; the final ticket's solver cost grows like ``2^(m/2)`` per
  instance, so layers with many weights may want a lower cap than small layers.
  """
  t0 = time.perf_counter()
  candidates = sorted({int(c) for c in candidates})
  kernels = [jnp.asarray(k, jnp.float32) for k in target]
  sizes = construction.target_layer_sizes(kernels)
  caps = _layer_caps(max_half, len(kernels))
  full = rn.sample_random_network(key, sizes, candidates[-1], distribution)
  chosen, halves, log = [], [], []
  for layer, (u_all, v_all, k, cap) in enumerate(
      zip(full.params["u"], full.params["v"], kernels, caps)):
    w = np.asarray(k).T  # (d_out, d_in)
    layer_log, miss_o, miss_j = [], None, None
    for c in candidates:
      m = _max_half(c, cap, max_instance)
      u, v = u_all[:, :c], v_all[:, :, :c]
      if miss_o is None:  # first candidate: every weight
        progress = _Progress(f"copies search, layer {layer + 1}, copies {c}", 2 * w.size)
        err = np.asarray(_layer_errors(u, v, k, m, epsilon=epsilon, block_keys=block_keys,
                                       progress=progress)).T  # (d_out, d_in)
        rechecked = int(err.size)
        miss_o, miss_j = np.nonzero(err > np.float32(epsilon))
        worst = float(err.max())
      else:
        rechecked = len(miss_o)
        err = _pair_errors(u, v, w, miss_o, miss_j, m, epsilon, block_keys)
        worst = float(err.max())
        still = err > np.float32(epsilon)
        miss_o, miss_j = miss_o[still], miss_j[still]
      layer_log.append(dict(copies=c, max_half=m, misses=int(len(miss_o)), worst_error=worst,
                            rechecked=rechecked))
      logging.info("copies search, layer %d: copies %d (max_half %d): %d weights miss "
                   "eps=%g (worst rechecked error %.3g)", layer + 1, c, m, len(miss_o),
                   epsilon, worst)
      if len(miss_o) == 0:
        break
    chosen.append(layer_log[-1]["copies"])
    halves.append(layer_log[-1]["max_half"])
    log.append(layer_log)
  net = rn.truncate_copies(full, chosen)
  return CopiesSearch(net, tuple(chosen), tuple(halves), log, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------


def _kernels_apply(kernels, images):
  return evaluation.forward(kernels, images.reshape(images.shape[0], -1))


def _lenet5_apply(kernels, images):
  return models.LeNet5().apply(models.params_from_kernels(kernels), images)


def _network_apply(net_and_masks, images):
  net, masks = net_and_masks
  return evaluation.structured_forward(net, masks, images.reshape(images.shape[0], -1))


def kernels_accuracy(kernels: Sequence[jax.Array], dataset: data_lib.Dataset,
                     batch_size: int = 1000) -> float:
  """Test accuracy of the bias-free network with these kernels: the ReLU MLP for
  ``(d_in, d_out)`` kernels, the LeNet5 forward (convs, pools, FC head) for LeNet5's
  kernels (``models.LENET5_KERNEL_SHAPES``: two conv kernels, then three FC ones)."""
  kernels = [jnp.asarray(k) for k in kernels]
  if isinstance(models.model_from_kernels(kernels), models.LeNet5):
    return training.accuracy(_lenet5_apply, kernels, dataset, batch_size)
  return training.accuracy(_kernels_apply, kernels, dataset, batch_size)


def ticket_accuracy(ticket: construction.Ticket, dataset: data_lib.Dataset, *,
                    net: rn.RandomNetwork | None = None, batch_size: int = 1000) -> float:
  """Accuracy of the ticket's own forward pass: the approximated kernels (``"direct"``;
  for a LeNet5 target, the LeNet5 forward with every conv and FC kernel approximated) or
  the pruned random network through ``structured_forward`` (network methods)."""
  if ticket.method == "direct":
    return kernels_accuracy(ticket.effective_kernels, dataset, batch_size)
  if net is None:
    raise ValueError(f"method {ticket.method!r}: pass net=, the RandomNetwork the ticket prunes")
  return training.accuracy(_network_apply, (net, ticket.masks), dataset, batch_size)


def dense_check(net: rn.RandomNetwork, ticket: construction.Ticket, x: jax.Array) -> float:
  """Max |structured - dense| output difference, relative to the dense output's max |.|:
  the pruned network as literally masked dense random matrices vs the structured view."""
  x = jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1)
  dense = evaluation.forward(evaluation.dense_pruned_params(net, ticket), x)
  structured = evaluation.structured_forward(net, ticket.masks, x)
  scale = max(float(jnp.max(jnp.abs(dense))), 1e-30)
  return float(jnp.max(jnp.abs(dense - structured))) / scale


def peak_rss_mb() -> float:
  """Peak resident set size of this process so far (MB; Linux reports KB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------
# Configuration and the target.
# --------------------------------------------------------------------------------------


def _is_int_seq(x) -> bool:
  return isinstance(x, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in x)


def _names(x) -> tuple[str, ...]:
  """A tuple of names from a config field: ``("a", "b")``, ``"a,b"`` or ``("a,b",)`` (the
  last is what ``--config.variants=a,b`` parses to)."""
  items = [x] if isinstance(x, str) else list(x)
  return tuple(p.strip().strip("'\"") for item in items for p in str(item).split(",")
               if p.strip().strip("'\""))


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` (naming the field) for values the experiment cannot run."""
  from lth_jax.configs import experiment1 as presets  # pylint: disable=g-import-not-at-top

  def missing(have, want, prefix=""):
    for name, value in want.items():
      if name not in have:
        raise ConfigError(prefix + name, "missing (every field of "
                          "lth_jax/configs/experiment1.py is required)")
      if isinstance(value, ml_collections.ConfigDict):
        if not isinstance(have[name], (ml_collections.ConfigDict, dict)):
          raise ConfigError(prefix + name, "must be a group of fields")
        missing(have[name], value, prefix + name + ".")

  missing(config, presets.get_config("smoke"))
  eps = config.epsilon
  if not isinstance(eps, (int, float)) or not 0 < eps < 1:
    raise ConfigError("epsilon", f"must be in (0, 1), got {eps!r}")
  variants = _names(config.variants)
  if not variants or any(v not in VARIANTS for v in variants) or len(set(variants)) != len(variants):
    raise ConfigError("variants", f"must be distinct names from {VARIANTS}, got {variants}")
  objectives = _names(config.objectives)
  if (not objectives or any(o not in OBJECTIVES for o in objectives)
      or len(set(objectives)) != len(objectives)):
    raise ConfigError("objectives",
                      f"must be distinct names from {tuple(OBJECTIVES)}, got {objectives}")
  if "fewest_terms" in objectives:
    try:
      _objective_max_n("fewest_terms")
    except ImportError as e:
      raise ConfigError("objectives", f"'fewest_terms' needs lth_jax.fewest_terms ({e})") from None
  if str(config.dataset).lower().replace("-", "_") not in data_lib.DATASET_NAMES:
    raise ConfigError("dataset", f"must be one of {data_lib.DATASET_NAMES}, got "
                      f"{config.dataset!r}")
  if not isinstance(config.download, bool):
    raise ConfigError("download", f"must be true or false, got {config.download!r}")
  if config.download:
    if config.dataset == "synthetic":
      raise ConfigError("download", "the synthetic dataset is generated: nothing to download")
    if not config.data_dir:
      raise ConfigError("download", "needs data_dir: the directory to download the IDX "
                        "files into")
  if config.download_url and not str(config.download_url).startswith(("http://", "https://")):
    raise ConfigError("download_url", f"must be an http(s) URL, got {config.download_url!r}")
  data_dir = os.path.expanduser(config.data_dir) if config.data_dir else ""
  # With download, a missing data_dir is created; an existing non-directory never works.
  if data_dir and not os.path.isdir(data_dir) and (not config.download
                                                   or os.path.exists(data_dir)):
    raise ConfigError("data_dir", f"{config.data_dir} is not a directory")
  if config.dataset in ("mnist", "kmnist") and not config.data_dir:
    raise ConfigError("data_dir", f"dataset {config.dataset!r} needs a data_dir with its IDX "
                      "files (add --download to fetch them into it)")
  for field in ("test_limit",):
    if not isinstance(config[field], int) or config[field] < 0:
      raise ConfigError(field, f"must be an int >= 0, got {config[field]!r}")
  if not isinstance(config.eval_batch_size, int) or config.eval_batch_size < 1:
    raise ConfigError("eval_batch_size", f"must be a positive int, got {config.eval_batch_size!r}")
  t = config.target
  if t.npz:
    if not os.path.isfile(os.path.expanduser(t.npz)):
      raise ConfigError("target.npz", f"{t.npz} is not a file")
    if t.npz_layout not in ("torch", "jax"):
      raise ConfigError("target.npz_layout", f"must be 'torch' or 'jax', got {t.npz_layout!r}")
  else:
    if t.model not in ("fc2", "fc4", "lenet5", "mlp"):
      raise ConfigError("target.model", f"must be fc2, fc4, lenet5 or mlp, got {t.model!r}")
    if t.model == "lenet5" and "network" in variants:
      raise ConfigError("variants", "the network variant is available for FC2/FC4 (MLP) "
                        "targets only (Theorem 1's construction is for ReLU MLPs); run "
                        "lenet5 with variants=direct")
    if t.model == "mlp" and (not _is_int_seq(t.widths) or not t.widths
                             or min(t.widths) < 1 or t.widths[-1] != data_lib.NUM_CLASSES):
      raise ConfigError("target.widths", "must be positive ints ending in "
                        f"{data_lib.NUM_CLASSES}, got {t.widths!r}")
    for field in ("epochs", "batch_size"):
      if not isinstance(t[field], int) or t[field] < 1:
        raise ConfigError(f"target.{field}", f"must be a positive int, got {t[field]!r}")
    if not t.learning_rate > 0:
      raise ConfigError("target.learning_rate", f"must be > 0, got {t.learning_rate!r}")
  max_n = {o: _objective_max_n(o) for o in objectives}
  if "direct" in variants:
    n = config.direct.copies
    if not isinstance(n, int) or not 1 <= n <= min(max_n.values()):
      raise ConfigError("direct.copies", f"must be an int in [1, {min(max_n.values())}] "
                        f"(the objectives' maximum instance size), got {n!r}")
  if "network" in variants:
    nc = config.network
    if not _is_int_seq(nc.copies) or not nc.copies or min(nc.copies) < 1:
      raise ConfigError("network.copies", f"must be positive ints, got {nc.copies!r}")
    caps = (nc.max_half,) if isinstance(nc.max_half, int) else nc.max_half
    if not _is_int_seq(caps) or not caps or min(caps) < 0:
      raise ConfigError("network.max_half", "must be ints >= 0 (0 = default_max_half), one "
                        f"for every layer or one per layer, got {nc.max_half!r}")
    if max(caps) > min(max_n.values()):
      raise ConfigError("network.max_half", f"must be <= {min(max_n.values())} (the "
                        f"objectives' maximum instance size), got {nc.max_half!r}")
    if nc.distribution not in rn.DISTRIBUTIONS:
      raise ConfigError("network.distribution", f"must be one of {rn.DISTRIBUTIONS}, got "
                        f"{nc.distribution!r}")
    if not isinstance(nc.dense_check_batch, int) or nc.dense_check_batch < 0:
      raise ConfigError("network.dense_check_batch", f"must be an int >= 0, got "
                        f"{nc.dense_check_batch!r}")
  if not isinstance(config.solver.block_keys, int) or config.solver.block_keys < 1:
    raise ConfigError("solver.block_keys", f"must be a positive int, got "
                      f"{config.solver.block_keys!r}")


def _target_run_name(config) -> str:
  """Checkpoint subdirectory: readable, plus a hash of everything that trains the target."""
  t = config.target
  model = t.model if t.model != "mlp" else "mlp" + "-".join(str(w) for w in t.widths)
  spec = dict(model=model, dataset=config.dataset, epochs=t.epochs, lr=t.learning_rate,
              batch_size=t.batch_size, momentum=t.momentum, weight_decay=t.weight_decay,
              seed=t.seed)
  digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
  return f"{model}_{config.dataset}_e{t.epochs}_lr{t.learning_rate:g}_s{t.seed}_{digest}"


def target_checkpoint_dir(config: ml_collections.ConfigDict, workdir: str | None = None
                          ) -> str:
  """The orbax checkpoint directory of ``config``'s trained target (absolute):
  ``<config.target.checkpoint_dir or workdir/targets>/<run name + hash of the training
  settings>``, so different targets never share one and the same one is always found."""
  base = config.target.checkpoint_dir or os.path.join(workdir or ".", "targets")
  return os.path.abspath(os.path.join(os.path.expanduser(base), _target_run_name(config)))


def _data_dir(config) -> str | None:
  """The directory the dataset is read from (None: the dataset's default, or no files)."""
  return os.path.expanduser(config.data_dir) if config.data_dir else None


def load_target(config: ml_collections.ConfigDict, *, workdir: str | None = None,
                train: bool = True) -> tuple[list[jax.Array], dict]:
  """The target's kernels and a description of where they came from.

  ``config.target.npz`` set: imported (``targets.load_npz_target``). Otherwise the model is
  restored from its orbax checkpoint in ``target_checkpoint_dir(config, workdir)`` if
  finished there, else trained there (``load_or_train_target``); with ``train=False`` a
  missing checkpoint raises FileNotFoundError instead.

  Returns:
    kernels ``[(d_in, d_out)]`` for MLPs; for LeNet5 all five kernels
    (``models.LENET5_KERNEL_SHAPES``: conv ``(kh, kw, in, out)``, then FC), and the info.
  """
  t = config.target
  if t.npz:
    kernels = targets_lib.load_npz_target(os.path.expanduser(t.npz), t.npz_layout)
    return kernels, dict(source="npz", path=os.path.abspath(os.path.expanduser(t.npz)),
                         layout=t.npz_layout)
  model = models.get_model(t.model) if t.model != "mlp" else models.MLP(tuple(t.widths))
  ckpt = target_checkpoint_dir(config, workdir)
  t0 = time.perf_counter()
  params, metrics = training.load_or_train_target(
      model, checkpoint_dir=ckpt, key=jax.random.PRNGKey(t.seed), epochs=t.epochs,
      learning_rate=t.learning_rate, dataset=config.dataset, data_dir=_data_dir(config),
      batch_size=t.batch_size, momentum=t.momentum, weight_decay=t.weight_decay,
      train=train)
  kernels = [jnp.asarray(k, jnp.float32) for k in models.kernels_from_params(params)]
  return kernels, dict(source="checkpoint" if metrics.get("restored") else "trained",
                       checkpoint_dir=ckpt, epochs=t.epochs, learning_rate=t.learning_rate,
                       batch_size=t.batch_size, seconds=time.perf_counter() - t0,
                       train_history=metrics.get("history"))


# --------------------------------------------------------------------------------------
# Rows, the table, output files.
# --------------------------------------------------------------------------------------


def _check_finite(row: dict) -> None:
  for k, v in row.items():
    if isinstance(v, float) and not math.isfinite(v):
      raise FloatingPointError(f"row {row.get('variant')}/{row.get('objective')}: "
                               f"measurement {k} = {v}")


def _ticket_stats(ticket: construction.Ticket, epsilon: float) -> dict:
  errors = np.concatenate([np.asarray(e).reshape(-1) for e in ticket.weight_errors])
  bad = errors > np.float32(epsilon)
  return dict(fraction_within_eps=float(1.0 - bad.mean()), weights_missing_eps=int(bad.sum()),
              max_weight_error=float(errors.max()),
              worst_missing_error=float(errors[bad].max()) if bad.any() else 0.0,
              mean_weight_error=float(errors.mean()))


def _fmt_int(x) -> str:
  return f"{int(x):,}" if x is not None else "-"


def format_table(rows: Sequence[dict]) -> str:
  """The paper's table (one line per row) plus, for FC2 direct, the paper's own numbers."""
  head = (f"{'variant':<8} {'objective':<12} {'copies':>11} {'initial':>13} {'remaining':>12} "
          f"{'ratio':>7} {'within eps':>10} {'misses':>7} {'max err':>9} {'target acc':>10} "
          f"{'ticket acc':>10} {'solve s':>8} {'eval s':>7} {'peak MB':>8}")
  lines = [head, "-" * len(head)]
  for r in rows:
    copies = r["copies"] if isinstance(r["copies"], int) else "/".join(map(str, r["copies"]))
    lines.append(
        f"{r['variant']:<8} {r['objective']:<12} {copies:>11} {_fmt_int(r['initial_params']):>13} "
        f"{_fmt_int(r['remaining_params']):>12} {r['remaining_ratio']:>6.2f}x "
        f"{r['fraction_within_eps']:>10.6f} {r['weights_missing_eps']:>7d} "
        f"{r['max_weight_error']:>9.2e} {100 * r['target_accuracy']:>9.2f}% "
        f"{100 * r['ticket_accuracy']:>9.2f}% {r['solve_seconds']:>8.1f} "
        f"{r['eval_seconds']:>7.1f} {r['peak_rss_mb']:>8.0f}")
  if any(r["variant"] == "direct" and r.get("paper") for r in rows):
    p = PAPER_FC2_DIRECT
    lines.append(
        f"{'paper':<8} {'MIP (MNIST)':<12} {21:>11} {_fmt_int(p['initial_params']):>13} "
        f"{_fmt_int(p['remaining_params']):>12} {p['remaining_ratio']:>6.2f}x "
        f"{p['fraction_within_eps']:>10.6f} {0:>7d} {'<=1e-2':>9} "
        f"{100 * p['target_accuracy']:>9.2f}% {'(unverif.)':>10} {p['solve_seconds']:>8.0f} "
        f"{'-':>7} {'-':>8}")
  for r in rows:
    if r["variant"] == "network":
      lines.append(
          f"network/{r['objective']}: random network {_fmt_int(r['initial_params'])} params, "
          f"hidden widths {r['hidden_widths']}, copies/layer {r['copies']}, max_half "
          f"{r['max_half']}, structured-vs-dense rel. diff "
          f"{'-' if r['dense_check_rel_diff'] is None else format(r['dense_check_rel_diff'], '.1e')}")
  return "\n".join(lines)


def _prepare_out_dir(out_dir: str, overwrite: bool) -> None:
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise FileExistsError(f"out_dir {out_dir} exists and is not a directory")
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise FileExistsError(f"out_dir {out_dir} exists and is not empty: pass --overwrite to "
                          "replace its results")
  os.makedirs(out_dir, exist_ok=True)
  for name in (RESULTS_FILE, TABLE_FILE):  # never mix a previous run's rows with this one's
    if os.path.exists(os.path.join(out_dir, name)):
      os.remove(os.path.join(out_dir, name))


def _test_set(config) -> data_lib.Dataset:
  return data_lib.load_dataset(config.dataset, "test", _data_dir(config),
                               limit=config.test_limit or None)


def run_experiment1(config: ml_collections.ConfigDict, out_dir: str, *,
                    overwrite: bool = False) -> list[dict]:
  """Runs Experiment 1 and writes ``results.jsonl`` (one row per variant x objective,
  rewritten atomically after each row) and ``table.txt`` to ``out_dir``.

  Raises FileExistsError if ``out_dir`` is a non-empty directory and not ``overwrite``.
  Returns the rows (dicts; see ``format_table`` for the columns).
  """
  validate_config(config)
  if config.download:  # opt-in; before out_dir is touched, so a failed fetch leaves nothing
    data_lib.resolve_data_dir(config.dataset, _data_dir(config), download=True,
                              base_url=config.download_url or None)
  _prepare_out_dir(out_dir, overwrite)
  eps = float(config.epsilon)
  objectives = _names(config.objectives)
  cfg = config.to_dict()
  results_path = os.path.join(out_dir, RESULTS_FILE)

  test_ds = _test_set(config)
  kernels, target_info = load_target(config, workdir=out_dir)
  is_mlp = all(k.ndim == 2 for k in kernels)
  if is_mlp:
    sizes = construction.target_layer_sizes(kernels)
    if sizes[0] != int(np.prod(test_ds.images.shape[1:])):
      raise ValueError(f"target input size {sizes[0]} does not match {config.dataset}'s "
                       f"{int(np.prod(test_ds.images.shape[1:]))} pixels")
  else:  # LeNet5: its forward fixes the input shape
    sizes = None
    if test_ds.images.shape[1:] != (*data_lib.IMAGE_SHAPE, 1):
      raise ValueError(f"LeNet5 needs (28, 28, 1) images, {config.dataset} has "
                       f"{test_ds.images.shape[1:]}")
  if "network" in _names(config.variants):  # checked before any solving
    if not is_mlp:
      raise ConfigError("variants", "the network variant is available for FC2/FC4 (MLP) "
                        "targets only (Theorem 1's construction is for ReLU MLPs)")
    try:
      caps = _layer_caps(config.network.max_half, len(kernels))
    except ValueError as e:
      raise ConfigError("network.max_half", str(e)) from None
  target_params = sum(int(k.size) for k in kernels)
  all_w = np.concatenate([np.asarray(k).reshape(-1) for k in kernels])
  t0 = time.perf_counter()
  target_acc = kernels_accuracy(kernels, test_ds, config.eval_batch_size)
  logging.info("target %s: layer sizes %s, %d weights in [%.4f, %.4f], test accuracy %.4f "
               "(%d examples, %.1f s)", target_info["source"],
               sizes or [tuple(k.shape) for k in kernels], target_params,
               all_w.min(), all_w.max(), target_acc, len(test_ds.labels),
               time.perf_counter() - t0)
  common = dict(model=config.target.model if not config.target.npz else "npz",
                layer_sizes=list(sizes) if sizes else None,
                kernel_shapes=[list(k.shape) for k in kernels], dataset=config.dataset,
                test_examples=len(test_ds.labels), epsilon=eps, target_params=target_params,
                target_weight_range=[float(all_w.min()), float(all_w.max())],
                target_accuracy=target_acc, target=target_info, config=cfg)
  is_paper_fc2 = sizes == (784, 500, 10)
  rows = []
  key = jax.random.PRNGKey(config.seed)

  def finish(row, ticket, solve_seconds, evaluate):
    t_eval = time.perf_counter()
    row.update(evaluate())
    row["eval_seconds"] = time.perf_counter() - t_eval
    row.update(_ticket_stats(ticket, eps))
    row.update(solve_seconds=solve_seconds, remaining_params=int(ticket.num_params_kept),
               initial_params=int(ticket.num_params_random),
               remaining_ratio=int(ticket.num_params_kept) / target_params,
               initial_ratio=int(ticket.num_params_random) / target_params,
               peak_rss_mb=peak_rss_mb(), **common)
    _check_finite(row)
    rows.append(row)
    files_lib.write_jsonl(results_path, rows)
    logging.info("%s/%s: %d of %d weights within eps (worst error %.3g), remaining %d "
                 "params (%.2fx target), ticket accuracy %.4f (target %.4f), solve %.1f s",
                 row["variant"], row["objective"], target_params - row["weights_missing_eps"],
                 target_params, row["max_weight_error"], row["remaining_params"],
                 row["remaining_ratio"], row["ticket_accuracy"], target_acc, solve_seconds)

  if "direct" in _names(config.variants):
    n = int(config.direct.copies)
    coefs = direct_coefficients(config.seed, kernels, n)  # = fold_in(key, 1), as the benchmark
    for objective in objectives:
      t0 = time.perf_counter()
      ticket = direct_ticket(kernels, coefs, objective=objective, epsilon=eps,
                             block_keys=config.solver.block_keys)
      jax.block_until_ready(ticket)
      solve = time.perf_counter() - t0
      row = dict(variant="direct", objective=objective, copies=n,
                 coefficient_range=[float(coefs.low), float(coefs.high)])
      if is_paper_fc2:
        row["paper"] = PAPER_FC2_DIRECT
      finish(row, ticket, solve, lambda t=ticket: dict(
          ticket_accuracy=ticket_accuracy(t, test_ds, batch_size=config.eval_batch_size)))

  if "network" in _names(config.variants):
    nc = config.network
    search = search_copies(jax.random.fold_in(key, 2), kernels, nc.copies, epsilon=eps,
                           max_half=caps, distribution=nc.distribution,
                           max_instance=min(_objective_max_n(o) for o in objectives),
                           block_keys=config.solver.block_keys)
    net = search.net
    logging.info("network: copies per layer %s (max_half %s), random network %d params, "
                 "search %.1f s", search.copies, search.max_half, rn.num_params(net),
                 search.seconds)
    check_x = test_ds.images[:nc.dense_check_batch]
    for objective in objectives:
      t0 = time.perf_counter()
      ticket = network_ticket(net, kernels, objective=objective, epsilon=eps,
                              max_half=list(search.max_half),
                              block_keys=config.solver.block_keys)
      jax.block_until_ready(ticket)
      solve = time.perf_counter() - t0

      def evaluate(t=ticket):
        out = dict(ticket_accuracy=ticket_accuracy(t, test_ds, net=net,
                                                   batch_size=config.eval_batch_size))
        if nc.dense_check_batch:
          diff = dense_check(net, t, check_x)
          if not diff <= 1e-4:
            logging.error("structured and dense forward passes differ: rel. diff %.3g", diff)
          out["dense_check_rel_diff"] = diff
        else:
          out["dense_check_rel_diff"] = None
        return out

      row = dict(variant="network", objective=objective, copies=list(search.copies),
                 max_half=list(search.max_half), distribution=nc.distribution,
                 hidden_widths=[c * d for c, d in zip(search.copies, sizes[:-1])],
                 copies_search=search.log, search_seconds=search.seconds)
      finish(row, ticket, solve, evaluate)

  table = format_table(rows)
  files_lib.atomic_write_text(os.path.join(out_dir, TABLE_FILE), table + "\n")
  print(table, flush=True)
  return rows
