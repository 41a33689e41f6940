"""Experiment 1's ``"direct"`` variant, conv kernels included (interim; delete when replaced).

``direct_ticket`` is ``construction.find_ticket(coefficients, target, "direct")`` with a
blocked solver (``objectives.blocked_solver``) and conv kernels ``(kh, kw, in, out)`` solved
as ``(kh * kw * in, out)`` matrices (one coefficient row per output channel). Once the
direct construction accepts such kernels, this module goes: the driver then calls
``find_ticket(coefficients, kernels, "direct", solve_fn=objectives.blocked_solver(...))``
and samples with the construction's own sampler (same key and global range as
``direct_coefficients``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import construction
from lth_jax import objectives
from lth_jax.progress import Progress

__all__ = ["direct_coefficients", "direct_ticket"]


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


def _check_shapes(coefs, kernels) -> None:
  if len(coefs) != len(kernels):
    raise ValueError(f"{len(coefs)} coefficient layers for {len(kernels)} target layers")
  n = coefs[0].shape[1]
  for i, (c, k) in enumerate(zip(coefs, kernels)):
    if c.ndim != 2 or c.shape != (k.shape[1], n):
      raise ValueError(f"layer {i}: coefficients {c.shape} do not match kernel {k.shape} "
                       f"(need (d_out, n) = {(k.shape[1], n)})")


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
  _check_shapes(coefs, kernels)
  n = coefs[0].shape[1]
  flat_t = np.concatenate([k.T.reshape(-1) for k in kernels])  # (layer, o, j) order
  flat_c = np.concatenate([np.repeat(c, k.shape[0], axis=0) for c, k in zip(coefs, kernels)])
  progress = Progress(flat_t.size, what=progress_name or f"direct/{objective}",
                      unit="instances")
  mask, error = objectives.blocked_solver(objective, epsilon, block_keys, progress)(
      flat_t, flat_c)
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
