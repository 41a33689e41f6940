"""Chunked, resumable SubsetSum over more instances than fit in memory.

``solve_stream(source, out_dir)`` solves instances ``0 .. N-1`` in fixed-size chunks and
saves every finished chunk at once, so a run of millions of weights can be killed at any
moment and restarted with the same command: it skips the finished chunks and ends with
files identical to those of an uninterrupted run (per-instance results never depend on
the chunking, the device count or what was solved before).

Sources (``InstanceSource``) describe the instances without materialising them:

* ``DirectSource``: the ``"direct"`` construction at scale. Instance ``i``'s target is
  ``weights[i]`` (any array-like, e.g. ``np.load(path, mmap_mode="r")``), or, with no
  weights, a ``U[low, high]`` draw from ``fold_in(weight_key, i)``; its ``n`` coefficients
  are ``U[low, high]`` draws from ``fold_in(key, i // group_size)`` (``group_size = d_in``
  with row-major ``(d_out, d_in)`` weights shares one vector per output row, as the
  official code does). Everything random is generated per chunk on the device.
* ``ArraySource``: explicit ``targets (N,)`` and ``coefficients (N, n)`` or ``(n,)``
  (numpy arrays or memmaps; only one chunk is read at a time).

Output directory:

* ``manifest.json``: the run's configuration (source fingerprint, ``n``, ``N``, chunk size)
  and, once complete, a summary. A restart with a different configuration is refused
  (on every process of a multi-host job: process 0 checks and shares the verdict).
* ``chunk_000000.npz`` ...: per chunk ``start``, ``count``, ``n``, ``error``, ``value``
  (float32 ``(count,)``), ``kept`` and the mask, bit-packed (``mask_bits``: ``np.packbits``
  of the flattened bool ``(count, n)`` mask) or plain (``mask``). Written to a temporary
  file, flushed and ``os.replace``-d into place: a chunk file exists only when complete.

Memory: one or two chunks of inputs and outputs at a time (the host saves chunk ``i``
while the devices solve chunk ``i + 1``), plus the solver's own ``chunk_keys`` bound.
With a ``mesh``, every chunk is split over its devices (``distributed``); on many hosts
every process computes and only process 0 writes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lth_jax import distributed
from lth_jax import files as files_lib
from lth_jax import progress as progress_lib
from lth_jax import subset_sum

FORMAT = "lth_jax.stream/1"
MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------
# Sources.
# --------------------------------------------------------------------------------------


def _as_key(key) -> jax.Array:
  if isinstance(key, (int, np.integer)):
    return jax.random.key(int(key))
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  return key


def _key_json(key: jax.Array) -> list[int]:
  return [int(v) for v in np.asarray(jax.random.key_data(key)).reshape(-1)]


def _hash_array(x, block: int = 1 << 22) -> str:
  """sha256 of an array-like's float32 bytes, read ``block`` rows at a time."""
  h = hashlib.sha256()
  h.update(repr(tuple(np.shape(x))).encode())
  for s in range(0, max(len(x), 1), block):
    h.update(np.ascontiguousarray(np.asarray(x[s:s + block], np.float32)).tobytes())
  return h.hexdigest()


