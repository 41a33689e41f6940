r"""Benchmark: fewest terms within epsilon vs minimum error (solve_subset_sum).

  python -m benchmarks.bench_fewest_terms                 # n = 16, 21, 24, batch 16384
  python -m benchmarks.bench_fewest_terms --paper_batch=0 --hard_epsilon=0

Rows (each: one call per solver on the same batch, best of ``--repeats`` after a first,
compiling call; wall and process CPU time per instance, since the machine is shared):
  * ``uniform``: t ~ U[-0.5, 0.5], c ~ U[-1, 1], eps = ``--epsilon``, for each ``--n``;
    mean number of chosen terms under both objectives; counts and errors checked against a
    float64 enumeration of all subsets of up to 5 terms on ``--check`` instances.
  * ``paper``: Experiment 1 at full size, ``--paper_batch`` (397,000) instances at n = 21,
    coefficients and targets i.i.d. uniform on the trained FC2's weight range.
  * ``hard``: eps = ``--hard_epsilon`` at n = 21, so that most instances need more terms
    than tier 1 enumerates (exercises the popcount-layered meet in the middle).
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import itertools
import os
import time

from absl import flags, logging

from lth_jax.run import flags as run_flags
import numpy as np

from benchmarks._common import HIGH, LOW, define_flags, write_json

FLAGS = flags.FLAGS
define_flags(batch=16384, batch_help="Instances per call for the uniform rows.", repeats=2,
             check=64, check_help="Instances checked against float64 enumeration.",
             epsilon_help="Tolerance.", out="benchmarks/results/fewest_terms.json")
flags.DEFINE_integer("paper_batch", 397000, "Experiment-1 instances at n = 21 (0: skip).")
flags.DEFINE_float("hard_epsilon", 1e-5, "Epsilon of the hard row at n = 21 (0: skip).")
flags.DEFINE_integer("hard_batch", 4096, "Instances of the hard row.")


def timed(fn, repeats):
  """(first call s, best wall s, CPU s of that call, result)."""
  import jax

  start = time.perf_counter()
  res = jax.block_until_ready(fn())
  first = time.perf_counter() - start
  best = (float("inf"), float("inf"))
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    res = jax.block_until_ready(fn())
    best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
  return first, best[0], best[1], res


def reference(t, c, eps, max_terms=5):
  """float64: (min count or -1 if > max_terms / infeasible, best error at that count)."""
  n = len(c)
  if abs(float(t)) <= eps:
    return 0, abs(float(t))
  for k in range(1, max_terms + 1):
    combos = np.array(list(itertools.combinations(range(n), k)), np.int64)
    err = np.abs(float(t) - c.astype(np.float64)[combos].sum(-1))
    if (err <= eps).any():
      return k, float(err[err <= eps].min())
  return -1, float("nan")


def run(name, n, t, c, eps, repeats, key_format, check):
  import jax
  from lth_jax import solve_subset_sum
  from lth_jax.fewest_terms import solve_fewest_terms

  t, c = jax.device_put(t), jax.device_put(c)
  f_first, f_wall, f_cpu, few = timed(
      lambda: solve_fewest_terms(t, c, eps, key_format=key_format), repeats)
  s_first, s_wall, s_cpu, ss = timed(
      lambda: solve_subset_sum(t, c, key_format=key_format), repeats)
  b = t.shape[0]
  row = {"row": name, "n": n, "batch": b, "epsilon": eps,
         "fewest_us_per_instance": f_wall / b * 1e6, "fewest_cpu_us": f_cpu / b * 1e6,
         "fewest_first_call_s": f_first,
         "subset_sum_us_per_instance": s_wall / b * 1e6, "subset_sum_cpu_us": s_cpu / b * 1e6,
         "subset_sum_first_call_s": s_first,
         "feasible_fraction": float(np.mean(np.asarray(few.feasible))),
         "mean_count_fewest": float(np.mean(np.asarray(few.count))),
         "mean_count_min_error": float(np.mean(np.asarray(ss.mask).sum(-1))),
         "max_count_fewest": int(np.max(np.asarray(few.count))),
         "load_avg": os.getloadavg()}
  tn, cn = np.asarray(t), np.asarray(c)
  k = min(check, b)
  agree = checked = 0
  for i in range(k):
    count, err = reference(tn[i], cn[i], eps)
    if count < 0:
      continue  # needs more than 5 terms or infeasible: not covered by the reference
    checked += 1
    agree += (int(few.count[i]) == count and bool(few.feasible[i])
              and abs(float(few.error[i]) - err) <= 1e-6 * err + 1e-12)
  row["checked"], row["agree"] = checked, agree
  logging.info("%s", row)
  return row


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  rows = []
  for n in [int(v) for v in FLAGS.n]:
    t = rng.uniform(-0.5, 0.5, FLAGS.batch).astype(np.float32)
    c = rng.uniform(-1, 1, (FLAGS.batch, n)).astype(np.float32)
    rows.append(run("uniform", n, t, c, FLAGS.epsilon, FLAGS.repeats, FLAGS.key_format,
                    FLAGS.check))
  if FLAGS.paper_batch > 0:
    t = rng.uniform(LOW, HIGH, FLAGS.paper_batch).astype(np.float32)
    c = rng.uniform(LOW, HIGH, (FLAGS.paper_batch, 21)).astype(np.float32)
    rows.append(run("paper", 21, t, c, FLAGS.epsilon, 1, FLAGS.key_format, FLAGS.check))
  if FLAGS.hard_epsilon > 0:
    t = rng.uniform(-0.5, 0.5, FLAGS.hard_batch).astype(np.float32)
    c = rng.uniform(-1, 1, (FLAGS.hard_batch, 21)).astype(np.float32)
    rows.append(run("hard", 21, t, c, FLAGS.hard_epsilon, FLAGS.repeats, FLAGS.key_format,
                    FLAGS.check))

  print()
  print(f"{'row':>8} {'n':>3} {'batch':>7} {'eps':>7} {'fewest us':>10} {'(cpu)':>7} "
        f"{'minerr us':>10} {'(cpu)':>7} {'terms fewest':>12} {'terms minerr':>12} "
        f"{'feasible':>8} {'checked':>8} {'compile s':>9}")
  for r in rows:
    print(f"{r['row']:>8} {r['n']:>3} {r['batch']:>7} {r['epsilon']:>7.0e} "
          f"{r['fewest_us_per_instance']:>10.1f} {r['fewest_cpu_us']:>7.1f} "
          f"{r['subset_sum_us_per_instance']:>10.1f} {r['subset_sum_cpu_us']:>7.1f} "
          f"{r['mean_count_fewest']:>12.2f} {r['mean_count_min_error']:>12.2f} "
          f"{r['feasible_fraction']:>8.4f} {r['agree']:>4}/{r['checked']:<3} "
          f"{r['fewest_first_call_s']:>9.1f}")
  print(f"load average at the end: {os.getloadavg()}")
  write_json(FLAGS.out, {}, rows=rows)


if __name__ == "__main__":
  run_flags.run(main)
