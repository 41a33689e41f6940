"""Chunked, resumable solving: same results as one solver call, and kill-and-resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import stream_sources, streaming, subset_sum

N = 8  # coefficients per instance: small, so every test compiles quickly
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _assert_same(a, b):
  """Masks identical; values and errors up to float32 rounding (a few ulps): programs of
  other batch shapes may sum in another order (bit-identical at XLA's default optimisation,
  not with the suite's optimisation off, conftest.py)."""
  for x, y in zip(a, b, strict=True):
    x, y = np.asarray(x), np.asarray(y)
    if np.issubdtype(x.dtype, np.floating):
      np.testing.assert_allclose(x, y, rtol=0, atol=5e-7)
    else:
      np.testing.assert_array_equal(x, y)


def _mtimes(out_dir):
  return {p.name: p.stat().st_mtime_ns for p in out_dir.glob("chunk_*.npz")}


def _materialised(src: stream_sources.DirectSource):
  """The source's instances built in one go, the obvious way."""
  idx = jnp.arange(src.num_instances)
  draw = lambda k, shape: jax.random.uniform(k, shape, jnp.float32, src.low, src.high)
  c = jax.vmap(lambda g: draw(jax.random.fold_in(src.key, g), (src.n,)))(idx // src.group_size)
  if src.weights is None:
    t = jax.vmap(lambda i: draw(jax.random.fold_in(src.weight_key, i), ()))(idx)
  else:
    t = jnp.asarray(np.asarray(src.weights, np.float32))
  return t, c


@pytest.mark.parametrize("group_size", [1, 7])
def test_direct_source_matches_one_solver_call(tmp_path, group_size):
  src = stream_sources.DirectSource(N, 1, num_weights=1000, group_size=group_size)
  report = streaming.solve_stream(src, tmp_path, chunk_size=128)
  assert (report.num_chunks, report.chunks_solved, report.chunks_skipped) == (8, 8, 0)
  assert report.instances_solved == 1000 and report.instances_per_second > 0
  got = streaming.load_stream(tmp_path)
  ref = subset_sum.solve_subset_sum(*_materialised(src))
  _assert_same(got, ref)
  if group_size == 7:  # shared vectors: weights 0..6 see the same coefficients
    c = _materialised(src)[1]
    np.testing.assert_array_equal(c[0], c[6])
    assert not np.array_equal(c[6], c[7])
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["complete"] and manifest["summary"]["instances"] == 1000
  assert manifest["summary"]["kept"] == int(np.sum(ref.mask))
  assert manifest["summary"]["max_error"] == pytest.approx(float(np.max(ref.error)))


def test_memmapped_weights_and_array_source(tmp_path):
  rng = np.random.default_rng(0)
  w = rng.uniform(-0.4, 0.5, 1000).astype(np.float32)
  np.save(tmp_path / "w.npy", w)
  weights = np.load(tmp_path / "w.npy", mmap_mode="r")
  src = stream_sources.DirectSource(N, 2, weights=weights)
  streaming.solve_stream(src, tmp_path / "direct", chunk_size=128, pack_masks=False)
  _assert_same(streaming.load_stream(tmp_path / "direct"),
               subset_sum.solve_subset_sum(*_materialised(src)))

  c = rng.uniform(-0.5, 0.5, (1000, N)).astype(np.float32)
  np.save(tmp_path / "c.npy", c)
  arr = stream_sources.ArraySource(weights, np.load(tmp_path / "c.npy", mmap_mode="r"))
  streaming.solve_stream(arr, tmp_path / "array", chunk_size=128)
  _assert_same(streaming.load_stream(tmp_path / "array"), subset_sum.solve_subset_sum(w, c))
  shared = stream_sources.ArraySource(w, c[0])
  streaming.solve_stream(shared, tmp_path / "shared", chunk_size=128)
  _assert_same(streaming.load_stream(tmp_path / "shared"), subset_sum.solve_subset_sum(w, c[0]))


def test_packed_masks_are_small_and_equal(tmp_path):
  src = stream_sources.DirectSource(N, 3, num_weights=512)
  streaming.solve_stream(src, tmp_path / "packed", chunk_size=128)
  streaming.solve_stream(src, tmp_path / "plain", chunk_size=128, pack_masks=False)
  _assert_same(streaming.load_stream(tmp_path / "packed"), streaming.load_stream(tmp_path / "plain"))
  with np.load(tmp_path / "packed" / "chunk_000000.npz") as data:
    assert data["mask_bits"].dtype == np.uint8 and data["mask_bits"].size == 128 * N // 8


def test_interrupted_run_resumes_without_recomputing(tmp_path):
  src = stream_sources.DirectSource(N, 4, num_weights=1250)
  full = streaming.solve_stream(src, tmp_path / "full", chunk_size=128)

  class Stop(Exception):
    pass

  def stop_after_three(i):
    if i == 2:
      raise Stop

  with pytest.raises(Stop):
    streaming.solve_stream(src, tmp_path / "run", chunk_size=128,
                           on_chunk_done=stop_after_three)
  before = _mtimes(tmp_path / "run")
  assert sorted(before) == [f"chunk_{i:06d}.npz" for i in range(3)]
  assert not json.loads((tmp_path / "run" / "manifest.json").read_text())["complete"]

  seen = []
  resumed = streaming.solve_stream(src, tmp_path / "run", chunk_size=128,
                                   on_chunk_done=seen.append)
  assert (resumed.chunks_solved, resumed.chunks_skipped) == (7, 3)
  assert seen == list(range(3, 10))  # no finished chunk solved again
  after = _mtimes(tmp_path / "run")
  assert all(after[name] == t for name, t in before.items())  # nor rewritten
  _assert_same(streaming.load_stream(tmp_path / "run"), streaming.load_stream(tmp_path / "full"))
  assert resumed.summary == full.summary

  again = streaming.solve_stream(src, tmp_path / "run", chunk_size=128)
  assert (again.chunks_solved, again.chunks_skipped) == (0, 10)


def test_different_run_in_directory_is_refused(tmp_path):
  src = stream_sources.DirectSource(N, 5, num_weights=300)
  streaming.solve_stream(src, tmp_path, chunk_size=128)
  with pytest.raises(ValueError, match="chunk_size"):
    streaming.solve_stream(src, tmp_path, chunk_size=100)
  with pytest.raises(ValueError, match="pack_masks"):
    streaming.solve_stream(src, tmp_path, chunk_size=128, pack_masks=False)
  other = stream_sources.DirectSource(N, 6, num_weights=300)
  with pytest.raises(ValueError, match="source"):
    streaming.solve_stream(other, tmp_path, chunk_size=128)
  report = streaming.solve_stream(other, tmp_path, chunk_size=256, overwrite=True)
  assert report.chunks_solved == 2 and len(list(tmp_path.glob("chunk_*.npz"))) == 2


def test_source_errors():
  with pytest.raises(ValueError, match="num_weights"):
    stream_sources.DirectSource(N, 0)
  with pytest.raises(ValueError, match="n <="):
    stream_sources.DirectSource(subset_sum.MAX_N + 1, 0, num_weights=3)
  with pytest.raises(ValueError, match="coefficients"):
    stream_sources.ArraySource(np.zeros(4), np.zeros((3, 5)))


def test_killed_process_resumes_with_same_command(tmp_path):
  """A real run killed by SIGKILL, restarted with the same command."""
  out = tmp_path / "run"
  cmd = [sys.executable, "-m", "experiments.solve_stream", f"--out_dir={out}",
         "--num_weights=1500", f"--n={N}", "--chunk_size=128", "--seed=7"]
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen(cmd + ["--pause_s=0.4"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    while len(list(out.glob("chunk_*.npz"))) < 3:
      assert proc.poll() is None, "finished or died before it could be killed"
      assert time.time() < deadline, "no chunks written"
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  before = _mtimes(out)
  assert 3 <= len(before) < 12  # 12 chunks in all
  assert not json.loads((out / "manifest.json").read_text())["complete"]

  # --pause_s is not part of the run's configuration: the same run, restarted.
  restart = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True,
                           text=True, timeout=300)
  # The restart's own counts (solve_stream's log, the report's chunks_solved): it found
  # every finished chunk and solved only the others.
  done, log = len(before), restart.stderr
  assert f"resuming, {done} of 12 chunks already done" in log, log[-3000:]
  assert f"solved {12 - done} chunks ({done} already done)" in log, log[-3000:]
  after = _mtimes(out)
  assert len(after) == 12 and all(after[name] == t for name, t in before.items())
  assert not list(out.glob(".chunk_*"))  # no temporary file left behind

  src = stream_sources.DirectSource(N, 7, num_weights=1500)
  streaming.solve_stream(src, tmp_path / "ref", chunk_size=128)
  _assert_same(streaming.load_stream(out), streaming.load_stream(tmp_path / "ref"))
  ref_manifest = json.loads((tmp_path / "ref" / "manifest.json").read_text())
  assert json.loads((out / "manifest.json").read_text()) == ref_manifest


_TWO_PROCESS_WORKER = r"""
import json, sys
import jax
port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid)
from lth_jax import files, sharding, stream_sources, streaming
writes = []  # every file this process writes goes through one of these two
for module, name in ((files, "atomic_savez"), (streaming, "_write_manifest")):
  def wrapped(path, arrays, orig=getattr(module, name)):
    writes.append(str(path))
    return orig(path, arrays)
  setattr(module, name, wrapped)
mesh = sharding.make_instance_mesh()
src = stream_sources.DirectSource(%(n)d, 11, num_weights=700, group_size=3)
report = streaming.solve_stream(src, out, chunk_size=128, mesh=mesh)
refused = None
try:  # a different configuration: refused on every process, nobody left waiting
  streaming.solve_stream(src, out, chunk_size=256, mesh=mesh)
except ValueError as e:
  refused = str(e)
print("RESULT " + json.dumps(dict(
    process=jax.process_index(), processes=jax.process_count(), devices=jax.device_count(),
    writes=writes, solved=report.chunks_solved, refused=refused)), flush=True)
"""


def test_two_processes_only_process_zero_writes_and_refusals_are_shared(tmp_path):
  """Two local processes (jax.distributed on CPU, one device each) split every chunk over
  both devices: only process 0 writes, the files equal a one-process run's, and a resume
  with a different configuration raises on both processes (it used to hang process 1)."""
  with socket.socket() as sock:  # a free port for the coordinator
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  out = tmp_path / "two"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  # one CPU device per process; the suite's other XLA flags kept (same compiled programs)
  env["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                              if "device_count" not in f)
  code = _TWO_PROCESS_WORKER % {"n": N}
  procs = [subprocess.Popen([sys.executable, "-c", code, str(port), str(i), str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outputs = [proc.communicate(timeout=150) for proc in procs]
  except subprocess.TimeoutExpired:
    for proc in procs:
      proc.kill()
    pytest.fail("a process hung (waiting for the other in a collective)")
  rows = []
  for proc, (stdout, stderr) in zip(procs, outputs):
    assert proc.returncode == 0, stderr[-3000:]
    rows.append(json.loads(stdout.split("RESULT ", 1)[1]))
  assert [(r["process"], r["processes"], r["devices"]) for r in rows] == [(0, 2, 2), (1, 2, 2)]
  assert [r["solved"] for r in rows] == [6, 6]  # both computed every chunk
  chunks = [str(streaming.chunk_path(out, i)) for i in range(6)]
  assert rows[0]["writes"] == [str(out)] + chunks + [str(out)]  # manifest, chunks, manifest
  assert rows[1]["writes"] == []
  for r in rows:
    assert r["refused"] is not None and "chunk_size" in r["refused"], r

  src = stream_sources.DirectSource(N, 11, num_weights=700, group_size=3)
  streaming.solve_stream(src, tmp_path / "one", chunk_size=128)
  _assert_same(streaming.load_stream(out), streaming.load_stream(tmp_path / "one"))
  assert (json.loads((out / "manifest.json").read_text())
          == json.loads((tmp_path / "one" / "manifest.json").read_text()))
