"""The exact solver on every device (solve stage): SubsetSum instances split over a 1-D mesh.

``sharded_solve_subset_sum`` pads the instance count to a multiple of the device count
(padding instances are ``target 0`` over zero coefficients), places the instances with a
``NamedSharding`` on the instance axis, and runs ``solve_subset_sum`` on every device's
block through ``jax.shard_map`` inside one ``jax.jit`` with explicit in/out shardings.
(Plain sharded ``jit`` is not enough: the solver walks its batch with ``lax.map``, and a
loop over a sharded axis would make XLA gather the whole batch on every device.)
``mesh_solver(mesh)`` is it as a ``solve_fn``: ``find_ticket(..., solve_fn=mesh_solver(mesh))``
and the sweep (``sweep_targets(..., mesh=)``) split their instances the same way.

Per-instance results do not depend on how instances are grouped, so everything is
bit-identical to its single-device counterpart (tests/test_distributed.py checks this, with
exact equality, on 4 forced CPU devices). Meshes, placement and multi-host helpers live in
``sharding`` (``make_instance_mesh`` is also importable from here).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lth_jax import sharding
from lth_jax import subset_sum
from lth_jax.sharding import make_instance_mesh  # public path: lth_jax.distributed.make_instance_mesh


@functools.lru_cache(maxsize=None)
def _flat_solver(mesh: Mesh, key_format: str, chunk_keys: int):
  """jit(shard_map(solve_subset_sum)) on flat ``(B,)``, ``(B, n)`` with B % devices == 0."""
  spec = P(sharding.mesh_axis(mesh))

  def local(t, c):
    res = subset_sum.solve_subset_sum(t, c, key_format=key_format, chunk_keys=chunk_keys)
    return res.mask, res.value, res.error

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=spec)
  sh = NamedSharding(mesh, spec)
  explicit = mesh.axis_types[0] == jax.sharding.AxisType.Explicit

  def run(t, c):
    if explicit:  # array types carry shardings on Explicit meshes: make them say so
      t, c = jax.sharding.reshard(t, sh), jax.sharding.reshard(c, sh)
    return sharded(t, c)

  return jax.jit(run, in_shardings=(sh, sh), out_shardings=(sh, sh, sh))


def sharded_solve_subset_sum(
    targets,
    coefficients,
    *,
    mesh: Mesh | None = None,
    key_format: str | None = None,
    chunk_keys: int = 1 << 18,
) -> subset_sum.SubsetSumResult:
  """``solve_subset_sum`` with the instances split over ``mesh`` (default: all devices).

  Same arguments, broadcasting, errors and (bit-identical) results as
  ``subset_sum.solve_subset_sum``; ``chunk_keys`` bounds memory per device. When the
  instance count is a multiple of the device count the results stay sharded on the
  instance axis; otherwise the padding is cut off and XLA re-lays them out. Works on
  concrete inputs (host or device, also multi-host global arrays) and inside ``jit``.
  """
  mesh = make_instance_mesh() if mesh is None else mesh
  host = [isinstance(x, np.ndarray) or not isinstance(x, jax.Array)
          for x in (targets, coefficients)]
  # Host inputs stay on the host: each process places its own shards below.
  targets = np.asarray(targets, np.float32) if host[0] else targets
  coefficients = np.asarray(coefficients, np.float32) if host[1] else coefficients
  batch, n, key_format = subset_sum.check_inputs(targets, coefficients, key_format)
  size = int(np.prod(batch)) if batch else 1
  padded = sharding.padded_size(size, mesh)
  xp = np if all(host) else jnp
  flat_t = xp.broadcast_to(xp.asarray(targets, xp.float32), batch).reshape(-1)
  flat_c = xp.broadcast_to(xp.asarray(coefficients, xp.float32), batch + (n,)).reshape(-1, n)
  if padded != size:
    flat_t = xp.pad(flat_t, (0, padded - size))
    flat_c = xp.pad(flat_c, ((0, padded - size), (0, 0)))
  if xp is np:
    sh = sharding.instance_sharding(mesh)
    flat_t, flat_c = sharding.put_sharded(flat_t, sh), sharding.put_sharded(flat_c, sh)
  mask, value, error = _flat_solver(mesh, key_format, int(chunk_keys))(flat_t, flat_c)
  if padded != size:
    mask, value, error = mask[:size], value[:size], error[:size]
  return subset_sum.SubsetSumResult(mask.reshape(batch + (n,)), value.reshape(batch),
                                    error.reshape(batch))


@functools.lru_cache(maxsize=None)
def mesh_solver(mesh: Mesh):
  """``sharded_solve_subset_sum`` on ``mesh`` as a jitted ``solve_fn`` for
  ``construction.find_ticket`` and ``objectives.solve_grouped`` (one per mesh, so its
  compiled programs are reused). ``"single"`` tickets solve no SubsetSum and ignore it."""
  return jax.jit(functools.partial(sharded_solve_subset_sum, mesh=mesh))
