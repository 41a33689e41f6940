"""Running the solver, tickets and sweeps on every device: a 1-D mesh over instances.

SubsetSum instances are independent, so the work splits along one axis:

* ``make_instance_mesh()``: a 1-D ``jax.make_mesh`` over all (or the given) devices, axis
  ``"instances"``. On one host with several CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=N``) or several accelerators, and on
  many hosts after ``initialize_distributed(True)`` (``jax.distributed.initialize``).
* ``sharded_solve_subset_sum``: pads the instance count to a multiple of the device count
  (padding instances are ``target 0`` over zero coefficients), places the instances with a
  ``NamedSharding`` on the instance axis, and runs ``solve_subset_sum`` on every device's
  block through ``jax.shard_map`` inside one ``jax.jit`` with explicit in/out shardings.
  (Plain sharded ``jit`` is not enough: the solver walks its batch with ``lax.map``, and a
  loop over a sharded axis would make XLA gather the whole batch on every device.)
* ``sharded_find_ticket``: ``find_ticket`` with every SubsetSum call sharded
  (``solve_fn=mesh_solver(mesh)``).
* ``sharded_sweep`` / ``sharded_sweep_targets``: the sweep's one grid program with its seed
  axis split over the mesh (``sweep_targets(..., mesh=)``: every device runs the whole
  program on its block of seeds through ``sharded_grid_program``, ``jax.shard_map``);
  outputs ``(widths, seeds, ...)`` stay sharded on the seed axis.

Per-instance results do not depend on how instances are grouped, so the solver and tickets
are bit-identical to their single-device counterparts, and so are a sweep's per-(width,
seed) numbers: every grid reduction (max / mean error, fraction within epsilon, kept counts)
is over one grid point's own weights, never across seeds, and the bound is computed on the
host from the per-weight errors. tests/test_distributed.py checks all of this, with exact
equality, on 4 forced CPU devices. (``sup_error`` once differed in its last bit on one grid,
because XLA rewrote the gradient of ``jnp.linalg.norm`` differently when compiling for
several partitions; ``evaluation`` now spells that derivative out with ``lax.rsqrt``.)

Multi-host: every process calls the same functions with the same host inputs; results are
global arrays, and ``to_host`` gathers one to every process. Only process 0 should write
files (``is_primary``).
"""

from __future__ import annotations

import functools
import importlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lth_jax import construction
from lth_jax import random_net as rn
from lth_jax import subset_sum

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


def _mesh_axis(mesh: Mesh) -> str:
  if len(mesh.axis_names) != 1:
    raise ValueError(f"need a 1-D mesh, got axes {mesh.axis_names} of shape "
                     f"{dict(mesh.shape)}")
  return mesh.axis_names[0]


def instance_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (instance / grid) axis split over the mesh, other axes whole."""
  return NamedSharding(mesh, P(_mesh_axis(mesh)))


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
# The sharded solver.
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _flat_solver(mesh: Mesh, key_format: str, chunk_keys: int):
  """jit(shard_map(solve_subset_sum)) on flat ``(B,)``, ``(B, n)`` with B % devices == 0."""
  axis = _mesh_axis(mesh)
  spec = P(axis)

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


def _check_solver_args(targets, coefficients):
  """Shapes as ``solve_subset_sum`` accepts them -> (batch shape, n)."""
  if coefficients.ndim == 0:
    raise ValueError("coefficients must have at least one axis (the subset axis, last)")
  n = coefficients.shape[-1]
  if not 1 <= n <= subset_sum.MAX_N:
    raise ValueError(f"need 1 <= n <= {subset_sum.MAX_N} coefficients per instance, got {n}")
  try:
    batch = tuple(jnp.broadcast_shapes(targets.shape, coefficients.shape[:-1]))
  except ValueError as e:
    raise ValueError(
        f"targets shape {targets.shape} does not broadcast with coefficients batch shape "
        f"{coefficients.shape[:-1]} (coefficients are batch + (n,))") from e
  if int(np.prod(batch)) == 0:
    raise ValueError(f"empty batch: targets shape {targets.shape}, coefficients shape "
                     f"{coefficients.shape}")
  return batch, n


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
  concrete inputs (host or device) and inside ``jit``.
  """
  mesh = make_instance_mesh() if mesh is None else mesh
  concrete = not any(isinstance(x, jax.core.Tracer) for x in (targets, coefficients))
  if concrete and not isinstance(targets, jax.Array):
    targets = np.asarray(targets, np.float32)
  if concrete and not isinstance(coefficients, jax.Array):
    coefficients = np.asarray(coefficients, np.float32)
  batch, n = _check_solver_args(targets, coefficients)
  key_format = key_format or subset_sum.default_key_format()
  if concrete:
    bad_t = ~np.isfinite(to_host(targets))
    bad_c = ~np.isfinite(to_host(coefficients))
    if bad_t.any() or bad_c.any():
      raise ValueError(
          f"non-finite input: {int(bad_t.sum())} NaN/Inf target(s), {int(bad_c.sum())} "
          "NaN/Inf coefficient(s)")
  size = int(np.prod(batch)) if batch else 1
  padded = padded_size(size, mesh)
  xp = np if concrete and isinstance(targets, np.ndarray) and isinstance(
      coefficients, np.ndarray) else jnp
  flat_t = xp.broadcast_to(xp.asarray(targets, xp.float32), batch).reshape(-1)
  flat_c = xp.broadcast_to(xp.asarray(coefficients, xp.float32), batch + (n,)).reshape(-1, n)
  if padded != size:
    flat_t = xp.pad(flat_t, (0, padded - size))
    flat_c = xp.pad(flat_c, ((0, padded - size), (0, 0)))
  if xp is np:  # host inputs: each process places its own shards
    sh = instance_sharding(mesh)
    flat_t, flat_c = put_sharded(flat_t, sh), put_sharded(flat_c, sh)
  mask, value, error = _flat_solver(mesh, key_format, int(chunk_keys))(flat_t, flat_c)
  if padded != size:
    mask, value, error = mask[:size], value[:size], error[:size]
  return subset_sum.SubsetSumResult(mask.reshape(batch + (n,)), value.reshape(batch),
                                    error.reshape(batch))