def _padded(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[0] == size:
    return x
  return np.pad(x, [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


class InstanceSource:
  """Instances ``0 .. num_instances - 1``, each ``n`` coefficients, produced per chunk.

  ``host_chunk(start, count, size)`` reads the host data of instances
  ``start .. start + count - 1`` padded to ``size`` rows (a dict of numpy arrays, possibly
  empty). ``device_chunk(args, host, start, size)`` is a pure function traced inside
  ``jit``: from ``args = device_args()`` (keys, ranges, shared coefficients), the chunk's
  host arrays and its first index, it returns ``targets (size,)`` and ``coefficients
  (size, n)`` (rows past ``count`` are ignored). ``program_key()`` names the program
  structure (equal keys share one compiled program). ``fingerprint()`` is a JSON-able
  description of the instances: a restart must see the same one.
  """

  num_instances: int
  n: int

  def host_chunk(self, start: int, count: int, size: int) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def device_args(self) -> dict:
    raise NotImplementedError

  def device_chunk(self, args: dict, host: dict, start: jax.Array, size: int):
    raise NotImplementedError

  def program_key(self) -> tuple:
    raise NotImplementedError

  def fingerprint(self) -> dict:
    raise NotImplementedError


class ArraySource(InstanceSource):
  """Explicit instances: ``targets (N,)``; ``coefficients (N, n)`` or ``(n,)`` shared."""

  def __init__(self, targets, coefficients, fingerprint: str | None = None):
    if np.ndim(targets) != 1 or len(targets) == 0:
      raise ValueError(f"targets must be a non-empty 1-D array, got shape {np.shape(targets)}")
    shape = np.shape(coefficients)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != len(targets)):
      raise ValueError(f"coefficients must be (N, n) with N = {len(targets)} or (n,), got "
                       f"{shape}")
    self.targets, self.coefficients = targets, coefficients
    self.shared = len(shape) == 1
    self.num_instances, self.n = len(targets), int(shape[-1])
    if not 1 <= self.n <= subset_sum.MAX_N:
      raise ValueError(f"need 1 <= n <= {subset_sum.MAX_N}, got {self.n}")
    self._fingerprint = fingerprint

  def host_chunk(self, start, count, size):
    out = {"t": _padded(np.asarray(self.targets[start:start + count], np.float32), size)}
    if not self.shared:
      out["c"] = _padded(np.asarray(self.coefficients[start:start + count], np.float32), size)
    return out

  def device_args(self):
    return {"c": np.asarray(self.coefficients, np.float32)} if self.shared else {}

  def device_chunk(self, args, host, start, size):
    c = jnp.broadcast_to(args["c"], (size, self.n)) if self.shared else host["c"]
    return host["t"], c

  def program_key(self):
    return ("array", self.n, self.shared)

  def fingerprint(self):
    if self._fingerprint is None:
      self._fingerprint = _hash_array(self.targets) + ":" + _hash_array(
          np.asarray(self.coefficients)[None] if self.shared else self.coefficients)
    return {"kind": "array", "num_instances": self.num_instances, "n": self.n,
            "sha256": self._fingerprint}


class DirectSource(InstanceSource):
  """The ``"direct"`` construction's instances, coefficients generated per chunk.

  Args:
    n: coefficients per weight.
    key: int seed or PRNG key of the coefficients (group ``g`` uses ``fold_in(key, g)``).
    low, high: range of the uniform coefficients (and of generated weights).
    weights: target weights ``(N,)`` (array-like; a memmap is read chunk by chunk), or
      ``None`` to draw weight ``i`` from ``fold_in(weight_key, i)`` (then pass
      ``num_weights``).
    num_weights: ``N`` when ``weights`` is None.
    group_size: consecutive weights sharing one coefficient vector (1: one per weight).
    weight_key: int seed or key of generated weights (default: ``fold_in(key, 0x5EED)``).
    fingerprint: identifies ``weights`` in the manifest (default: their sha256).
  """

  def __init__(self, n: int, key, low: float = -0.464, high: float = 0.541, *,
               weights=None, num_weights: int | None = None, group_size: int = 1,
               weight_key=None, fingerprint: str | None = None):
    if not 1 <= int(n) <= subset_sum.MAX_N:
      raise ValueError(f"need 1 <= n <= {subset_sum.MAX_N}, got {n}")
    if not float(low) < float(high):
      raise ValueError(f"need low < high, got [{low}, {high}]")
    if int(group_size) < 1:
      raise ValueError(f"group_size must be positive, got {group_size}")
    if weights is None:
      if num_weights is None or int(num_weights) < 1:
        raise ValueError("pass weights, or num_weights >= 1 to generate them")
      self.num_instances = int(num_weights)
      if weight_key is None:
        weight_key = jax.random.fold_in(_as_key(key), 0x5EED)
      self.weight_key = _as_key(weight_key)
    else:
      if np.ndim(weights) != 1 or len(weights) == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got {np.shape(weights)}")
      if num_weights is not None and int(num_weights) != len(weights):
        raise ValueError(f"num_weights {num_weights} != len(weights) {len(weights)}")
      self.num_instances = len(weights)
      self.weight_key = None
    self.n, self.key, self.low, self.high = int(n), _as_key(key), float(low), float(high)
    self.weights, self.group_size = weights, int(group_size)
    self._fingerprint = fingerprint

  def host_chunk(self, start, count, size):
    if self.weights is None:
      return {}
    return {"t": _padded(np.asarray(self.weights[start:start + count], np.float32), size)}

  def device_args(self):
    args = {"key": self.key, "low": np.float32(self.low), "high": np.float32(self.high)}
    if self.weights is None:
      args["weight_key"] = self.weight_key
    return args

  def device_chunk(self, args, host, start, size):
    idx = start + jnp.arange(size, dtype=jnp.int32)
    draw = lambda k, shape: jax.random.uniform(k, shape, jnp.float32, args["low"], args["high"])
    coefs = jax.vmap(lambda g: draw(jax.random.fold_in(args["key"], g), (self.n,)))(
        idx // self.group_size)
    if self.weights is None:
      targets = jax.vmap(lambda i: draw(jax.random.fold_in(args["weight_key"], i), ()))(idx)
    else:
      targets = host["t"]
    return targets, coefs

  def program_key(self):
    return ("direct", self.n, self.group_size, self.weights is None)

  def fingerprint(self):
    out = {"kind": "direct", "num_instances": self.num_instances, "n": self.n,
           "key": _key_json(self.key), "low": self.low, "high": self.high,
           "group_size": self.group_size}
    if self.weights is None:
      out["weight_key"] = _key_json(self.weight_key)
    else:
      if self._fingerprint is None:
        self._fingerprint = _hash_array(self.weights)
      out["weights_sha256"] = self._fingerprint
    return out


# --------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------


def chunk_path(out_dir, index: int) -> pathlib.Path:
  return pathlib.Path(out_dir) / f"chunk_{index:06d}.npz"


def _atomic_savez(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _read_manifest(out_dir) -> dict | None:
  path = pathlib.Path(out_dir) / MANIFEST
  if not path.exists():
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_manifest(out_dir, manifest: dict) -> None:
  files_lib.atomic_write_text(pathlib.Path(out_dir) / MANIFEST,
                            json.dumps(files_lib.to_jsonable(manifest), indent=1, sort_keys=True)
                            + "\n")


class StreamChunk(NamedTuple):
  """One saved chunk: instances ``start .. start + len(error) - 1``."""

  start: int
  mask: np.ndarray  # bool (count, n)
  value: np.ndarray  # float32 (count,)
  error: np.ndarray  # float32 (count,)


def _load_chunk(path, with_mask: bool = True) -> StreamChunk:
  with np.load(path) as data:
    start, count, n = int(data["start"]), int(data["count"]), int(data["n"])
    mask = None
    if with_mask:
      if "mask_bits" in data:
        mask = np.unpackbits(data["mask_bits"], count=count * n).reshape(count, n).astype(bool)
      else:
        mask = data["mask"].astype(bool)
    return StreamChunk(start, mask, data["value"], data["error"])


def iter_stream_chunks(out_dir, with_mask: bool = True) -> Iterator[StreamChunk]:
  """The saved chunks of a run, in order (raises if one is missing)."""
  manifest = _read_manifest(out_dir)
  if manifest is None:
    raise FileNotFoundError(f"{out_dir}: no {MANIFEST}")
  for i in range(manifest["num_chunks"]):
    path = chunk_path(out_dir, i)
    if not path.exists():
      raise FileNotFoundError(f"{path}: chunk {i} of {manifest['num_chunks']} is not done")
    yield _load_chunk(path, with_mask)


def load_stream(out_dir) -> subset_sum.SubsetSumResult:
  """A finished run's results as one ``SubsetSumResult`` of numpy arrays (needs
  ``N * (n + 8)`` bytes: use ``iter_stream_chunks`` for runs larger than memory)."""
  chunks = list(iter_stream_chunks(out_dir))
  return subset_sum.SubsetSumResult(np.concatenate([c.mask for c in chunks]),
                                    np.concatenate([c.value for c in chunks]),
                                    np.concatenate([c.error for c in chunks]))


def summarize_stream(out_dir, epsilon: float | None = None) -> dict:
  """Error statistics over every saved chunk, reading one chunk at a time."""
  count, kept, total, worst, within = 0, 0, 0.0, 0.0, 0
  for path in sorted(pathlib.Path(out_dir).glob("chunk_*.npz")):
    with np.load(path) as data:
      err = data["error"].astype(np.float64)
      kept += int(data["kept"])
    count += err.size
    total += float(err.sum())
    worst = max(worst, float(err.max()))
    if epsilon is not None:
      within += int(np.sum(err <= epsilon))
  out = {"instances": count, "kept": kept, "max_error": worst,
         "mean_error": total / max(count, 1)}
  if epsilon is not None:
    out.update(epsilon=float(epsilon), fraction_within_epsilon=within / max(count, 1))
  return out


# --------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class StreamReport:
  """What ``solve_stream`` did.

  Attributes:
    out_dir: the output directory.
    num_chunks: chunks of the whole run.
    chunks_solved: chunks solved by this call (the rest were already on disk).
    chunks_skipped: finished chunks found on disk and not recomputed.
    instances_solved: instances solved by this call.
    seconds: wall time of this call's solving (after setup and compilation).
    cpu_seconds: CPU time of this process (all threads) over the same span: unlike
      ``seconds``, it hardly depends on what else runs on the machine.
    summary: ``summarize_stream`` of the complete run.
  """

  out_dir: str
  num_chunks: int
  chunks_solved: int
  chunks_skipped: int
  instances_solved: int
  seconds: float
  cpu_seconds: float
  summary: dict

  @property
  def instances_per_second(self) -> float:
    return self.instances_solved / self.seconds if self.seconds > 0 else float("nan")


_PROGRAMS: dict = {}


def _chunk_program(source: InstanceSource, size: int, mesh, key_format, chunk_keys):
  """``jit((args, host arrays, start) -> (mask, value, error))`` for chunks of ``size``,
  one per program structure (so runs of the same shape reuse the compiled program)."""
  cache_key = (type(source), source.program_key(), size, mesh, key_format, chunk_keys)
  if cache_key not in _PROGRAMS:
    _PROGRAMS[cache_key] = _make_chunk_program(source, size, mesh, key_format, chunk_keys)
  return _PROGRAMS[cache_key]


def _make_chunk_program(source, size, mesh, key_format, chunk_keys):
  if mesh is None:
    solve = functools.partial(subset_sum.solve_subset_sum, key_format=key_format,
                              chunk_keys=chunk_keys)
  else:
    solve = functools.partial(distributed.sharded_solve_subset_sum, mesh=mesh,
                              key_format=key_format, chunk_keys=chunk_keys)

  def program(args, host, start):
    targets, coefficients = source.device_chunk(args, host, start, size)
    res = solve(targets, coefficients)
    return res.mask, res.value, res.error

  if mesh is None:
    return jax.jit(program)
  sh, rep = distributed.instance_sharding(mesh), distributed.replicated(mesh)
  return jax.jit(program, in_shardings=(rep, sh, rep), out_shardings=(sh, sh, sh))


def _done_chunks(out_dir, num_chunks: int) -> np.ndarray:
  """bool ``(num_chunks,)``; on many hosts, process 0's view is used by everyone."""
  done = np.array([chunk_path(out_dir, i).exists() for i in range(num_chunks)], bool)
  if jax.process_count() > 1:
    done = np.asarray(multihost_utils.broadcast_one_to_all(done))
  return done


_OK, _REFUSED, _FAILED = 0, 1, 2


def _prepare_out_dir(out_dir: pathlib.Path, config: dict, overwrite: bool) -> list[str]:
  """Process 0: readies ``out_dir`` for ``config`` (keeps a same-config run's chunks,
  deletes a different run's files when ``overwrite``, writes the manifest).

  Returns:
    the sorted config keys in which a run already in ``out_dir`` differs, when it is
    refused (then nothing was changed); ``[]`` when the directory is ready.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  old = _read_manifest(out_dir)
  old_config = None if old is None else {k: old.get(k) for k in config}
  if old is not None and old_config != config and not overwrite:
    return sorted(k for k in config if old_config[k] != config[k])
  for path in out_dir.glob(".chunk_*.tmp"):  # left by a killed run
    path.unlink()
  if old is None or old_config != config:
    for path in out_dir.glob("chunk_*.npz"):
      path.unlink()
    _write_manifest(out_dir, dict(config, complete=False))
  return []


def _broadcast_verdict(status: int, differs: list[str], keys: list[str]):
  """Process 0's ``(status, differing keys)`` on every process (a collective: everyone
  waits here until process 0 has prepared the directory)."""
  flags = np.array([status] + [k in differs for k in keys], np.int32)
  flags = np.asarray(multihost_utils.broadcast_one_to_all(flags))
  return int(flags[0]), [k for k, f in zip(keys, flags[1:]) if f]


def solve_stream(
    source: InstanceSource,
    out_dir: str | os.PathLike,
    *,
    chunk_size: int = 1 << 16,
    mesh=None,
    pack_masks: bool = True,
    overwrite: bool = False,
    epsilon: float | None = 0.01,
    key_format: str | None = None,
    chunk_keys: int = 1 << 18,
    log_every_s: float = 30.0,
    pause_s: float = 0.0,
    on_chunk_done: Callable[[int], Any] | None = None,
) -> StreamReport:
  """Solves every instance of ``source`` chunk by chunk into ``out_dir``, resumably.

  Args:
    source: the instances (``DirectSource``, ``ArraySource``).
    out_dir: output directory (created). If it holds a run with the same configuration,
      its finished chunks are kept and only the missing ones are solved; a different
      configuration is an error unless ``overwrite`` (which deletes the old run's files).
    chunk_size: instances per chunk (rounded up to a multiple of the mesh's device count).
      Part of the configuration: resuming needs the same value.
    mesh: a 1-D device mesh (``distributed.make_instance_mesh()``) to split every chunk
      over, or None for the default device.
    pack_masks: store masks bit-packed (``np.packbits``; ``n / 8`` bytes per instance).
    overwrite: replace a different run found in ``out_dir``.
    epsilon: threshold reported in the summary (``fraction_within_epsilon``).
    key_format, chunk_keys: passed to the solver.
    log_every_s: seconds between progress/ETA log lines.
    pause_s: sleep after each chunk (to share a machine; tests use it to be killed
      mid-run).
    on_chunk_done: called with the chunk index after each chunk is saved (test hook;
      an exception stops the run, keeping the chunks saved so far).

  Returns:
    StreamReport (chunks solved / skipped, timing, summary of the complete run).
  """
  out_dir = pathlib.Path(out_dir).expanduser()
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  if mesh is not None:
    chunk_size = distributed.padded_size(chunk_size, mesh)
  total = source.num_instances
  num_chunks = -(-total // chunk_size)
  if num_chunks * chunk_size >= 2**31:
    raise ValueError(f"{total} instances: instance indices are int32, at most 2^31 - 1 "
                     "including the last chunk's padding")
  config = {"format": FORMAT, "source": source.fingerprint(), "n": source.n,
            "num_instances": total, "chunk_size": int(chunk_size), "num_chunks": num_chunks,
            "pack_masks": bool(pack_masks)}
  primary = distributed.is_primary()
  # Only process 0 looks at out_dir; its verdict is shared before anyone goes on, so a
  # refused resume (or a failure) raises on every process instead of leaving the others
  # waiting for process 0 in a collective.
  status, differs, error = _OK, [], None
  if primary:
    try:
      differs = _prepare_out_dir(out_dir, config, overwrite)
      status = _REFUSED if differs else _OK
    except Exception as e:  # pylint: disable=broad-except  (re-raised below)
      status, error = _FAILED, e
  if jax.process_count() > 1:  # also the barrier: the manifest is ready after it
    status, differs = _broadcast_verdict(status, differs, sorted(config))
  if status == _FAILED:
    if error is not None:
      raise error
    raise RuntimeError(f"solve_stream: process 0 could not prepare {out_dir} (its error is "
                       "in its log)")
  if status == _REFUSED:
    raise ValueError(f"{out_dir} holds a different run ({MANIFEST} differs in {differs}); "
                     "use another directory or overwrite=True")

  done = _done_chunks(out_dir, num_chunks)
  todo = [i for i in range(num_chunks) if not done[i]]
  skipped = num_chunks - len(todo)
  if skipped:
    logging.info("solve_stream: %s: resuming, %d of %d chunks already done", out_dir,
                 skipped, num_chunks)
  sh = None if mesh is None else distributed.instance_sharding(mesh)

  def inputs(i):
    start = i * chunk_size
    count = min(chunk_size, total - start)
    host = source.host_chunk(start, count, chunk_size)
    if sh is not None:
      host = {k: distributed.put_sharded(v, sh) for k, v in host.items()}
    else:
      host = {k: jnp.asarray(v) for k, v in host.items()}
    return start, count, host

  program = None
  args = source.device_args()
  if mesh is not None:
    args = distributed.put_sharded_tree(args, distributed.replicated(mesh))
  else:
    args = jax.tree.map(jnp.asarray, args)

  def first_index(start):
    if mesh is None:
      return jnp.int32(start)
    return distributed.put_sharded(np.int32(start), distributed.replicated(mesh))

  def dispatch(i):
    start, count, host = inputs(i)
    return i, start, count, program(args, host, first_index(start))

  def save(i, start, count, out):
    mask, value, error = (distributed.to_host(x)[:count] for x in out)
    if not primary:
      return
    arrays = {"start": np.int64(start), "count": np.int64(count), "n": np.int64(source.n),
              "value": value, "error": error, "kept": np.int64(mask.sum())}
    if pack_masks:
      arrays["mask_bits"] = np.packbits(mask.reshape(-1))
    else:
      arrays["mask"] = mask.astype(np.uint8)
    _atomic_savez(chunk_path(out_dir, i), arrays)

  instances_todo = sum(min(chunk_size, total - i * chunk_size) for i in todo)
  progress = None
  solved_instances = 0
  seconds = cpu_seconds = 0.0
  if todo:
    # Compile before timing, so the ETA and the throughput are those of the steady state.
    _, _, example = inputs(todo[0])
    program = _chunk_program(source, chunk_size, mesh, key_format, chunk_keys).lower(
        args, example, first_index(0)).compile()
    del example
    cpu_start = time.process_time()
    pending = dispatch(todo[0])
    progress = progress_lib.Progress(instances_todo, what=f"solve_stream {out_dir.name}",
                                     unit="instances", every=log_every_s)
    for k in range(len(todo)):
      nxt = dispatch(todo[k + 1]) if k + 1 < len(todo) else None  # overlaps the save
      i, start, count, out = pending
      save(i, start, count, out)
      solved_instances += count
      progress.update(solved_instances, note=f"chunk {i + 1}/{num_chunks}, "
                      f"{solved_instances / max(progress.elapsed(), 1e-9):.0f} instances/s")
      if on_chunk_done is not None:
        on_chunk_done(i)
      if pause_s:
        time.sleep(pause_s)
      pending = nxt
    seconds = progress.elapsed()
    cpu_seconds = time.process_time() - cpu_start
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("lth_jax.streaming: chunks saved")
  summary = summarize_stream(out_dir, epsilon) if primary else {}
  if primary:
    _write_manifest(out_dir, dict(config, complete=True, summary=summary))
  return StreamReport(str(out_dir), num_chunks, len(todo), skipped, solved_instances, seconds,
                      cpu_seconds, summary)
