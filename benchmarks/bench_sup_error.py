r"""Benchmark: is the default sweep's sup-error estimate (256 points, 10 ascent steps) enough?

  python -m benchmarks.bench_sup_error                     # default preset, all its seeds
  python -m benchmarks.bench_sup_error --num_seeds=8 --fine_points=4096 --fine_steps=50

Runs the preset's whole grid (its targets, methods, widths and seeds, one program each)
twice with the same key: once with the preset's ``num_points`` / ``ascent_steps`` and once
with ``--fine_points`` / ``--fine_steps``. The solve is identical (it does not depend on
the evaluation), so the two differ only in the sup-error estimate
(``evaluation.sup_output_error``: the best of random unit vectors and the ``±e_j``, then
projected gradient ascent; an estimate from below). Per target and method it reports:
  * the largest relative difference ``(fine - coarse) / fine`` over widths and seeds
    (positive: the coarse search missed that much of the sup), and the largest negative one;
  * per epsilon of the preset, the largest change over widths of the success fraction
    P(sup error <= eps) (coarse minus fine; a too-weak search overstates success);
  * per epsilon, the copies needed for success >= 0.5 and 0.9 under both settings.
Prints a table and writes JSON (``--out``), with wall/CPU times and the load.
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
from absl import app, flags

from benchmarks import _common

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "default", "Sweep preset (lth_jax/configs/sweep.py).")
flags.DEFINE_integer("num_seeds", 0, "Seeds (0: the preset's).")
flags.DEFINE_integer("fine_points", 2048, "Random unit vectors of the reference estimate.")
flags.DEFINE_integer("fine_steps", 30, "Ascent steps of the reference estimate.")
flags.DEFINE_string("out", "benchmarks/results/sup_error.json", "JSON output path.")


def _cpu():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _grid(config, named, num_points, steps):
  """The preset's grid with the given search; its results and (wall, CPU, load) times."""
  import jax  # pylint: disable=g-import-not-at-top  (after absl parsed the flags)
  from lth_jax import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  from lth_jax.run import sweep as run_sweep  # pylint: disable=g-import-not-at-top
  kwargs = dict(run_sweep.sweep_kwargs(config), num_points=num_points, ascent_steps=steps,
                key=jax.random.key(config.seed))
  load, c0, t0 = os.getloadavg()[0], _cpu(), time.perf_counter()
  res = sweep_lib.sweep_targets([k for _, k in named], run_sweep.sweep_widths(config),
                                config.sweep.num_seeds, tuple(config.sweep.methods), **kwargs)
  return res, dict(wall=time.perf_counter() - t0, cpu=_cpu() - c0, load_before=load,
                   load_after=os.getloadavg()[0])


def _compare(name, method, coarse, fine, epsilons):
  """One (target, method) row: relative differences and success changes."""
  from lth_jax import stats  # pylint: disable=g-import-not-at-top
  rel = (fine.sup_error - coarse.sup_error) / np.maximum(fine.sup_error, 1e-12)
  row = dict(target=name, method=method, max_rel_missed=float(rel.max()),
             max_rel_above=float(-rel.min()), max_abs_missed=float(
                 (fine.sup_error - coarse.sup_error).max()), eps={})
  for eps in epsilons:
    p_c = stats.success_fraction(coarse.sup_error, eps).fraction
    p_f = stats.success_fraction(fine.sup_error, eps).fraction
    change = p_c - p_f
    row["eps"][str(eps)] = dict(
        max_success_change=float(change[np.argmax(np.abs(change))]),
        flips=int(np.sum((coarse.sup_error <= eps) != (fine.sup_error <= eps))),
        copies_coarse={str(lv): stats.copies_needed(coarse.widths, p_c, lv) for lv in (0.5, 0.9)},
        copies_fine={str(lv): stats.copies_needed(fine.widths, p_f, lv) for lv in (0.5, 0.9)})
  return row


def main(argv):
  del argv
  from lth_jax.configs import sweep as sweep_configs  # pylint: disable=g-import-not-at-top
  from lth_jax.run import sweep as run_sweep  # pylint: disable=g-import-not-at-top
  config = sweep_configs.get_config(FLAGS.preset)
  if FLAGS.num_seeds:
    config.sweep.num_seeds = FLAGS.num_seeds
  named = run_sweep.build_targets(config)
  sw = config.sweep
  settings = {"coarse": (sw.num_points, sw.ascent_steps),
              "fine": (FLAGS.fine_points, FLAGS.fine_steps)}
  results, times = {}, {}
  for label, (points, steps) in settings.items():
    results[label], times[label] = _grid(config, named, points, steps)
  epsilons = sorted(set(sw.epsilons) | {sw.epsilon}, reverse=True)
  rows = [_compare(name, m, results["coarse"][t][m], results["fine"][t][m], epsilons)
          for t, (name, _) in enumerate(named) for m in sw.methods]
  print(f"sup-error search, preset {FLAGS.preset!r} ({len(named)} targets, {sw.num_seeds} "
        f"seeds): {settings['coarse']} (points, steps) vs {settings['fine']}")
  print(f"{'target':<18} {'method':<8} {'missed':>8} {'above':>8} " + " ".join(
      f"{'dP@' + str(e):>9}" for e in epsilons))
  for r in rows:
    print(f"{r['target']:<18} {r['method']:<8} {r['max_rel_missed']:>8.2%} "
          f"{r['max_rel_above']:>8.2%} " + " ".join(
              f"{r['eps'][str(e)]['max_success_change']:>+9.3f}" for e in epsilons))
  for label, t in times.items():
    print(f"grid {label} {settings[label]}: {t['wall']:.1f} s wall, {t['cpu']:.1f} s CPU "
          f"(compile included), load {t['load_before']:.2f} -> {t['load_after']:.2f}")
  _common.write_json(FLAGS.out, {"measured": time.strftime("%Y-%m-%dT%H:%M:%S")},
                     preset=FLAGS.preset, num_seeds=sw.num_seeds, settings=settings,
                     epsilons=epsilons, times=times, rows=rows,
                     note=("missed: largest (fine - coarse) / fine over widths and seeds; "
                           "above: largest (coarse - fine) / fine; dP: largest change of "
                           "P(sup <= eps) over widths, coarse minus fine"))


if __name__ == "__main__":
  app.run(main)