# --------------------------------------------------------------------------------------
# Tickets.
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def mesh_solver(mesh: Mesh):
  """``sharded_solve_subset_sum`` on ``mesh`` as a jitted ``solve_fn`` for
  ``construction.find_ticket`` (one per mesh, so its compiled programs are reused)."""
  return jax.jit(functools.partial(sharded_solve_subset_sum, mesh=mesh))


def sharded_find_ticket(
    random_net: rn.RandomNetwork | construction.DirectCoefficients,
    target: Sequence[jax.Array],
    method: str = "network",
    *,
    max_half: int | Sequence[int] | None = None,
    mesh: Mesh | None = None,
) -> construction.Ticket:
  """``construction.find_ticket`` with its SubsetSum instances split over ``mesh``
  (``solve_fn=mesh_solver(mesh)``).

  Same arguments and bit-identical ``Ticket``. ``"single"`` solves no SubsetSum (one
  argmin per instance) and runs as ``find_ticket`` does.
  """
  mesh = make_instance_mesh() if mesh is None else mesh
  return construction.find_ticket(random_net, target, method, max_half=max_half,
                                  solve_fn=mesh_solver(mesh))


# --------------------------------------------------------------------------------------
# Sweeps.
# --------------------------------------------------------------------------------------

def _sweep_module():
  # By path: ``lth_jax.sweep`` is also the name of the re-exported function. Late, so
  # importing this module does not import the sweep's evaluation code.
  return importlib.import_module("lth_jax.sweep")


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
  axis = _mesh_axis(mesh)
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
  """A sweep's grid program with its seed axis split over ``mesh`` (``jax.shard_map``).

  ``sweep.sweep_targets(..., mesh=)`` calls this; ``sharded_sweep_targets`` is the usual
  entry point. One ``jax.jit`` with explicit ``NamedSharding`` in/out shardings: the
  targets, epsilon and data replicated, the seed keys and the grid outputs split on the
  seed axis.

  Args:
    body: the grid program, ``body(targets, epsilon, data, seed_keys, *, specs, opts)``
      (``sweep._grid_body``), returning a pytree whose ``(W, S, ...)`` leaves (ndim >= 2)
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
  seed_keys = put_sharded(seed_keys, NamedSharding(mesh, P(None, _mesh_axis(mesh))))
  local_keys = jax.ShapeDtypeStruct((seed_keys.shape[0], seed_keys.shape[1] // devices),
                                    seed_keys.dtype)
  leaves, tree = jax.tree.flatten((targets, epsilon, data, local_keys))
  in_avals = (tree, tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves))
  fn = _sharded_grid(body, mesh, specs, opts, compiler_options, in_avals)
  out = fn(targets, epsilon, data, seed_keys)
  last_grid_shardings[:] = [a.sharding for a in jax.tree.leaves(out)]
  return out


def sharded_sweep_targets(*args, mesh: Mesh | None = None, **kwargs):
  """``sweep.sweep_targets`` with every grid's seeds split over ``mesh`` (default: all
  devices): ``sweep_targets(..., mesh=mesh)``. Same arguments and bit-identical results; the seed count
  is padded to a multiple of the device count (extra seeds are computed and dropped)."""
  mesh = make_instance_mesh() if mesh is None else mesh
  return _sweep_module().sweep_targets(*args, mesh=mesh, **kwargs)


def sharded_sweep(target, widths, num_seeds, method="network", *, mesh: Mesh | None = None,
                  **kwargs):
  """``sweep.sweep`` with the seeds split over ``mesh``; see ``sharded_sweep_targets``."""
  return sharded_sweep_targets([target], widths, num_seeds, (method,), mesh=mesh,
                               **kwargs)[0][method]
