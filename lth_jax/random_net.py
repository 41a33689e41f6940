"""The random network of Theorem 1: depth 2l, i.i.d. entries, two views.

For a target with layer sizes ``d_0 .. d_l`` and ``n_i`` copies per input in layer ``i``,
the random network has ``2l`` layers; odd layer ``2i - 1`` has ``n_i * d_{i-1}`` hidden
units, unit ``h = j * n_i + k`` being copy ``k`` of input ``j``.

Two views of the same random draw:

* structured (``RandomNetwork.params``): only the entries a ticket can keep,
  ``{"u": [U_i (d_{i-1}, n_i)], "v": [V_i (d_i, d_{i-1}, n_i)]}`` with
  ``U_i[j, k] = M1[j*n+k, j]`` and ``V_i[o, j, k] = M2[o, j*n+k]``;
* dense (``dense_params``): the ``2l`` full kernels in JAX convention ``x @ K``,
  literally an MLP whose every entry is i.i.d. (the entries a ticket always prunes are
  drawn from a separate key, so the structured view never has to materialise them).

Every copy ``k`` draws from ``fold_in(key, k)``, so the network with ``w`` copies is
exactly the first ``w`` copies of any wider network from the same key (nested widths).
"""

from __future__ import annotations

import functools
from typing import Sequence

import chex
import jax
import jax.numpy as jnp

from lth_jax import _checks
from flax import struct

DISTRIBUTIONS = ("uniform", "normal")


def _draw(key, shape, distribution):
  if distribution == "uniform":
    return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
  return jax.random.normal(key, shape, jnp.float32)


def _per_copy(key, copies, shape, distribution):
  """``shape + (copies,)`` draws; copy ``k`` uses ``fold_in(key, k)`` (nested widths)."""
  keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(copies))
  draws = jax.vmap(lambda k: _draw(k, shape, distribution))(keys)
  return jnp.moveaxis(draws, 0, -1)


@struct.dataclass
class RandomNetwork:
  """A sampled Theorem-1 random network (structured view + what rebuilds the dense one).

  Attributes:
    params: ``{"u": [U_i (d_{i-1}, n_i)], "v": [V_i (d_i, d_{i-1}, n_i)]}``.
    filler_key: key for the dense entries outside the structured view.
    layer_sizes: target sizes ``(d_0, ..., d_l)``.
    distribution: ``"uniform"`` (U[-1, 1]) or ``"normal"`` (N(0, 1)).
  """

  params: dict
  filler_key: jax.Array
  layer_sizes: tuple = struct.field(pytree_node=False)
  distribution: str = struct.field(pytree_node=False, default="uniform")

  @property
  def copies(self) -> tuple[int, ...]:
    return tuple(int(u.shape[-1]) for u in self.params["u"])

  @property
  def num_layers(self) -> int:
    return len(self.layer_sizes) - 1


def _check_sizes(layer_sizes, copies):
  """Validated ``(sizes, copies)`` tuples of ints (one ``copies`` entry per layer)."""
  try:
    sizes = tuple(layer_sizes)
  except TypeError:
    sizes = None
  if sizes is None or len(sizes) < 2 or not all(_checks.is_int(d) and d >= 1 for d in sizes):
    raise ValueError(f"layer_sizes must list >= 2 positive int sizes (d_0..d_l), got "
                     f"{layer_sizes!r}")
  sizes = tuple(int(d) for d in sizes)
  num = len(sizes) - 1
  given = copies
  if _checks.is_int(copies):
    copies = (copies,) * num
  else:
    try:
      copies = None if isinstance(copies, str) else tuple(copies)
    except TypeError:  # not iterable, e.g. 2.5
      copies = None
    if copies is None:
      raise ValueError(f"copies must be a positive int or a sequence of {num} (one per "
                       f"target layer), got {given!r}")
  if len(copies) != num:
    raise ValueError(f"copies has {len(copies)} entries for {num} target layers: give one "
                     f"int or {num}")
  if not all(_checks.is_int(c) and c >= 1 for c in copies):
    raise ValueError(f"copies must be positive ints, got {given!r}")
  return sizes, tuple(int(c) for c in copies)


