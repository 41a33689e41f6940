"""``"direct"``: the official code's Experiment 1 shortcut (SPEC section 3); no network.

Every weight of output row ``o`` (column ``o`` of the kernel) is replaced by a subset sum of
the same ``n`` i.i.d. ``U[low, high]`` coefficients of that row, ``[low, high]`` = the
target's global weight range. Random parameters: ``n`` per weight; kept: the chosen
coefficients. Conv kernels ``(kh, kw, in, out)`` are read as matrices
``(kh * kw * in, out)`` (``targets.as_matrix``): one coefficient vector per output channel,
reused along it, and the errors and effective kernels keep the kernel's shape.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
from flax import struct

from lth_jax import _checks
from lth_jax import targets as targets_lib
import lth_jax.constructions.base as base


@struct.dataclass
class DirectCoefficients:
  """Per layer ``(d_out, n)`` coefficients, one row per output; their range."""

  coefficients: list
  low: jax.Array
  high: jax.Array


def _kernels(target) -> list[jax.Array]:
  """Validated float32 kernels: an MLP chain (``targets.check_target``) or, when any kernel
  is not 2-D, each kernel non-empty and finite (conv and dense matrix views do not chain).
  Biased layers are refused (``targets.check_target``'s message): direct builds no biases."""
  if targets_lib.has_biases(target):
    return targets_lib.check_target(target)  # raises: a construction without biases
  if all(jnp.ndim(k) == 2 for k in target):
    return targets_lib.check_target(target)
  kernels = [jnp.asarray(k, jnp.float32) for k in target]
  for i, k in enumerate(kernels):
    if k.ndim < 2 or 0 in k.shape:
      raise ValueError(f"target layer {i} must be a non-empty kernel (..., d_out), got "
                       f"shape {k.shape}")
  _checks.check_finite([(f"layer {i}", k) for i, k in enumerate(kernels)], "target")
  return kernels


def sample_direct_coefficients(
    key: chex.PRNGKey,
    target: Sequence[jax.Array],
    copies: int,
    low: float | None = None,
    high: float | None = None,
    *,
    nested: bool = False,
) -> DirectCoefficients:
  """Per layer ``(d_out, copies)`` i.i.d. ``U[low, high]``, default range = the target's
  global weight range (``d_out``: the kernel's last axis).

  ``nested=False``: layer ``i`` draws from ``split(key, l)[i]`` at once (Experiment 1's
  draws). ``nested=True``: coefficient ``k`` of layer ``i`` is drawn from
  ``fold_in(fold_in(key, i), k)``, so the first ``w`` columns ARE the ``copies = w`` draw
  (the sweep's). Both schemes stay: published results depend on each.
  """
  kernels = _kernels(target)
  if not _checks.is_int(copies) or copies < 1:
    raise ValueError(f"copies must be a positive int, got {copies!r}")
  all_w = jnp.concatenate([k.reshape(-1) for k in kernels])
  low = jnp.min(all_w) if low is None else jnp.asarray(low, jnp.float32)
  high = jnp.max(all_w) if high is None else jnp.asarray(high, jnp.float32)
  if nested:
    coefs = []
    for i, k in enumerate(kernels):
      layer_key = jax.random.fold_in(key, i)
      draw = lambda c, d=k.shape[-1], lk=layer_key: jax.random.uniform(
          jax.random.fold_in(lk, c), (d,), jnp.float32, low, high)
      coefs.append(jax.vmap(draw, out_axes=1)(jnp.arange(copies)))
  else:
    keys = jax.random.split(key, len(kernels))
    coefs = [jax.random.uniform(k_, (kern.shape[-1], copies), jnp.float32, low, high)
             for k_, kern in zip(keys, kernels)]
  return DirectCoefficients(coefs, low, high)


# --------------------------------------------------------------------------------------
# The Construction functions.
# --------------------------------------------------------------------------------------


def sample(key, target, width, *, distribution: str = "uniform") -> DirectCoefficients:
  """Nested draws (``distribution`` does not apply: the range is the target's)."""
  del distribution
  return sample_direct_coefficients(key, target, width, nested=True)


def check(coefs, target) -> list[jax.Array]:
  if not isinstance(coefs, DirectCoefficients):
    raise ValueError("method 'direct' needs DirectCoefficients (sample_direct_coefficients), "
                     f"not a {type(coefs).__name__}")
  kernels = _kernels(target)
  if len(coefs.coefficients) != len(kernels):
    raise ValueError(f"{len(coefs.coefficients)} coefficient layers for {len(kernels)} "
                     "target layers")
  for i, (c, k) in enumerate(zip(coefs.coefficients, kernels)):
    if jnp.ndim(c) != 2 or c.shape[0] != k.shape[-1]:
      raise ValueError(f"coefficients {jnp.shape(c)} do not match kernel {k.shape} (need "
                       "d_out rows)")
    if c.shape[1] < 1:
      raise ValueError(f"coefficient layer {i} has no coefficients per weight: {c.shape}")
  if len({int(c.shape[1]) for c in coefs.coefficients}) != 1:
    raise ValueError("all layers need the same number of coefficients per weight")
  _checks.check_finite([(f"[{i}]", c) for i, c in enumerate(coefs.coefficients)],
                       "direct coefficients")
  return kernels


def widths(coefs: DirectCoefficients) -> tuple[int, ...]:
  return tuple(int(c.shape[1]) for c in coefs.coefficients)


def instance_size(width: int, cap: int | None) -> int:
  """Every coefficient (``cap`` is ignored)."""
  del cap
  return int(width)


def instances(coefs: DirectCoefficients, kernels, width, cap, *, sizes) -> base.Instances:
  """Per layer ``(W (d_out, d_in), coefficients (d_out, d_in, m))`` (row ``o``'s first
  ``width`` coefficients, the rest zero; ``d_in`` of the matrix view); ``aux``: per layer
  the ``(m,)`` slots in the width."""
  del cap
  problems, aux = [], []
  for i, (c, k) in enumerate(zip(coefs.coefficients, kernels)):
    m, n = sizes[i], c.shape[-1]
    in_width = jnp.arange(m) < base.per_layer(width, i)
    c = jnp.where(in_width[:n], c, 0.0)
    if m > n:
      c = jnp.pad(c, ((0, 0), (0, m - n)))
    w = targets_lib.as_matrix(k).T
    problems.append((w, jnp.broadcast_to(c[:, None, :], w.shape + (m,))))
    aux.append(in_width)
  return base.Instances(problems, aux)


def assemble(kernels, inst: base.Instances, solutions) -> base.Assembled:
  """Masks ``{"coefficients": [(d_out, d_in, n)]}`` (which coefficients each weight sums);
  errors are the solver's; ``effective``: the approximated kernels."""
  masks, errors, effective = [], [], []
  kept = jnp.int32(0)
  for k, (_, c), in_width, (mask, error) in zip(kernels, inst.problems, inst.aux, solutions):
    mask = mask & in_width  # padding coefficients are zero: never keep them
    masks.append(mask.astype(jnp.uint8))
    errors.append(error.T.reshape(k.shape))
    effective.append(jnp.sum(jnp.where(mask, c, 0.0), axis=-1).T.reshape(k.shape))
    kept = kept + jnp.sum(mask, dtype=jnp.int32)
  return base.Assembled({"coefficients": masks}, errors, effective, kept)


def effective_forward(effective, x: jax.Array) -> jax.Array:
  """``z -> relu(z) @ K - relu(-z) @ K`` (``= z @ K``) per layer: the float32 operations of
  the network tickets' forward, as the sweep always evaluated direct tickets."""
  return base.pair_forward([(k, k) for k in effective], x)


def dense_params(coefs: DirectCoefficients, masks: dict) -> list[jax.Array]:
  """No network is built: the dense form is the target-shaped kernels whose entries are
  the sums of their kept coefficients (2-D kernels)."""
  out = []
  for c, m in zip(coefs.coefficients, masks["coefficients"]):
    out.append(jnp.sum(jnp.where(m.astype(bool), c[:, None, :], 0.0), axis=-1).T)
  return out


@jax.jit
def structured_forward(coefs: DirectCoefficients, masks: dict, x: jax.Array) -> jax.Array:
  return targets_lib.forward(dense_params(coefs, masks), x)


def num_params(kernel_shapes, width) -> int:
  """``n_i`` coefficients per target weight."""
  return sum(int(base.per_layer(width, i)) * math.prod(s) for i, s in enumerate(kernel_shapes))


def width_factor(kernel_shapes, width) -> float:
  """Coefficients per weight (there is no network width)."""
  return float(max(int(base.per_layer(width, i)) for i in range(len(kernel_shapes))))


def depth(num_layers: int) -> int:
  return num_layers


DIRECT = base.register(base.from_module(sys.modules[__name__], "direct", stream=1,
                                        prunes_network=False))
