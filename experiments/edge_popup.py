"""Experiment 2: edge-popup on random redundant / wide networks vs trained dense baselines.

  python -m experiments.edge_popup --out_dir=/tmp/ep                      # "quick" preset
  python -m experiments.edge_popup --preset=paper --out_dir=runs/ep --config.epochs=30
  python -m experiments.edge_popup --dataset=mnist --data_dir=~/mnist --out_dir=runs/ep_mnist

Writes results.jsonl and edge_popup_{fc2,fc4,lenet5}.png to --out_dir; a killed run restarted
with the same command resumes from its last finished epoch. Progress lines (every
--log_every_seconds) give the whole run's percentage and ETA, over all of its sweeps. See
lth_jax/configs/edge_popup.py.
"""

import logging as std_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

from lth_jax.configs import edge_popup as edge_popup_configs
from lth_jax.report import tables
from lth_jax.run import edge_popup

_PRESET = flags.DEFINE_enum("preset", "quick", edge_popup_configs.PRESETS,
                            "Configuration preset; --config.<field>=... overrides its fields.")
_CONFIG = config_flags.DEFINE_config_dict("config", edge_popup_configs.get_config("quick"))
_DATASET = flags.DEFINE_enum("dataset", "fashion_mnist", ["fashion_mnist", "mnist", "synthetic"],
                             "Dataset (mnist needs --data_dir with the IDX files).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory of the dataset's IDX files.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out_dir.")
_LOG_EVERY = flags.DEFINE_float("log_every_seconds", 30.0,
                                "Seconds between progress lines (overall percentage and ETA).")


def _config():
  """The chosen preset with this command line's --config.<field> overrides applied."""
  if _PRESET.value == "quick":
    return _CONFIG.value
  config = edge_popup_configs.get_config(_PRESET.value)
  for path, value in config_flags.get_override_values(flags.FLAGS["config"]).items():
    node = config
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


class _QuietOrbax(std_logging.Filter):
  """Drops orbax-checkpoint's INFO chatter (several lines per saved epoch)."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def _usage_error(message: str):
  """One line on stderr and exit status 1 (app.UsageError would also print the full help)."""
  raise SystemExit(f"FATAL Usage error: {message}")


def main(argv):
  std_logging.getLogger("absl").addFilter(_QuietOrbax())
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  if _DATASET.value == "mnist" and not _DATA_DIR.value:
    _usage_error("--dataset=mnist needs --data_dir (a directory of MNIST IDX files)")
  data_dir = os.path.expanduser(_DATA_DIR.value) if _DATA_DIR.value else None
  if data_dir and not os.path.isdir(data_dir):
    _usage_error(f"--data_dir {data_dir} is not a directory")
  config = _config()
  try:
    edge_popup.validate_config(config)
  except ValueError as e:
    _usage_error(f"--{e}")
  try:
    rows = edge_popup.run_experiment(config, _OUT_DIR.value, dataset=_DATASET.value,
                                     data_dir=data_dir, overwrite=_OVERWRITE.value,
                                     log_every_seconds=_LOG_EVERY.value)
  except (FileExistsError, FileNotFoundError) as e:
    _usage_error(str(e))
  for t in tables.final_accuracy_table(rows):
    logging.info("%-6s %-6s keep %.3f  remaining %9d  test accuracy %.4f", t["arch"],
                 t["variant"], t["keep_fraction"], t["remaining_params"], t["mean"])
  logging.info("wrote %s", os.path.join(_OUT_DIR.value, "results.jsonl"))


if __name__ == "__main__":
  app.run(main)
