"""How large a random network must be for a target: the copies search of Experiment 1.

``search_copies`` measures, per target layer, the fewest copies (from a list of
candidates) whose Theorem-1 ticket (or the conv construction's, ``method="conv"``) meets
epsilon on every weight of the actual target.
``network_ticket`` builds that ticket for all layers with a blocked solver
(``objectives.blocked_solver``) and per-layer sign-half instance sizes (``half_sizes``).

Evaluate stage: imports the sample, solve and mask stages and infrastructure.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lth_jax import construction
from lth_jax import objectives
from lth_jax import random_net as rn
from lth_jax import subset_sum
from lth_jax import targets as targets_lib
from lth_jax.constructions import conv
from lth_jax.constructions import network
from lth_jax.progress import Progress

__all__ = ["CopiesSearch", "layer_caps", "half_sizes", "network_ticket", "search_copies"]


def layer_caps(max_half, num_layers: int) -> list:
  """``max_half`` per layer: None/int (every layer) or a sequence of one or ``num_layers``.

  Raises:
    ValueError: a sequence of another length.
  """
  if max_half is None or isinstance(max_half, (int, np.integer)):
    return [max_half] * num_layers
  caps = list(max_half)
  if len(caps) == 1:
    return caps * num_layers
  if len(caps) != num_layers:
    raise ValueError(f"max_half has {len(caps)} entries for {num_layers} target layers "
                     "(give one for all layers or one per layer)")
  return caps


def half_sizes(max_half, copies: Sequence[int], limit: int = subset_sum.MAX_N) -> list[int]:
  """The per-sign-half instance size of each layer.

  Args:
    max_half: per layer (as ``layer_caps``) the requested size, or 0/None for
      ``network.default_max_half(copies)``.
    copies: copies per layer of the random network.
    limit: the solver's maximum instance size.

  Returns:
    one int per layer, in ``[1, min(copies, limit)]``.
  """
  sizes = []
  for c, cap in zip(copies, layer_caps(max_half, len(copies))):
    m = network.default_max_half(c) if not cap else int(cap)
    sizes.append(max(1, min(m, int(c), int(limit))))
  return sizes


def _progress(what: str, total: int) -> Progress:
  return Progress(total, what=what, unit="instances")


def _layer_errors(u, v, kernel, m, *, epsilon, block_keys, progress=None):
  """Per-weight errors ``(d_in, d_out)`` of one layer's min-error ticket: ``find_ticket``
  on the one-layer random network ``(u (d_in, n), v (d_out, d_in, n))``."""
  d_in, d_out = kernel.shape
  # Only the structured view is used (no dense forward): the filler key is never read.
  net = rn.RandomNetwork({"u": [u], "v": [v]}, jax.random.key(0), (d_in, d_out))
  ticket = construction.find_ticket(
      net, [kernel], "network", max_half=m,
      solve_fn=objectives.blocked_solver("min_error", epsilon, block_keys, progress))
  return ticket.weight_errors[0]


def network_ticket(net, target: Sequence, *,
                   objective: str = "min_error", epsilon: float = 0.01,
                   max_half: int | Sequence[int] | None = None, block_keys: int = 1 << 24,
                   progress_name: str | None = None, method: str = "network"
                   ) -> construction.Ticket:
  """2L ticket of ``net`` for ``target`` with a pluggable SubsetSum objective.

  ``construction.find_ticket(net, target, method, max_half=..., objective=...)``, with
  the SubsetSum instances solved in fixed-size blocks with progress logs.

  Args:
    net: the random network (``sample_random_network``), layer sizes of the target; for
      ``method="conv"`` a ``conv.RandomCNN``, for ``method="bias"`` a
      ``constructions.bias.BiasNetwork``.
    target: kernels ``(d_in, d_out)`` (and conv kernels for ``"conv"``; ``"bias"``: or
      ``{"kernel", "bias"}`` layers).
    objective: ``"min_error"`` or ``"fewest_terms"`` (per sign half).
    epsilon: per-weight tolerance (``"fewest_terms"``).
    max_half: per-sign-half instance size: one int, one per layer, or None/0 for
      ``default_max_half(copies)`` (capped at the objective's maximum instance size).
    method: ``"network"``, ``"conv"`` (both solve ``network``'s instances) or ``"bias"``
      (the same instances plus one per bias).

  Returns:
    ``Ticket`` with method ``method``.
  """
  layers = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), list(target))
  kernels = targets_lib.split_layers(layers)[0]
  if method != "conv":
    sizes = targets_lib.target_layer_sizes(kernels)
    if sizes != tuple(net.layer_sizes):
      raise ValueError(f"target layer sizes {sizes} do not match the random network's "
                       f"{tuple(net.layer_sizes)}")
  limit = objectives.objective_max_n(objective)
  caps = layer_caps(max_half, len(kernels))
  if any(h and h > limit for h in caps):
    raise ValueError(f"max_half {caps} exceeds {objective}'s maximum instance size {limit}")
  total = sum(2 * int(k.size) for k in kernels)
  if method == "bias" or targets_lib.has_biases(layers):  # one instance per output bias
    total += sum(int(k.shape[-1]) for k in kernels)
  progress = _progress(progress_name or f"{method}/{objective}", total)
  return construction.find_ticket(
      net, layers, method, max_half=half_sizes(caps, net.copies, limit),
      solve_fn=objectives.blocked_solver(objective, epsilon, block_keys, progress))


@dataclasses.dataclass
class CopiesSearch:
  """Result of ``search_copies``.

  Attributes:
    net: the random network (``conv.RandomCNN`` for ``"conv"``) with the chosen copies.
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


def _search_layer(layer, u_all, v_all, kernel, candidates, halves, epsilon, block_keys):
  """One layer's candidates in increasing order until no weight misses ``epsilon``.

  Returns the layer's log (one dict per candidate tried)."""
  w = np.asarray(kernel).T  # (d_out, d_in)
  layer_log, miss_o, miss_j = [], None, None
  for c in candidates:
    m = halves[c][layer]
    u, v = u_all[:, :c], v_all[:, :, :c]
    if miss_o is None:  # first candidate: every weight
      progress = _progress(f"copies search, layer {layer + 1}, copies {c}", 2 * w.size)
      err = np.asarray(_layer_errors(u, v, kernel, m, epsilon=epsilon, block_keys=block_keys,
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
  return layer_log


def search_copies(key: jax.Array, target: Sequence[jax.Array], candidates: Sequence[int], *,
                  epsilon: float = 0.01, max_half: int | Sequence[int] | None = None,
                  max_instance: int = subset_sum.MAX_N, distribution: str = "uniform",
                  block_keys: int = 1 << 24, method: str = "network") -> CopiesSearch:
  """Per layer, the fewest copies (from ``candidates``) whose ticket meets ``epsilon`` on
  every weight, measured on the actual target.

  One random network is drawn with ``max(candidates)`` copies; smaller ones are its first
  copies (nested widths, ``truncate_copies``). Growing the copies (with a nondecreasing
  per-half size) only adds products to every SubsetSum instance, so a weight within epsilon
  stays within it: after a full solve at the first candidate only the missing weights are
  re-solved at the next.

  ``method="conv"``: the random CNN of ``constructions.conv`` (conv kernels in ``target``);
  its layers' instances are ``network``'s on the matrix view (``conv.matrix_network``), so
  the same search runs on that view.

  ``max_half`` (one int, or one per layer; None/0 = ``default_max_half(copies)``) and
  ``max_instance`` (the objectives' largest instance size) set the per-sign-half instance
  size ``m`` at each candidate; the final ticket's solver cost grows like ``2^(m/2)`` per
  instance, so layers with many weights may want a lower cap than small layers.
  """
  t0 = time.perf_counter()
  candidates = sorted({int(c) for c in candidates})
  kernels = [jnp.asarray(k, jnp.float32) for k in target]
  halves = {c: half_sizes(max_half, [c] * len(kernels), max_instance) for c in candidates}
  if method == "conv":
    full = conv.sample(key, kernels, candidates[-1], distribution=distribution)
    view, truncate = conv.matrix_network(full), conv.truncate_copies
  else:
    sizes = targets_lib.target_layer_sizes(kernels)
    full = view = rn.sample_random_network(key, sizes, candidates[-1], distribution)
    truncate = rn.truncate_copies
  log = [_search_layer(layer, u_all, v_all, targets_lib.as_matrix(k), candidates, halves,
                       epsilon, block_keys)
         for layer, (u_all, v_all, k) in enumerate(
             zip(view.params["u"], view.params["v"], kernels))]
  chosen = [layer_log[-1]["copies"] for layer_log in log]
  return CopiesSearch(truncate(full, chosen),
                      tuple(chosen), tuple(layer_log[-1]["max_half"] for layer_log in log),
                      log, time.perf_counter() - t0)
