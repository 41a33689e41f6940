"""Width sweeps of the ticket constructions, theory side by side, and the Lueker check.

  python -m experiments.sweep                      # "default" preset into runs/sweep-<time>
  python -m experiments.sweep --config=quick --out_dir=/tmp/q
  python -m experiments.sweep --out_dir=/tmp/s --config.sweep.widths="(4,8,16)" --overwrite
  python -m experiments.sweep --config.devices.shard=True   # seeds split over all devices

Prints the tables; writes results.jsonl, success.jsonl, copies.jsonl, summary.json,
tables.txt, success_vs_copies.png, log_law.png, log_law_0.9.png, error_vs_copies.png,
overparam_vs_d.png (and lueker.jsonl, lueker.png), then done.json, into --out_dir, named in
the last log line. A killed run resumes when rerun with the same flags and --out_dir (each
target's grid is kept in targets/*.npz). Multi-host (--config.devices.distributed=True;
outside a managed cluster
also --config.devices.coordinator_address=host:port --config.devices.num_processes=N
--config.devices.process_id=i): every process runs the same command; only process 0 writes
and prints. Bad flags end with one line ``error: --<flag>: ...`` (lth_jax/run/flags.py).
All logic is lth_jax.run.sweep.run_experiment; presets in lth_jax/configs/sweep.py.
"""

import os
import time

from absl import flags, logging

from lth_jax.run import flags as run_flags
from lth_jax.configs import sweep as sweep_configs
from lth_jax.run import sweep as run_sweep

_CONFIG = run_flags.ConfigFlag(sweep_configs, "default")
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Output directory (new, empty, or an unfinished run of the same config to resume); "
    "default runs/sweep-<timestamp>.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the contents of a non-empty --out_dir.")


def main(argv):
  del argv  # run_flags.run refuses stray arguments
  out_dir = _OUT_DIR.value or os.path.join("runs", time.strftime("sweep-%Y%m%d-%H%M%S"))
  result = run_sweep.run_experiment(_CONFIG.value, out_dir, overwrite=_OVERWRITE.value)
  if not result["primary"]:
    return  # multi-host: process 0 prints and writes
  for table in result["tables"].values():  # success, log law, summary, lueker
    print(table, end="\n\n", flush=True)
  logging.info("finished in %.1f s; wrote %d files", result["seconds"], len(result["files"]))
  logging.info("output directory: %s", os.path.abspath(result["out_dir"]))


if __name__ == "__main__":
  run_flags.run(main, _CONFIG)
