r"""Benchmark: exact SubsetSum per-instance time, exactness, and MIP baselines.

  python -m benchmarks.bench_subset_sum                      # n = 16, 21, 24
  python -m benchmarks.bench_subset_sum --n=21 --batch=397000 --mip_instances=0

Instances follow the paper's Experiment 1: coefficients and targets i.i.d. uniform on
the trained FC2's weight range [-0.464, 0.541]. For each n it reports:
  * one-process time per instance through one ``solve_subset_sum`` call (best of
    ``--repeats``, after compilation), and with one process pinned per core
    (``--processes``; XLA on CPU does not spread this program over cores by itself);
  * exactness: our error vs a float64 numpy meet-in-the-middle on ``--check`` instances;
  * Gurobi (the official formulation: binary x, min z, |w - a.x| <= z <= eps,
    MIPGap 0.01) and HiGHS on ``--mip_instances`` instances when importable: time per
    instance, how often the MIP's error is >= ours, how often it found the optimum.
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import time

from absl import flags, logging

from lth_jax.run import flags as run_flags
import numpy as np

from benchmarks._common import HIGH, LOW, define_flags, write_json

FLAGS = flags.FLAGS
define_flags(batch=65536, batch_help="Instances per solve_subset_sum call.", repeats=3,
             check=256, check_help="Instances checked against the float64 reference.",
             epsilon_help="Epsilon of the MIP formulation (|w - a.x| <= eps).",
             out="benchmarks/results/subset_sum.json")
flags.DEFINE_integer("processes", 2, "Pinned processes for the multi-core row (0: skip).")
flags.DEFINE_integer("mip_instances", 20, "Instances given to Gurobi/HiGHS (0: skip).")
flags.DEFINE_float("mip_time_limit", 60.0, "Seconds per MIP instance.")


def make_instances(n, batch, seed=0):
  rng = np.random.default_rng(seed)
  c = rng.uniform(LOW, HIGH, (batch, n)).astype(np.float32)
  t = rng.uniform(LOW, HIGH, batch).astype(np.float32)
  return t, c


def reference_error(t, c):
  """float64 meet in the middle (numpy sort + searchsorted)."""
  n = len(c)
  a = n // 2
  sub_a = np.array(list(itertools.product([0, 1], repeat=a)), np.float64) @ c[:a].astype(np.float64)
  sub_b = np.sort(np.array(list(itertools.product([0, 1], repeat=n - a)), np.float64)
                  @ c[a:].astype(np.float64))
  need = float(t) - sub_a
  j = np.clip(np.searchsorted(sub_b, need), 1, len(sub_b) - 1)
  return float(np.minimum(np.abs(need - sub_b[j - 1]), np.abs(need - sub_b[j])).min())


def time_solver(n, batch, repeats, key_format, seed=0):
  import jax
  from lth_jax import solve_subset_sum

  t, c = make_instances(n, batch, seed)
  t, c = jax.device_put(t), jax.device_put(c)
  start = time.perf_counter()
  res = jax.block_until_ready(solve_subset_sum(t, c, key_format=key_format))
  first = time.perf_counter() - start
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    res = jax.block_until_ready(solve_subset_sum(t, c, key_format=key_format))
    best = min(best, time.perf_counter() - start)
  return first, best, res


def _worker(core, n, batch, repeats, key_format, seed, barrier, queue):
  os.sched_setaffinity(0, {core})
  import jax
  from lth_jax import solve_subset_sum

  t, c = (jax.device_put(a) for a in make_instances(n, batch, seed))
  jax.block_until_ready(solve_subset_sum(t, c, key_format=key_format))  # compile
  barrier.wait()
  best = float("inf")
  for _ in range(repeats):  # all workers run these calls at the same time
    start = time.perf_counter()
    jax.block_until_ready(solve_subset_sum(t, c, key_format=key_format))
    best = min(best, time.perf_counter() - start)
  queue.put(best)


def time_pinned(n, batch, repeats, key_format, processes):
  """Aggregate time per instance with one pinned process per core, all running at once."""
  cores = sorted(os.sched_getaffinity(0))[:processes]
  ctx = mp.get_context("spawn")
  barrier = ctx.Barrier(len(cores))
  queue = ctx.Queue()
  per = batch // len(cores)
  procs = [ctx.Process(target=_worker, args=(c, n, per, repeats, key_format, i + 1, barrier, queue))
           for i, c in enumerate(cores)]
  for p in procs:
    p.start()
  slowest = max(queue.get() for _ in procs)
  for p in procs:
    p.join()
  return slowest / (per * len(cores)), len(cores)


def gurobi_solve(t, c, eps, time_limit):
  import gurobipy as gp

  env = gp.Env(empty=True)
  env.setParam("OutputFlag", 0)
  env.start()
  m = gp.Model(env=env)
  m.Params.MIPGap = 0.01
  m.Params.TimeLimit = time_limit
  m.Params.Threads = 1
  x = m.addVars(len(c), vtype=gp.GRB.BINARY)
  z = m.addVar(lb=0.0, ub=eps)
  s = gp.quicksum(float(c[i]) * x[i] for i in range(len(c)))
  m.addConstr(float(t) - s <= z)
  m.addConstr(s - float(t) <= z)
  m.setObjective(z, gp.GRB.MINIMIZE)
  m.optimize()
  if m.SolCount == 0:
    return None
  mask = np.array([x[i].X > 0.5 for i in range(len(c))])
  return abs(float(t) - float(c[mask].astype(np.float64).sum()))


def highs_solve(t, c, eps, time_limit):
  import highspy

  h = highspy.Highs()
  h.setOptionValue("output_flag", False)
  h.setOptionValue("mip_rel_gap", 0.01)
  h.setOptionValue("time_limit", time_limit)
  h.setOptionValue("threads", 1)
  n = len(c)
  inf = highspy.kHighsInf
  # columns: x_0..x_{n-1} binary, z in [0, eps]; objective min z
  for _ in range(n):
    h.addVar(0.0, 1.0)
  h.addVar(0.0, eps)
  h.changeColCost(n, 1.0)
  for i in range(n):
    h.changeColIntegrality(i, highspy.HighsVarType.kInteger)
  idx = np.arange(n + 1, dtype=np.int32)
  # t - c.x <= z  <=>  -c.x - z <= -t ;  c.x - t <= z  <=>  c.x - z <= t
  h.addRow(-inf, -float(t), n + 1, idx, np.append(-c.astype(np.float64), -1.0))
  h.addRow(-inf, float(t), n + 1, idx, np.append(c.astype(np.float64), -1.0))
  h.run()
  sol = h.getSolution()
  if not sol.value_valid:
    return None
  mask = np.array(sol.col_value[:n]) > 0.5
  return abs(float(t) - float(c[mask].astype(np.float64).sum()))


def run_mip(name, solve, t, c, ours, eps, time_limit):
  times, ge, optimal, failed = [], 0, 0, 0
  for i in range(len(t)):
    start = time.perf_counter()
    err = solve(t[i], c[i], eps, time_limit)
    times.append(time.perf_counter() - start)
    if err is None:
      failed += 1
      continue
    ge += err >= ours[i] - 1e-12
    optimal += abs(err - ours[i]) <= 1e-9
  return {"solver": name, "instances": len(t), "seconds_per_instance": float(np.mean(times)),
          "mip_error_ge_ours": int(ge), "mip_found_optimum": int(optimal),
          "no_solution": int(failed)}


def main(argv):
  del argv
  rows, mips = [], []
  for n in [int(v) for v in FLAGS.n]:
    first, best, res = time_solver(n, FLAGS.batch, FLAGS.repeats, FLAGS.key_format)
    t, c = make_instances(n, FLAGS.batch)
    k = min(FLAGS.check, FLAGS.batch)
    ours = np.abs(t[:k].astype(np.float64) - np.where(np.asarray(res.mask[:k]), c[:k].astype(np.float64), 0).sum(-1))
    refs = np.array([reference_error(t[i], c[i]) for i in range(k)])
    exact = int(np.sum(ours <= refs + 1e-12))
    row = {"n": n, "batch": FLAGS.batch, "first_call_s": first, "best_s": best,
           "us_per_instance": best / FLAGS.batch * 1e6, "checked": k, "exact": exact,
           "median_error": float(np.median(np.asarray(res.error))),
           "max_error": float(np.max(np.asarray(res.error)))}
    if FLAGS.processes > 1:
      per_inst, procs = time_pinned(n, FLAGS.batch, FLAGS.repeats, FLAGS.key_format, FLAGS.processes)
      row["us_per_instance_pinned"] = per_inst * 1e6
      row["pinned_processes"] = procs
    rows.append(row)
    logging.info("n=%d: %s", n, row)
    if FLAGS.mip_instances > 0:
      m = min(FLAGS.mip_instances, k)
      for name, solve, module in (("gurobi", gurobi_solve, "gurobipy"), ("highs", highs_solve, "highspy")):
        try:
          __import__(module)
        except ImportError:
          logging.info("%s not importable: skipped", module)
          continue
        r = run_mip(name, solve, t[:m], c[:m], ours[:m], FLAGS.epsilon, FLAGS.mip_time_limit)
        r["n"] = n
        r["time_ratio_vs_ours"] = r["seconds_per_instance"] / (best / FLAGS.batch)
        mips.append(r)
        logging.info("%s n=%d: %s", name, n, r)

  print()
  print(f"{'n':>3} {'us/inst':>9} {'pinned x' + str(FLAGS.processes):>11} {'exact':>9} "
        f"{'median err':>11} {'max err':>9} {'compile+run s':>14}")
  for r in rows:
    pinned = f"{r['us_per_instance_pinned']:.1f}" if "us_per_instance_pinned" in r else "-"
    print(f"{r['n']:>3} {r['us_per_instance']:>9.1f} {pinned:>11} {r['exact']:>4}/{r['checked']:<4} "
          f"{r['median_error']:>11.2e} {r['max_error']:>9.2e} {r['first_call_s']:>14.2f}")
  if mips:
    print()
    print(f"{'solver':>7} {'n':>3} {'s/inst':>8} {'x slower':>10} {'err>=ours':>10} {'optimum':>8} {'none':>5}")
    for r in mips:
      print(f"{r['solver']:>7} {r['n']:>3} {r['seconds_per_instance']:>8.3f} "
            f"{r['time_ratio_vs_ours']:>10.0f} {r['mip_error_ge_ours']:>5}/{r['instances']:<4} "
            f"{r['mip_found_optimum']:>8} {r['no_solution']:>5}")
  write_json(FLAGS.out, {"load_avg": os.getloadavg()}, solver=rows, mip=mips)


if __name__ == "__main__":
  run_flags.run(main)
