r"""Calibrates theory.C_NETWORK from a finished (or partly finished) sweep's results.

  python scripts/calibrate_c.py docs/runs/sweep_default [--level=0.5] [--method=network]

For every (target, epsilon) of the run: the copies needed for P(sup error <= eps) >= level
(``stats.copies_needed``: reached at that width and every larger one) divided by
``max_i log2(d_{i-1} d_i l / eps)`` (``theory.log_term``); C is the largest ratio
(``theory.calibrate_constant``'s rule: the smallest C with which the formula covers every
point, here over all epsilons).
Points not reached within the grid are censored: counted and left out (C is then a lower
estimate). The 95% interval comes from a bootstrap over seeds (each target's seeds
resampled with replacement, 2000 times). Reads ``results.jsonl`` (or, for an unfinished
resumable run, ``targets/*.npz``); prints a line per point and the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import numpy as np

from lth_jax import files
from lth_jax import stats
from lth_jax import theory


def _grids(run_dir: pathlib.Path, method: str) -> dict:
  """target -> (layer_sizes, widths (W,), sup_error (W, S)) of ``method``."""
  out = {}
  rows = (files.read_jsonl(run_dir / "results.jsonl")
          if (run_dir / "results.jsonl").exists() else [])
  for r in rows:
    if r["method"] == method:
      out.setdefault(r["experiment"], (tuple(r["layer_sizes"]), {}))[1].setdefault(
          r["width"], {})[r["seed"]] = r["sup_error"]
  grids = {}
  for name, (sizes, by_width) in out.items():
    widths = sorted(by_width)
    grids[name] = (sizes, np.asarray(widths), np.asarray(
        [[by_width[w][s] for s in sorted(by_width[w])] for w in widths]))
  for path in sorted((run_dir / "targets").glob("*.npz")) if not rows else []:
    a = files.load_npz(path)
    grids[path.stem] = (tuple(int(d) for d in a[f"{method}.layer_sizes"]),
                        a[f"{method}.widths"], a[f"{method}.sup_error"])
  return grids


def _constant(grids, epsilons, level, seed_index=None):
  """(C, points [(target, eps, copies, ratio)], censored) for the given seeds."""
  points, censored = [], 0
  for name, (sizes, widths, sup) in grids.items():
    sup = sup if seed_index is None else sup[:, seed_index[name]]
    for eps in epsilons:
      n = stats.copies_needed(widths, stats.success_fraction(sup, eps).fraction, level)
      if not math.isfinite(n):
        censored += 1
        continue
      points.append((name, eps, n, n / max(theory.log_term(sizes, eps))))
  # theory.calibrate_constant's rule (the largest ratio), over points of several epsilons
  return (max(p[3] for p in points) if points else math.nan), points, censored


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run_dir", type=pathlib.Path)
  parser.add_argument("--level", type=float, default=0.5)
  parser.add_argument("--method", default="network")
  parser.add_argument("--resamples", type=int, default=2000)
  args = parser.parse_args()
  run = json.loads((args.run_dir / "run.json").read_text())
  epsilons = sorted(set(run["sweep"]["epsilons"]) | {run["sweep"]["epsilon"]}, reverse=True)
  grids = _grids(args.run_dir, args.method)
  c, points, censored = _constant(grids, epsilons, args.level)
  for name, eps, n, ratio in points:
    print(f"{name:<20} eps={eps:<5} copies={n:>4.0f} ratio={ratio:.3f}")
  rng = np.random.default_rng(0)
  boot = []
  for _ in range(args.resamples):
    index = {k: rng.integers(0, g[2].shape[1], g[2].shape[1]) for k, g in grids.items()}
    boot.append(_constant(grids, epsilons, args.level, index)[0])
  low, high = np.nanpercentile(boot, [2.5, 97.5])
  out = dict(run_dir=str(args.run_dir), method=args.method, level=args.level, C=c,
             interval=[float(low), float(high)], points=len(points), censored=censored,
             targets=sorted(grids), epsilons=epsilons,
             argmax=max(points, key=lambda p: p[3])[:3] if points else None)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
