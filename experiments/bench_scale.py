r"""Benchmark: streaming SubsetSum at scale (weights/s and peak RSS over devices, weight
counts and n). The entry point the issue names; the benchmark itself is
``benchmarks/bench_scale.py`` (same flags, same rows, same ``--out`` JSON):

  python -m experiments.bench_scale                                  # everything but 1e7
  python -m experiments.bench_scale --only=counts --counts=1e7       # the long one
  python -m experiments.bench_scale --only=devices --devices=1,2,4

Every row still runs in its own ``python -m benchmarks.bench_scale --worker`` subprocess
(its own forced host device count and peak RSS), started from the repository root, so
run this from a source checkout.
"""

import os
import sys

from absl import flags

from lth_jax.run import flags as run_flags

try:
  from benchmarks import bench_scale
except ImportError:  # run from outside the checkout: its root is this file's parent's parent
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import bench_scale  # pylint: disable=g-import-not-at-top

# --help lists the benchmark's flags as this module's own.
flags.adopt_module_key_flags(bench_scale)

if __name__ == "__main__":
  run_flags.run(bench_scale.main)