def sample_random_network(
    key: chex.PRNGKey,
    layer_sizes: Sequence[int],
    copies: int | Sequence[int],
    distribution: str = "uniform",
) -> RandomNetwork:
  """Samples the depth-2l random network of Theorem 1.

  Args:
    key: PRNG key.
    layer_sizes: target sizes ``(d_0, ..., d_l)``.
    copies: copies per input ``n_i``, one int for all layers or one per layer.
    distribution: ``"uniform"`` (U[-1, 1], the paper's) or ``"normal"``.

  Returns:
    RandomNetwork; width of odd layer i is ``copies[i] * d_{i-1}``.

  Raises:
    ValueError: fewer than two or non-positive or non-int ``layer_sizes``; ``copies``
      not a positive int or a sequence of one positive int per target layer (e.g. 2.5,
      0, or the wrong length); an unknown ``distribution``.
  """
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
  sizes, copies = _check_sizes(layer_sizes, copies)
  return _sample(key, sizes, copies, distribution)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample(key, sizes, copies, distribution):
  key_u, key_v, filler_key = jax.random.split(key, 3)
  us, vs = [], []
  for i, n in enumerate(copies):
    d_in, d_out = sizes[i], sizes[i + 1]
    us.append(_per_copy(jax.random.fold_in(key_u, i), n, (d_in,), distribution))
    vs.append(_per_copy(jax.random.fold_in(key_v, i), n, (d_out, d_in), distribution))
  return RandomNetwork({"u": us, "v": vs}, filler_key, sizes, distribution)


def truncate_copies(net: RandomNetwork, copies: int | Sequence[int]) -> RandomNetwork:
  """The network with fewer copies per input: exactly what ``sample_random_network`` gives
  for the same key and the smaller ``copies`` (the first copies of every input)."""
  _, copies = _check_sizes(net.layer_sizes, copies)
  if any(c > have for c, have in zip(copies, net.copies)):
    raise ValueError(f"cannot truncate copies {net.copies} to larger {copies}")
  us = [u[..., :c] for u, c in zip(net.params["u"], copies)]
  vs = [v[..., :c] for v, c in zip(net.params["v"], copies)]
  return net.replace(params={"u": us, "v": vs})


@jax.jit
def dense_params(net: RandomNetwork) -> list[jax.Array]:
  """The ``2l`` full kernels of the random network (JAX convention, ``x @ K``).

  Layer ``2i-1``: ``(d_{i-1}, n_i d_{i-1})`` with ``K[j, j*n+k] = U_i[j, k]`` and every
  other entry an independent draw. Layer ``2i``: ``(n_i d_{i-1}, d_i)`` with
  ``K[j*n+k, o] = V_i[o, j, k]``.
  """
  kernels = []
  for i, (u, v) in enumerate(zip(net.params["u"], net.params["v"])):
    d_in, n = u.shape
    d_out = v.shape[0]
    # filler[k][j', j] = entry from input j' to unit (j, k); diagonal replaced by U.
    filler = _per_copy(jax.random.fold_in(net.filler_key, i), n, (d_in, d_in), net.distribution)
    eye = jnp.eye(d_in, dtype=bool)[:, :, None]
    m1 = jnp.where(eye, u[None, :, :], filler)  # (j', j, k): diag entries U[j, k]
    kernels.append(m1.reshape(d_in, d_in * n))
    kernels.append(jnp.transpose(v, (1, 2, 0)).reshape(d_in * n, d_out))
  return kernels


def num_params(net: RandomNetwork) -> int:
  """Parameters of the dense random network (every entry of the 2l kernels)."""
  total = 0
  for u, v in zip(net.params["u"], net.params["v"]):
    d_in, n = u.shape
    total += d_in * n * d_in + d_in * n * v.shape[0]
  return total
