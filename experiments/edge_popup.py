"""Experiment 2: edge-popup on random redundant / wide networks vs trained dense baselines.

  python -m experiments.edge_popup --out_dir=/tmp/ep                      # "quick" preset
  python -m experiments.edge_popup --preset=paper --out_dir=runs/ep --config.epochs=30
  python -m experiments.edge_popup --dataset=mnist --data_dir=~/mnist --out_dir=runs/ep_mnist

Writes results.jsonl and edge_popup_{fc2,fc4,lenet5}.png to --out_dir; a killed run restarted
with the same command resumes from its last finished epoch. Progress lines (every
--log_every_seconds) give the whole run's percentage and ETA. Bad input ends in one line
``error: <what>: <why>`` (lth_jax/run/flags.py). See lth_jax/configs/edge_popup.py.
"""

import logging as std_logging
import os

from absl import flags, logging

from lth_jax import checkpoints, files
from lth_jax import data as data_lib
from lth_jax.configs import edge_popup as edge_popup_configs
from lth_jax.report import tables
from lth_jax.run import edge_popup
from lth_jax.run import flags as run_flags

_CONFIG = run_flags.ConfigFlag(edge_popup_configs, "quick", preset_flag="preset")
_DATASET = flags.DEFINE_enum("dataset", "fashion_mnist", ["fashion_mnist", "mnist", "synthetic"],
                             "Dataset (mnist needs --data_dir with the IDX files).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory of the dataset's IDX files.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out_dir.")
_LOG_EVERY = flags.DEFINE_float("log_every_seconds", 30.0,
                                "Seconds between progress lines (overall percentage and ETA).")


def main(argv):
  del argv  # run_flags.run refuses stray arguments
  std_logging.getLogger("absl").addFilter(  # orbax's INFO chatter: lines per saved epoch
      lambda r: r.levelno >= std_logging.WARNING or "orbax" not in r.pathname)
  if _DATASET.value == "mnist" and not _DATA_DIR.value:
    raise ValueError("--data_dir: --dataset=mnist needs a directory of MNIST IDX files")
  data_dir = os.path.expanduser(_DATA_DIR.value) if _DATA_DIR.value else None
  if data_dir and not os.path.isdir(data_dir):
    raise ValueError(f"--data_dir: {data_dir} is not a directory")
  edge_popup.validate_config(_CONFIG.value)
  for split in ("test", "train") if _DATASET.value != "synthetic" else ():
    data_lib.load_dataset(_DATASET.value, split, data_dir)  # bad files: fail, nothing written
  files.check_state_file(os.path.join(_OUT_DIR.value, "run.json"), _OVERWRITE.value)
  files.check_writable(_OUT_DIR.value)  # before any work
  checkpoints.check_restorable(os.path.join(_OUT_DIR.value, "checkpoints"))
  rows = edge_popup.run_experiment(_CONFIG.value, _OUT_DIR.value, dataset=_DATASET.value,
                                   data_dir=data_dir, overwrite=_OVERWRITE.value,
                                   log_every_seconds=_LOG_EVERY.value)
  for t in tables.final_accuracy_table(rows):
    logging.info("%-6s %-6s keep %.3f  remaining %9d  test accuracy %.4f", t["arch"],
                 t["variant"], t["keep_fraction"], t["remaining_params"], t["mean"])
  logging.info("wrote %s", os.path.join(_OUT_DIR.value, "results.jsonl"))


if __name__ == "__main__":
  run_flags.run(main, _CONFIG)
