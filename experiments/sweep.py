"""Width sweeps of the ticket constructions, theory side by side, and the Lueker check.

  python -m experiments.sweep                      # "default" preset into runs/sweep-<time>
  python -m experiments.sweep --config=lth_jax/configs/sweep.py:quick --out_dir=/tmp/q
  python -m experiments.sweep --out_dir=/tmp/s --config.sweep.widths="(4,8,16)" --overwrite
  python -m experiments.sweep --config.devices.shard=True   # seeds split over all devices

Prints the tables; writes results.jsonl, summary.json, error_vs_copies.png,
overparam_vs_d.png (and lueker.jsonl, lueker.png), then done.json, into --out_dir, named in
the last log line. Multi-host (--config.devices.distributed=True; outside a managed cluster
also --config.devices.coordinator_address=host:port --config.devices.num_processes=N
--config.devices.process_id=i): every process runs the same command; only process 0 writes
and prints. Bad flags end with one line
``error: --<flag>: ...``. All logic is lth_jax.sweep.run_experiment; presets in
lth_jax/configs/sweep.py.
"""

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from lth_jax.configs import sweep as sweep_configs
from lth_jax.sweep import check_config_args, run_experiment, validate_config

_DEFAULT_CONFIG = os.path.join(os.path.dirname(sweep_configs.__file__), "sweep.py") + ":default"


def _error(e: Exception) -> SystemExit:
  """A one-line ``error: ...`` exit; a ``config...`` message names its flag (``--config.x``)."""
  msg = str(e).splitlines()[0] if str(e) else type(e).__name__
  if msg.startswith(("config.", "config:")):
    msg = "--" + msg  # names the flag: --config.sweep.widths: ...
  return SystemExit(f"error: {msg}")


if __name__ == "__main__":
  # ml_collections loads the config and resolves --config.<field> overrides while the flag
  # below is defined (and parsed), with a traceback for an unknown preset or field.
  try:
    check_config_args(sys.argv, _DEFAULT_CONFIG)
  except ValueError as e:
    raise _error(e) from None

_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "Config file and preset, e.g. lth_jax/configs/sweep.py:quick (presets: "
    f"{', '.join(sweep_configs.PRESETS)}); override fields with --config.<field>=...")
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Output directory (must be empty or new); default runs/sweep-<timestamp>.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the contents of a non-empty --out_dir.")


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments: {' '.join(argv[1:])}")
  out_dir = _OUT_DIR.value or os.path.join("runs", time.strftime("sweep-%Y%m%d-%H%M%S"))
  config = _CONFIG.value
  try:
    validate_config(config)
    result = run_experiment(config, out_dir, overwrite=_OVERWRITE.value)
  except (ValueError, FileExistsError, FileNotFoundError) as e:
    raise _error(e) from None
  if not result["primary"]:
    return  # multi-host: process 0 prints and writes
  for name in ("grid", "summary", "lueker"):
    if name in result["tables"]:
      print(result["tables"][name], end="\n\n", flush=True)
  logging.info("finished in %.1f s; wrote %d files", result["seconds"], len(result["files"]))
  logging.info("output directory: %s", os.path.abspath(result["out_dir"]))


if __name__ == "__main__":
  app.run(main)
