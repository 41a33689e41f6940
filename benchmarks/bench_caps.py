r"""Benchmark: which m copies a capped sign half keeps (issue 10, item 3).

  python -m benchmarks.bench_caps                  # about 30 s on 2 CPU cores
  python -m benchmarks.bench_caps --weights=20000  # tighter intervals

The ``"network"`` construction solves, per weight (o, j) and sign half of u, a SubsetSum
over the products ``v[o, j, k] u[j, k]`` of the half's copies, capped at m copies. Rules
compared at the same solver cost (every instance has m coefficients):
  * ``first``: the first m members in copy order (the old rule: once a half has m members,
    more copies change nothing);
  * ``top``: the m members with the largest ``|v u|`` (the rule ``network.layer_instances``
    ships; its instances are taken from there);
  * ``mix``: the ceil(m/2) largest, then the rest spread evenly over the remaining
    members' ``|v u|`` ranks (a measured alternative).
Each weight has its own u and v (U[-1, 1], as ``sample_random_network``) and target t; a
weight misses when either half's best subset sum is farther than eps from t. Per point:
miss fraction with its 95% Wilson interval. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app, flags, logging
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_integer("weights", 2000, "Weights (two instances each) per point and rule.")
flags.DEFINE_integer("headline_weights", 6000, "Weights at the issue's point (80, 16, 0.6).")
flags.DEFINE_float("epsilon", 0.01, "Per-weight tolerance.")
flags.DEFINE_integer("seed", 0, "Seed of the random products.")
flags.DEFINE_string("out", "benchmarks/results/caps.json", "JSON output path.")

RULES = ("first", "top", "mix")
# (copies n, cap m, target t); the first is the simulation.
POINTS = ((80, 16, 0.6), (80, 16, 0.05), (80, 16, 0.3), (80, 16, 0.9), (48, 12, 0.05),
          (48, 12, 0.6), (80, 10, 0.05), (80, 10, 0.6), (64, 24, 0.6), (64, 24, 1.0))


def _ranked(p, member):
  """Per row, member copies by decreasing |p| (ties: lower copy index), then the rest."""
  n = p.shape[-1]
  key = np.where(member, -np.abs(p), np.inf)
  return np.lexsort((np.broadcast_to(np.arange(n), p.shape), key), axis=-1)


def _pick(p, member, m, rule):
  """``(weights, m)`` coefficients of one half under ``first`` or ``mix`` (0: no copy)."""
  n = p.shape[-1]
  count = member.sum(-1, keepdims=True)
  i = np.arange(m)
  if rule == "first":
    order = np.argsort(~member, axis=-1, kind="stable")  # members in copy order first
    take = np.broadcast_to(i, (p.shape[0], m))
  else:
    order = _ranked(p, member)
    h = (m + 1) // 2
    spread = np.floor(h + (i - h + 0.5) * (count - h) / max(m - h, 1)).astype(np.int64)
    take = np.where((count > m) & (i >= h), spread, i)
  idx = np.take_along_axis(order, np.minimum(take, n - 1), -1)
  return np.where(i < np.minimum(count, m), np.take_along_axis(p, idx, -1), 0.0)


def _halves(rule, u, v, t, m):
  """Per half the ``(targets (W,), coefficients (W, m))`` of the W weights."""
  import jax.numpy as jnp
  from lth_jax.constructions import network

  if rule == "top":
    # One layer with d_in = W inputs and one output: every weight has its own u row.
    inst = network.layer_instances(jnp.asarray(u), jnp.asarray(v)[None],
                                   jnp.asarray(t)[:, None], m)
    return [(inst.targets[h, 0], inst.products[h, 0]) for h in range(2)]
  p = (v * u).astype(np.float32)
  return [(jnp.asarray(t), jnp.asarray(_pick(p, member, m, rule), jnp.float32))
          for member in (u > 0, u <= 0)]


def _point(n, m, target, weights, eps, seed):
  from lth_jax import solve_subset_sum
  from lth_jax.stats import wilson_interval

  rng = np.random.default_rng([seed, n, m, int(target * 1000)])
  u = rng.uniform(-1, 1, (weights, n)).astype(np.float32)
  v = rng.uniform(-1, 1, (weights, n)).astype(np.float32)
  t = np.full(weights, target, np.float32)
  row = {"copies": n, "cap": m, "target": target, "weights": weights, "epsilon": eps,
         "members_over_cap": float(np.mean(np.sum(u > 0, -1) > m))}
  for rule in RULES:
    start = time.perf_counter()
    err = np.max([np.asarray(solve_subset_sum(tt, c).error)
                  for tt, c in _halves(rule, u, v, t, m)], axis=0)
    p = wilson_interval(int(np.sum(err > eps)), weights)
    row[rule] = {"miss": float(p.fraction), "low": float(p.low), "high": float(p.high),
                 "mean_error": float(np.mean(err)), "seconds": time.perf_counter() - start}
  return row


def main(argv):
  del argv
  import jax

  start = time.perf_counter()
  rows = [_point(n, m, t, FLAGS.headline_weights if i == 0 else FLAGS.weights, FLAGS.epsilon,
                 FLAGS.seed) for i, (n, m, t) in enumerate(POINTS)]
  total = time.perf_counter() - start
  print()
  print(f"miss fraction per weight (|t - best subset sum| > {FLAGS.epsilon} in either half), "
        "95% Wilson interval")
  print(f"{'copies':>6} {'cap':>3} {'target':>6} {'weights':>7} {'>cap':>5} "
        + " ".join(f"{r:>22}" for r in RULES))
  for r in rows:
    cells = " ".join(f"{r[k]['miss']:>7.4f} [{r[k]['low']:.4f},{r[k]['high']:.4f}]"
                     for k in RULES)
    print(f"{r['copies']:>6} {r['cap']:>3} {r['target']:>6.2f} {r['weights']:>7} "
          f"{r['members_over_cap']:>5.2f} {cells}")
  print(f"total {total:.1f} s; load average at the end: {os.getloadavg()}")
  out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                     "backend": jax.default_backend(), "jax": jax.__version__},
         "command": " ".join(sys.argv), "seconds": total, "rules": RULES, "rows": rows}
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  tmp = FLAGS.out + ".tmp"
  with open(tmp, "w") as f:
    json.dump(out, f, indent=2)
  os.replace(tmp, FLAGS.out)
  logging.info("wrote %s", FLAGS.out)


if __name__ == "__main__":
  app.run(main)
