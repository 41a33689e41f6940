"""Device meshes, placement and processes (infrastructure stage: imports no lth_jax module).

One idea: independent work split along one axis of a 1-D mesh.

* ``make_instance_mesh()``: a 1-D ``jax.make_mesh`` over all (or the given) devices, axis
  ``"instances"``. On one host with several CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=N``) or several accelerators, and on
  many hosts after ``initialize_distributed(True)`` (``jax.distributed.initialize``).
* ``instance_sharding`` / ``replicated`` / ``put_sharded`` / ``to_host``: placement of host
  arrays on the mesh (each process supplies its own shards) and back.
* ``sharded_grid_program``: a width x seed grid program with its seed axis split over the
  mesh (``jax.shard_map`` inside one ``jax.jit`` with explicit in/out shardings).

Multi-host: every process calls the same functions with the same host inputs; results are
global arrays, and ``to_host`` gathers one to every process. Only process 0 should write
files (``is_primary``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "instances"


# --------------------------------------------------------------------------------------
# Meshes, placement, processes.
# --------------------------------------------------------------------------------------


def initialize_distributed(enabled: bool = False, **kwargs) -> int:
  """``jax.distributed.initialize(**kwargs)`` when ``enabled`` (multi-host jobs; on
  managed clusters the arguments are discovered from the environment). Returns this
  process's index (0 when not enabled)."""
  if enabled:
    jax.distributed.initialize(**kwargs)
  return jax.process_index()


def is_primary() -> bool:
  """True on the one process that writes results (process 0)."""
  return jax.process_index() == 0


def make_instance_mesh(devices: Sequence[jax.Device] | None = None,
                       axis_name: str = AXIS) -> Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every process).

  The axis has ``Auto`` type: shardings are chosen by ``jit``'s in/out shardings, not
  carried in array types.
  """
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("make_instance_mesh needs at least one device")
  return jax.make_mesh((len(devices),), (axis_name,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def mesh_axis(mesh: Mesh) -> str:
  """The one axis name of a 1-D mesh (ValueError otherwise)."""
  if len(mesh.axis_names) != 1:
    raise ValueError(f"need a 1-D mesh, got axes {mesh.axis_names} of shape "
                     f"{dict(mesh.shape)}")
  return mesh.axis_names[0]


def instance_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (instance / grid) axis split over the mesh, other axes whole."""
  return NamedSharding(mesh, P(mesh_axis(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def num_devices(mesh: Mesh) -> int:
  return int(mesh.devices.size)


def padded_size(count: int, mesh: Mesh) -> int:
  """``count`` rounded up to a multiple of the mesh's device count."""
  d = num_devices(mesh)
  return -(-int(count) // d) * d


def put_sharded(x, sharding: NamedSharding) -> jax.Array:
  """Host array or ``jax.Array`` (PRNG key arrays included) -> array with ``sharding``.

  On many hosts every process passes the same host copy and supplies its own shards from
  it (``jax.device_put`` cannot reach other processes' devices); a global array is
  resharded as it is.
  """
  if isinstance(x, jax.Array):
    if x.sharding == sharding:
      return x
    if not x.is_fully_addressable or sharding.is_fully_addressable:
      return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = put_sharded(np.asarray(jax.random.key_data(x)), sharding)
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def put_sharded_tree(tree, sharding: NamedSharding):
  """``put_sharded`` on every leaf."""
  return jax.tree.map(lambda x: put_sharded(x, sharding), tree)


def to_host(x) -> np.ndarray:
  """A (possibly multi-host, sharded) array as one numpy array on every process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


# --------------------------------------------------------------------------------------
# The grid runner.
# --------------------------------------------------------------------------------------


# Output shardings of the last sharded grid program (diagnostics; tests read it).
last_grid_shardings: list = []


def _grid_spec(axis: str, ndim: int) -> P:
  """Grid outputs ``(widths, seeds, ...)`` are split on the seed axis; the rest (per
  target) are replicated."""
  return P(None, axis) if ndim >= 2 else P()


@functools.lru_cache(maxsize=None)
def _sharded_grid(body, mesh: Mesh, specs, opts, compiler_options, in_avals):
  """jit(shard_map(body)) with explicit in/out shardings: every device runs ``body`` on
  its block of seeds.

  ``in_avals``: ``(treedef, leaves)`` of the abstract per-device arguments
  ``(targets, epsilon, data, seed_keys (T, S / devices))``; the output shardings follow
  from ``body``'s output shapes, so they are part of the cache key through these.
  """
  axis = mesh_axis(mesh)
  local = functools.partial(body, specs=specs, opts=opts)
  shapes = jax.eval_shape(local, *jax.tree.unflatten(*in_avals))
  out_specs = jax.tree.map(lambda s: _grid_spec(axis, s.ndim), shapes)
  in_specs = (P(), P(), P(), P(None, axis))
  sharded = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
  rep = replicated(mesh)
  return jax.jit(
      sharded,
      in_shardings=(rep, rep, rep, NamedSharding(mesh, in_specs[3])),
      out_shardings=jax.tree.map(lambda spec: NamedSharding(mesh, spec), out_specs),
      compiler_options=None if compiler_options is None else dict(compiler_options))


def sharded_grid_program(body, mesh: Mesh, targets, epsilon, data, seed_keys, *, specs,
                         opts, compiler_options=None):
  """A grid program with its seed axis split over ``mesh`` (``jax.shard_map``).

  ``sweep.sweep_targets(..., mesh=)`` calls this. One ``jax.jit`` with explicit
  ``NamedSharding`` in/out shardings: the targets, epsilon and data replicated, the seed
  keys and the grid outputs split on the seed axis.

  Args:
    body: the grid program, ``body(targets, epsilon, data, seed_keys, *, specs, opts)``
      (e.g. the sweep's), returning a pytree whose ``(W, S, ...)`` leaves (ndim >= 2)
      are per (width, seed) and whose other leaves are the same on every device.
    mesh: a 1-D mesh.
    targets, epsilon, data: replicated inputs of ``body``.
    seed_keys: ``(T, S)`` typed keys, ``S`` a multiple of the device count; each device
      gets ``S / devices`` consecutive seeds of every target.
    specs, opts: ``body``'s static arguments (hashable).
    compiler_options: hashable tuple of ``(name, value)`` XLA options, or None.

  Returns:
    ``body``'s outputs for all ``S`` seeds: ``(W, S, ...)`` leaves sharded on the seed
    axis, the others replicated. Their shardings are kept in ``last_grid_shardings``.
  """
  devices = num_devices(mesh)
  if seed_keys.ndim != 2 or seed_keys.shape[1] % devices:
    raise ValueError(f"seed_keys must be (targets, seeds) with seeds a multiple of the "
                     f"{devices} devices, got shape {seed_keys.shape}")
  rep = replicated(mesh)
  targets, epsilon, data = put_sharded_tree((targets, epsilon, data), rep)
  seed_keys = put_sharded(seed_keys, NamedSharding(mesh, P(None, mesh_axis(mesh))))
  local_keys = jax.ShapeDtypeStruct((seed_keys.shape[0], seed_keys.shape[1] // devices),
                                    seed_keys.dtype)
  leaves, tree = jax.tree.flatten((targets, epsilon, data, local_keys))
  in_avals = (tree, tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves))
  fn = _sharded_grid(body, mesh, specs, opts, compiler_options, in_avals)
  out = fn(targets, epsilon, data, seed_keys)
  last_grid_shardings[:] = [a.sharding for a in jax.tree.leaves(out)]
  return out
