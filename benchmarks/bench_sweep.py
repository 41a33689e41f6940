r"""Benchmark: wall time of the default sweep and where it goes.

  python -m benchmarks.bench_sweep                    # the "default" preset
  python -m benchmarks.bench_sweep --preset=paper --skip_entry_point

Rows (each with wall and CPU seconds and the 1-minute load average before and after):
  * ``entry point``: ``python -m experiments.sweep`` with no flags, as a user runs it
    (a subprocess: imports, targets, the grid program, analysis, figures, files);
  * ``grid, first call``: ``sweep_targets`` on the preset's targets = compile + run;
  * ``grid, second call``: the same shapes, another key: the run alone (cached program);
  * ``compile`` = first - second;
  * ``grid without sup error``: the run with ``num_points=1, ascent_steps=0`` (its own
    compiled program, timed on its second call): solving, assembly and the per-weight
    statistics;
  * ``sup-error search`` = second - without;
  * ``host work`` = entry point - first call - process start-up and imports (measured
    as ``python -c 'import lth_jax.run.sweep'``): targets, analysis, tables, figures, files.
CPU seconds (user + system of this process, or of the subprocess) are what an idle 2-core
machine would turn into wall time at best; wall times on a shared machine grow with the load.
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "default", "Sweep preset (lth_jax/configs/sweep.py).")
flags.DEFINE_bool("skip_entry_point", False, "Do not run the entry point subprocess.")
flags.DEFINE_string("out", "benchmarks/results/sweep.json", "JSON output path.")


def _cpu(who=resource.RUSAGE_SELF):
  r = resource.getrusage(who)
  return r.ru_utime + r.ru_stime


def _timed(fn, who=resource.RUSAGE_SELF):
  load = os.getloadavg()[0]
  c0, t0 = _cpu(who), time.perf_counter()
  out = fn()
  wall, cpu = time.perf_counter() - t0, _cpu(who) - c0
  return out, dict(wall=wall, cpu=cpu, load_before=load, load_after=os.getloadavg()[0])


def _subprocess(args):
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  return lambda: subprocess.run([sys.executable, *args], check=True, env=env,
                                capture_output=True, text=True)


def _grid_call(config, named, **override):
  import jax
  from lth_jax import sweep as sweep_lib
  from lth_jax.run import sweep as run_sweep
  kwargs = dict(run_sweep.sweep_kwargs(config), **override)

  def call(seed):
    kwargs["key"] = jax.random.key(seed)
    return sweep_lib.sweep_targets([k for _, k in named], run_sweep.sweep_widths(config),
                                   config.sweep.num_seeds, tuple(config.sweep.methods),
                                   **kwargs)
  return call


def main(argv):
  del argv
  from lth_jax.configs import sweep as sweep_configs
  from lth_jax.run import sweep as run_sweep
  config = sweep_configs.get_config(FLAGS.preset)
  config.lueker.trials = 0  # the sweep only (the default preset skips it anyway)
  rows = {}
  if not FLAGS.skip_entry_point:
    with tempfile.TemporaryDirectory() as tmp:
      args = ["-m", "experiments.sweep", f"--out_dir={tmp}/run"]
      if FLAGS.preset != "default":
        args.append(f"--config=lth_jax/configs/sweep.py:{FLAGS.preset}")
      _, rows["entry point"] = _timed(_subprocess(args), resource.RUSAGE_CHILDREN)
    _, rows["start-up and imports"] = _timed(
        _subprocess(["-c", "import lth_jax.run.sweep"]), resource.RUSAGE_CHILDREN)
  named = run_sweep.build_targets(config)
  full = _grid_call(config, named)
  _, rows["grid, first call"] = _timed(lambda: full(0))
  _, rows["grid, second call"] = _timed(lambda: full(1))
  bare = _grid_call(config, named, num_points=1, ascent_steps=0)
  bare(0)
  _, rows["grid without sup error"] = _timed(lambda: bare(1))
  diff = lambda a, b: {k: rows[a][k] - rows[b][k] for k in ("wall", "cpu")}
  rows["compile"] = diff("grid, first call", "grid, second call")
  rows["sup-error search"] = diff("grid, second call", "grid without sup error")
  if "entry point" in rows:
    rows["host work"] = {k: rows["entry point"][k] - rows["grid, first call"][k]
                         - rows["start-up and imports"][k] for k in ("wall", "cpu")}
  print(f"sweep benchmark, preset {FLAGS.preset!r}: {len(named)} targets, methods "
        f"{'/'.join(config.sweep.methods)}, {config.sweep.num_seeds} seeds, widths "
        f"{tuple(config.sweep.widths)}; {os.cpu_count()} CPUs")
  print(f"{'part':<24} {'wall s':>8} {'CPU s':>8} {'load before':>11} {'load after':>10}")
  for name, r in rows.items():
    load = (f"{r['load_before']:>11.2f} {r['load_after']:>10.2f}" if "load_before" in r
            else f"{'(difference)':>22}")
    print(f"{name:<24} {r['wall']:>8.1f} {r['cpu']:>8.1f} {load}")
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(dict(preset=FLAGS.preset, machine=platform.platform(), cpus=os.cpu_count(),
                   python=sys.version.split()[0], measured=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   note=("load averages are those of the whole machine, shared with other "
                         "jobs: wall times grow with them, CPU seconds much less"),
                   rows=rows), f, indent=1)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
