r"""Benchmark: streaming SubsetSum at scale, over devices, weight counts and n.

  python -m benchmarks.bench_scale                                   # everything but 1e7
  python -m benchmarks.bench_scale --only=counts --counts=1e7        # the long one (~5+ min)
  python -m benchmarks.bench_scale --only=devices --devices=1,2,4

Every row runs ``lth_jax.streaming.solve_stream`` on "direct" instances (weights and
coefficients drawn per chunk from keys, U[-0.464, 0.541], the trained FC2's range) in its
own subprocess, so each gets its own ``XLA_FLAGS=--xla_force_host_platform_device_count``
and its own peak RSS (``ru_maxrss``). Throughput counts the whole pipeline (solving,
copying results to the host, bit-packing and atomically saving every chunk), after
compilation. Rows:

* devices: 1, 2, 4 forced host devices (chunks sharded over a 1-D mesh), fixed count.
* counts: 1e5, 1e6, 1e7 weights at n = 21, one device: throughput should not fall with the
  count, and peak RSS should stay flat (goal: < 4 GB at 1e7, throughput at 1e7 within 20%
  of 1e5).
* n: 16, 18, 21, 24 at a fixed count: per-instance time should grow about like 2^(n/2).

The load average (``os.getloadavg``) is recorded with every row: the machine is shared,
so compare wall times measured at similar load. The process's CPU time per weight is
recorded too: it is nearly independent of the load (but cannot show a parallel speedup). Results are merged into ``--out`` (rows are
keyed by kind, devices, count and n; a new measurement replaces the old one).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import flags

from lth_jax.run import flags as run_flags

FLAGS = flags.FLAGS
flags.DEFINE_list("only", ["devices", "counts", "n"], "Which row groups to run.")
flags.DEFINE_list("devices", ["1", "2", "4"], "Forced host device counts.")
flags.DEFINE_integer("device_count_weights", 200_000, "Weights per row of the device group.")
flags.DEFINE_list("counts", ["1e5", "1e6"], "Weight counts of the count group (n = 21).")
flags.DEFINE_list("n", ["16", "18", "21", "24"], "Instance sizes of the n group.")
flags.DEFINE_integer("n_count_weights", 40_000, "Weights per row of the n group.")
flags.DEFINE_integer("chunk_size", 20_000, "Instances per chunk (divides every count here, "
                     "so no row pays for a padded last chunk).")
flags.DEFINE_string("out", "benchmarks/results/scale.json", "JSON output path (merged).")
flags.DEFINE_bool("worker", False, "Internal: run one row in this process.")
flags.DEFINE_integer("worker_devices", 1, "Internal: devices of the worker row.")
flags.DEFINE_integer("worker_count", 0, "Internal: weights of the worker row.")
flags.DEFINE_integer("worker_n", 21, "Internal: n of the worker row.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker(devices: int, count: int, n: int, chunk_size: int) -> dict:
  """One row, in this process (XLA_FLAGS already set by the parent)."""
  import jax
  from lth_jax import sharding, stream_sources, streaming

  if jax.device_count() != devices:
    raise RuntimeError(f"expected {devices} devices, have {jax.device_count()}")
  mesh = sharding.make_instance_mesh() if devices > 1 else None
  source = stream_sources.DirectSource(n, 0, num_weights=count)
  out_dir = tempfile.mkdtemp(prefix="bench_scale_")
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  try:
    report = streaming.solve_stream(source, out_dir, chunk_size=chunk_size, mesh=mesh,
                                    log_every_s=60.0)
    disk = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
  finally:
    shutil.rmtree(out_dir, ignore_errors=True)
  total = time.perf_counter() - start
  return {
      "devices": devices, "count": count, "n": n, "chunk_size": chunk_size,
      "seconds": report.seconds, "seconds_with_compile": total,
      "weights_per_second": report.instances_per_second,
      "us_per_weight": 1e6 * report.seconds / count,
      "cpu_us_per_weight": 1e6 * report.cpu_seconds / count,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "disk_mb": disk / 2**20, "fraction_within_0.01": report.summary.get(
          "fraction_within_epsilon"),
      "load_before": load_before, "load_after": os.getloadavg()[0],
  }


def _run_row(kind: str, devices: int, count: int, n: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--worker",
         f"--worker_devices={devices}", f"--worker_count={count}", f"--worker_n={n}",
         f"--chunk_size={FLAGS.chunk_size}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
  row = json.loads(proc.stdout.strip().splitlines()[-1])
  row["kind"] = kind
  print(f"  {kind:7s} devices={devices} count={count:>9,d} n={n}: "
        f"{row['weights_per_second']:>9,.0f} weights/s, {row['us_per_weight']:7.2f} us/weight "
        f"({row['cpu_us_per_weight']:7.2f} CPU us), "
        f"peak RSS {row['peak_rss_mb']:6.0f} MB, load {row['load_before']:.1f}", flush=True)
  return row


def _table(rows: list[dict]) -> str:
  head = (f"{'kind':8s}{'dev':>4s}{'count':>11s}{'n':>4s}{'weights/s':>11s}{'us/w':>8s}"
          f"{'CPU us/w':>9s}{'CPU/2^(n/2)':>12s}{'RSS MB':>8s}{'disk MB':>9s}{'load':>6s}")
  lines = [head, "-" * len(head)]
  for r in rows:
    cpu = r.get("cpu_us_per_weight", float("nan"))
    norm = cpu / 2 ** (r["n"] / 2) * 1e3
    lines.append(f"{r['kind']:8s}{r['devices']:>4d}{r['count']:>11,d}{r['n']:>4d}"
                 f"{r['weights_per_second']:>11,.0f}{r['us_per_weight']:>8.2f}{cpu:>9.2f}"
                 f"{norm:>12.3f}"
                 f"{r['peak_rss_mb']:>8.0f}{r['disk_mb']:>9.1f}{r['load_before']:>6.1f}")
  lines.append("us/w: wall time per weight (depends on the load); CPU us/w: process CPU time "
               "per weight (all threads);\nCPU/2^(n/2): CPU ns per weight / 2^(n/2), flat when "
               "the cost grows like 2^(n/2).")
  return "\n".join(lines)


def _merge(path: str, new_rows: list[dict]) -> list[dict]:
  rows = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      rows = json.load(f).get("rows", [])
  ident = lambda r: (r["kind"], r["devices"], r["count"], r["n"])
  replaced = {ident(r) for r in new_rows}
  rows = [r for r in rows if ident(r) not in replaced] + new_rows
  order = {"devices": 0, "counts": 1, "n": 2}
  return sorted(rows, key=lambda r: (order.get(r["kind"], 9), r["devices"], r["count"], r["n"]))


def main(argv):
  del argv
  if FLAGS.worker:
    row = _worker(FLAGS.worker_devices, FLAGS.worker_count, FLAGS.worker_n, FLAGS.chunk_size)
    print(json.dumps(row))
    return
  rows = []
  if "devices" in FLAGS.only:
    for d in FLAGS.devices:
      rows.append(_run_row("devices", int(d), FLAGS.device_count_weights, 21))
  if "counts" in FLAGS.only:
    for c in FLAGS.counts:
      rows.append(_run_row("counts", 1, int(float(c)), 21))
  if "n" in FLAGS.only:
    for n in FLAGS.n:
      rows.append(_run_row("n", 1, FLAGS.n_count_weights, int(n)))
  from lth_jax import files as files_lib  # atomic JSON write

  merged = _merge(FLAGS.out, rows)
  print(_table(merged))
  meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
          "command": "python -m benchmarks.bench_scale " + " ".join(sys.argv[1:]),
          "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
  try:
    import jax
    meta["jax"] = jax.__version__
  except ImportError:
    pass
  files_lib.atomic_write_text(FLAGS.out, json.dumps({"meta": meta, "rows": merged}, indent=1)
                            + "\n")
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  run_flags.run(main)
