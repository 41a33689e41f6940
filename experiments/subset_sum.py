"""Experiment 1: every weight of a trained target approximated by exact SubsetSum.

  python -m experiments.subset_sum --out_dir=/tmp/e1                 # "smoke" preset
  python -m experiments.subset_sum --config=fc2 --out_dir=runs/e1_fc2
  python -m experiments.subset_sum --config=lth_jax/configs/experiment1.py:fc4 \
      --config.variants=direct --out_dir=runs/e1_fc4
  python -m experiments.subset_sum --config=lenet5 --out_dir=runs/e1_lenet5   # direct only
  python -m experiments.subset_sum --config=fc2 --dataset=mnist --data_dir=~/mnist \
      --config.target.npz=fc2.npz --out_dir=runs/e1_mnist
  python -m experiments.subset_sum --config=fc2 --dataset=mnist --data_dir=~/mnist \
      --download --out_dir=runs/e1_mnist_trained     # fetches MNIST's IDX files if missing

Writes results.jsonl (one row per variant x objective), table.txt, then done.json to
--out_dir (never into a non-empty one without --overwrite; a killed run's directory is
refused as unfinished). Trained targets are cached under config.target.checkpoint_dir
(default ~/.cache/lth_jax/targets). Nothing is downloaded without --download. Bad input
ends in one line ``error: <what>: <why>`` (lth_jax/run/flags.py).
"""

import os

from absl import flags, logging

from lth_jax.configs import experiment1 as experiment1_configs
from lth_jax.run import experiment1
from lth_jax.run import flags as run_flags
from lth_jax.run.common import ConfigError

_CONFIG = run_flags.ConfigFlag(experiment1_configs, "smoke")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory (required).", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the results in a non-empty --out_dir.")
_DATASET = flags.DEFINE_enum("dataset", None, ["fashion_mnist", "mnist", "kmnist", "synthetic"],
                             "Dataset (overrides config.dataset; mnist needs --data_dir).")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Directory of the dataset's IDX files (overrides config.data_dir).")
_DOWNLOAD = flags.DEFINE_bool(
    "download", False, "Download the dataset's standard IDX files into --data_dir when "
    "missing (config.download; mirror: config.download_url). Off: nothing is downloaded.")


def main(argv):
  del argv  # run_flags.run refuses stray arguments
  config = _CONFIG.value
  given = {f: v for f, v in (("dataset", _DATASET.value), ("data_dir", _DATA_DIR.value),
                             ("download", _DOWNLOAD.value or None)) if v is not None}
  config.update(given)
  try:
    experiment1.run_experiment1(config, _OUT_DIR.value, overwrite=_OVERWRITE.value)
  except ConfigError as e:  # a field this command line set by its own flag: name that flag
    if e.field in given:
      raise ValueError(f"--{e.field}: {e.why}") from None
    raise
  logging.info("results in %s", os.path.abspath(os.path.expanduser(_OUT_DIR.value)))


if __name__ == "__main__":
  run_flags.run(main, _CONFIG)
