"""Chunked, resumable SubsetSum over more instances than fit in memory (programs stage).

``solve_stream(source, out_dir)`` solves instances ``0 .. N-1`` in fixed-size chunks and
saves every finished chunk at once, so a run of millions of weights can be killed at any
moment and restarted with the same command: it skips the finished chunks and ends with
files identical to those of an uninterrupted run (per-instance results never depend on
the chunking, the device count or what was solved before).

Sources (``stream_sources``: ``DirectSource``, ``ArraySource``) describe the instances
without materialising them.

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
With a ``mesh``, every chunk is split over its devices (``distributed``, ``sharding``); on many hosts
every process computes and only process 0 writes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
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
from lth_jax import sharding
from lth_jax import subset_sum
from lth_jax.stream_sources import InstanceSource

FORMAT = "lth_jax.stream/1"
MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------


def chunk_path(out_dir, index: int) -> pathlib.Path:
  return pathlib.Path(out_dir) / f"chunk_{index:06d}.npz"


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
  sh, rep = sharding.instance_sharding(mesh), sharding.replicated(mesh)
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


def _run_config(source: InstanceSource, chunk_size: int, mesh, pack_masks: bool) -> dict:
  """The configuration a resumed run must share (chunk size rounded up for the mesh)."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  if mesh is not None:
    chunk_size = sharding.padded_size(chunk_size, mesh)
  total = source.num_instances
  num_chunks = -(-total // chunk_size)
  if num_chunks * chunk_size >= 2**31:
    raise ValueError(f"{total} instances: instance indices are int32, at most 2^31 - 1 "
                     "including the last chunk's padding")
  return {"format": FORMAT, "source": source.fingerprint(), "n": source.n,
          "num_instances": total, "chunk_size": int(chunk_size), "num_chunks": num_chunks,
          "pack_masks": bool(pack_masks)}


def _ready_out_dir(out_dir: pathlib.Path, config: dict, overwrite: bool) -> None:
  """Only process 0 looks at ``out_dir``; its verdict is shared before anyone goes on, so a
  refused resume (or a failure) raises on every process instead of leaving the others
  waiting for process 0 in a collective."""
  status, differs, error = _OK, [], None
  if sharding.is_primary():
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


class _Chunks:
  """Reads, dispatches and saves the chunks of one run (on every process; only process 0
  writes)."""

  def __init__(self, source: InstanceSource, out_dir: pathlib.Path, config: dict, mesh):
    self.source, self.out_dir, self.mesh = source, out_dir, mesh
    self.size, self.pack = config["chunk_size"], config["pack_masks"]
    self.sh = None if mesh is None else sharding.instance_sharding(mesh)
    args = source.device_args()
    if mesh is not None:
      self.args = sharding.put_sharded_tree(args, sharding.replicated(mesh))
    else:
      self.args = jax.tree.map(jnp.asarray, args)
    self.program = None

  def count(self, i: int) -> int:
    return min(self.size, self.source.num_instances - i * self.size)

  def inputs(self, i: int) -> dict:
    host = self.source.host_chunk(i * self.size, self.count(i), self.size)
    if self.sh is not None:
      return {k: sharding.put_sharded(v, self.sh) for k, v in host.items()}
    return {k: jnp.asarray(v) for k, v in host.items()}

  def first_index(self, start: int):
    if self.mesh is None:
      return jnp.int32(start)
    return sharding.put_sharded(np.int32(start), sharding.replicated(self.mesh))

  def compile(self, i: int, key_format, chunk_keys) -> None:
    """Compiles the chunk program on chunk ``i``'s inputs (before any timing)."""
    self.program = _chunk_program(self.source, self.size, self.mesh, key_format,
                                  chunk_keys).lower(self.args, self.inputs(i),
                                                    self.first_index(0)).compile()

  def dispatch(self, i: int):
    """Starts chunk ``i`` on the devices: ``(i, outputs)`` (asynchronous)."""
    return i, self.program(self.args, self.inputs(i), self.first_index(i * self.size))

  def save(self, i: int, out) -> None:
    count = self.count(i)
    mask, value, error = (sharding.to_host(x)[:count] for x in out)
    if not sharding.is_primary():
      return
    arrays = {"start": np.int64(i * self.size), "count": np.int64(count),
              "n": np.int64(self.source.n), "value": value, "error": error,
              "kept": np.int64(mask.sum())}
    if self.pack:
      arrays["mask_bits"] = np.packbits(mask.reshape(-1))
    else:
      arrays["mask"] = mask.astype(np.uint8)
    files_lib.atomic_savez(chunk_path(self.out_dir, i), arrays)


def _solve_chunks(chunks: _Chunks, todo: list[int], num_chunks: int, *, log_every_s: float,
                  pause_s: float, on_chunk_done) -> tuple[int, float, float]:
  """Solves and saves the chunks ``todo`` (the host saves one while the devices solve the
  next). Returns ``(instances solved, seconds, CPU seconds)``."""
  cpu_start = time.process_time()
  pending = chunks.dispatch(todo[0])
  progress = progress_lib.Progress(sum(chunks.count(i) for i in todo),
                                   what=f"solve_stream {chunks.out_dir.name}",
                                   unit="instances", every=log_every_s)
  solved = 0
  for k in range(len(todo)):
    nxt = chunks.dispatch(todo[k + 1]) if k + 1 < len(todo) else None  # overlaps the save
    i, out = pending
    chunks.save(i, out)
    solved += chunks.count(i)
    progress.update(solved, note=f"chunk {i + 1}/{num_chunks}, "
                    f"{solved / max(progress.elapsed(), 1e-9):.0f} instances/s")
    if on_chunk_done is not None:
      on_chunk_done(i)
    if pause_s:
      time.sleep(pause_s)
    pending = nxt
  return solved, progress.elapsed(), time.process_time() - cpu_start


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
    source: the instances (``stream_sources.DirectSource``, ``ArraySource``).
    out_dir: output directory (created). If it holds a run with the same configuration,
      its finished chunks are kept and only the missing ones are solved; a different
      configuration is an error unless ``overwrite`` (which deletes the old run's files).
    chunk_size: instances per chunk (rounded up to a multiple of the mesh's device count).
      Part of the configuration: resuming needs the same value.
    mesh: a 1-D device mesh (``sharding.make_instance_mesh()``) to split every chunk
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
  config = _run_config(source, chunk_size, mesh, pack_masks)
  num_chunks = config["num_chunks"]
  _ready_out_dir(out_dir, config, overwrite)
  done = _done_chunks(out_dir, num_chunks)
  todo = [i for i in range(num_chunks) if not done[i]]
  skipped = num_chunks - len(todo)
  if skipped:
    logging.info("solve_stream: %s: resuming, %d of %d chunks already done", out_dir,
                 skipped, num_chunks)
  chunks = _Chunks(source, out_dir, config, mesh)
  solved, seconds, cpu_seconds = 0, 0.0, 0.0
  if todo:
    # Compile before timing, so the ETA and the throughput are those of the steady state.
    chunks.compile(todo[0], key_format, chunk_keys)
    solved, seconds, cpu_seconds = _solve_chunks(
        chunks, todo, num_chunks, log_every_s=log_every_s, pause_s=pause_s,
        on_chunk_done=on_chunk_done)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("lth_jax.streaming: chunks saved")
  primary = sharding.is_primary()
  summary = summarize_stream(out_dir, epsilon) if primary else {}
  if primary:
    _write_manifest(out_dir, dict(config, complete=True, summary=summary))
  return StreamReport(str(out_dir), num_chunks, len(todo), skipped, solved, seconds,
                      cpu_seconds, summary)
