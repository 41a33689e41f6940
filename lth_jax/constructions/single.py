"""``"single"``: a Malach et al.-style baseline on the ``"network"`` construction's network.

Same random network, instances and assembly as ``"network"``, but no SubsetSum: each sign
half keeps at most one copy, the one whose product is closest to the target (if it beats
keeping none). Its error falls like ``1/n`` instead of ``e^{-Theta(n)}`` (SPEC section 3).
Halves are not capped: picking one product costs nothing per extra copy.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import lth_jax.constructions.base as base
import lth_jax.constructions.network as network


def single_choice(targets: jax.Array, prods: jax.Array, valid: jax.Array) -> jax.Array:
  """Per instance at most one product, the closest, if it beats the empty subset.

  Args:
    targets ``(2, d_out, d_in)``, prods ``(2, d_out, d_in, m)``, valid ``(2, d_in, m)``
    (``network.layer_instances``' fields).
  Returns:
    chosen ``(2, d_out, d_in, m)`` bool.
  """
  err = jnp.abs(targets[..., None] - prods)
  best = jnp.argmin(jnp.where(valid[:, None], err, jnp.inf), axis=-1)
  one = jax.nn.one_hot(best, prods.shape[-1], dtype=bool) & valid[:, None]
  better = jnp.sum(jnp.where(one, err, 0.0), -1) < jnp.abs(targets)
  return one & better[..., None]


def choose(problems, aux):
  """``[(chosen, error)]`` per layer (``network.instances``' problems and aux)."""
  out = []
  for (t, prods), (valid, _) in zip(problems, aux):
    chosen = single_choice(t, prods, valid)
    out.append((chosen, jnp.abs(t - jnp.sum(jnp.where(chosen, prods, 0.0), -1))))
  return out


def instance_size(width: int, cap: int | None) -> int:
  """Every member copy (``cap`` is ignored)."""
  del cap
  return int(width)


# The network construction with another instance size and a choice instead of a solver.
SINGLE = base.register(dataclasses.replace(
    network.NETWORK, name="single", instance_size=instance_size, choose=choose))
