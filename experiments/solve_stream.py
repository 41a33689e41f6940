"""Solve millions of "direct" SubsetSum instances in resumable chunks (lth_jax.streaming).

  python -m experiments.solve_stream --out_dir=/tmp/stream --num_weights=20000000
  python -m experiments.solve_stream --out_dir=runs/fc2 --weights=fc2_weights.npy --n=21
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m experiments.solve_stream \
      --out_dir=/tmp/stream --num_weights=1000000 --shard      # split chunks over devices
  python -m experiments.solve_stream --distributed --shard ...  # multi-host (process 0 writes)
  python -m experiments.solve_stream --distributed --shard --coordinator_address=host0:1234 \
      --num_processes=2 --process_id=0 ...   # outside a managed cluster, once per process

Writes chunk_*.npz (bit-packed masks, errors, values) and manifest.json to --out_dir. A run
that is killed and restarted with the same command keeps every finished chunk and ends with
the same files as an uninterrupted run.
"""

import numpy as np
from absl import app, flags, logging

from lth_jax import sharding, stream_sources, streaming

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory.", required=True)
_NUM_WEIGHTS = flags.DEFINE_integer("num_weights", 1_000_000,
                                    "Weights to generate (ignored with --weights).")
_WEIGHTS = flags.DEFINE_string("weights", None, ".npy file of target weights (any shape, "
                               "flattened in C order; memory-mapped).")
_N = flags.DEFINE_integer("n", 21, "Coefficients per weight.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the coefficients (and generated weights).")
_LOW = flags.DEFINE_float("low", -0.464, "Coefficient (and generated weight) range, low.")
_HIGH = flags.DEFINE_float("high", 0.541, "Coefficient (and generated weight) range, high.")
_GROUP = flags.DEFINE_integer("group_size", 1, "Consecutive weights sharing one coefficient "
                              "vector (d_in for row-major (d_out, d_in) weights).")
_CHUNK = flags.DEFINE_integer("chunk_size", 1 << 16, "Instances per saved chunk.")
_EPSILON = flags.DEFINE_float("epsilon", 0.01, "Threshold of the summary's fraction.")
_PACK = flags.DEFINE_bool("pack_masks", True, "Store masks bit-packed.")
_SHARD = flags.DEFINE_bool("shard", False, "Split every chunk over all devices.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() "
                                  "(multi-host; every process runs the same command).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "With --distributed outside "
                                   "a managed cluster: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed: processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: this process.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a different run in --out_dir.")
_PAUSE = flags.DEFINE_float("pause_s", 0.0, "Sleep after each chunk (share the machine).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  init = {k: v for k, v in (("coordinator_address", _COORDINATOR.value),
                            ("num_processes", _NUM_PROCESSES.value),
                            ("process_id", _PROCESS_ID.value)) if v is not None}
  if init and not _DISTRIBUTED.value:
    raise app.UsageError(f"--{'/--'.join(init)} need --distributed")
  sharding.initialize_distributed(_DISTRIBUTED.value, **init)
  weights = None
  if _WEIGHTS.value:
    weights = np.load(_WEIGHTS.value, mmap_mode="r").reshape(-1)
  source = stream_sources.DirectSource(
      _N.value, _SEED.value, _LOW.value, _HIGH.value, weights=weights,
      num_weights=None if weights is not None else _NUM_WEIGHTS.value,
      group_size=_GROUP.value)
  mesh = sharding.make_instance_mesh() if _SHARD.value else None
  report = streaming.solve_stream(
      source, _OUT_DIR.value, chunk_size=_CHUNK.value, mesh=mesh, pack_masks=_PACK.value,
      overwrite=_OVERWRITE.value, epsilon=_EPSILON.value, pause_s=_PAUSE.value)
  if sharding.is_primary():
    logging.info("solved %d chunks (%d already done) of %s: %.0f instances/s; summary %s",
                 report.chunks_solved, report.chunks_skipped, report.out_dir,
                 report.instances_per_second, report.summary)


if __name__ == "__main__":
  app.run(main)
