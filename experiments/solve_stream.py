"""Solve millions of "direct" SubsetSum instances in resumable chunks (lth_jax.streaming).

  python -m experiments.solve_stream --out_dir=runs/fc2 --weights=fc2_weights.npy --n=21
  ... --shard [--distributed --coordinator_address=h:1234 --num_processes=2 --process_id=0]

Writes chunk_*.npz and manifest.json to --out_dir; a killed run restarted with the same
command keeps every finished chunk. Bad input: one line ``error: <what>: <why>``.
"""

from absl import flags, logging

from lth_jax import files, sharding, stream_sources, streaming, subset_sum
from lth_jax.run import flags as run_flags

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory.", required=True)
_NUM_WEIGHTS = flags.DEFINE_integer("num_weights", 1_000_000, "Weights to generate.", lower_bound=1)
_WEIGHTS = flags.DEFINE_string("weights", None, ".npy file of target weights (flattened).")
_N = flags.DEFINE_integer("n", 21, "Coefficients per weight.", 1, subset_sum.MAX_N)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the coefficients (and generated weights).")
_LOW, _HIGH = (flags.DEFINE_float(n, v, f"Coefficient (and generated weight) range, {n}.")
               for n, v in (("low", -0.464), ("high", 0.541)))
_GROUP = flags.DEFINE_integer("group_size", 1, "Weights sharing coefficients.", lower_bound=1)
_CHUNK = flags.DEFINE_integer("chunk_size", 1 << 16, "Instances per chunk.", lower_bound=1)
_EPSILON = flags.DEFINE_float("epsilon", 0.01, "The summary's threshold.", lower_bound=0.0)
_PACK = flags.DEFINE_bool("pack_masks", True, "Store masks bit-packed.")
_SHARD = flags.DEFINE_bool("shard", False, "Split every chunk over all devices.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() first.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed: processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: this process.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a different run in --out_dir.")
_PAUSE = flags.DEFINE_float("pause_s", 0.0, "Sleep after each chunk (share the machine).")
flags.register_multi_flags_validator(["low", "high"], lambda f: f["low"] < f["high"], "low >= high")


def main(argv):
  del argv  # run_flags.run refuses stray arguments
  init = {f.name: f.value for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID) if f.present}
  if init and not _DISTRIBUTED.value:
    raise ValueError(f"--{'/--'.join(init)}: need --distributed")
  sharding.initialize_distributed(_DISTRIBUTED.value, **init)
  weights = files.load_npy(_WEIGHTS.value, mmap=True).reshape(-1) if _WEIGHTS.value else None
  if sharding.is_primary():  # a corrupt manifest, an unwritable --out_dir: refused now
    files.check_state_file(f"{_OUT_DIR.value}/{streaming.MANIFEST}", _OVERWRITE.value)
    files.check_writable(_OUT_DIR.value)
  source = stream_sources.DirectSource(_N.value, _SEED.value, _LOW.value, _HIGH.value,
                                       weights=weights, group_size=_GROUP.value,
                                       num_weights=None if _WEIGHTS.value else _NUM_WEIGHTS.value)
  report = streaming.solve_stream(
      source, _OUT_DIR.value, chunk_size=_CHUNK.value, pack_masks=_PACK.value,
      mesh=sharding.make_instance_mesh() if _SHARD.value else None,
      overwrite=_OVERWRITE.value, epsilon=_EPSILON.value, pause_s=_PAUSE.value)
  if sharding.is_primary():
    logging.info("solved %d chunks (%d already done) of %s: %.0f instances/s; summary %s",
                 report.chunks_solved, report.chunks_skipped, report.out_dir,
                 report.instances_per_second, report.summary)


if __name__ == "__main__":
  run_flags.run(main)
