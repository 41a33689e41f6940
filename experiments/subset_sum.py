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

Writes results.jsonl (one row per variant x objective) and table.txt to --out_dir (never
into a non-empty one without --overwrite). Trained targets are cached under
config.target.checkpoint_dir (default ~/.cache/lth_jax/targets) and reused. Nothing is
downloaded without --download. See lth_jax/configs/experiment1.py.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import lth_jax
from lth_jax import data as data_lib
from lth_jax.run import experiment1
from lth_jax.run import experiment1_checks
from lth_jax.configs import experiment1 as experiment1_configs

_CONFIG_FILE = os.path.join(os.path.dirname(lth_jax.__file__), "configs", "experiment1.py")
_CONFIG = None  # defined by _define_config_flag: ml_collections reads --config.<field>
                # overrides from sys.argv already when the flag is defined
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory (required).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the results in a non-empty --out_dir.")
_DATASET = flags.DEFINE_enum("dataset", None, ["fashion_mnist", "mnist", "kmnist", "synthetic"],
                             "Dataset (overrides config.dataset; mnist needs --data_dir).")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Directory of the dataset's IDX files (overrides config.data_dir).")
_DOWNLOAD = flags.DEFINE_bool(
    "download", False, "Download the dataset's standard IDX files into --data_dir when "
    "missing (config.download; mirror: config.download_url). Off: nothing is downloaded.")


def _fail(message: str) -> None:
  """One line on stderr, exit status 1 (absl's own format for flag errors)."""
  sys.stderr.write(f"FATAL Flags parsing error: {' '.join(str(message).split())}\n")
  sys.exit(1)


def _define_config_flag(argv):
  global _CONFIG
  try:
    _CONFIG = config_flags.DEFINE_config_file(
        "config", f"{_CONFIG_FILE}:smoke",
        f"Config file[:preset], or just a preset {experiment1_configs.PRESETS}; "
        "--config.<field>=... overrides fields.")
  except (AttributeError, KeyError) as e:  # --config.<unknown field>=...
    field = str(e).strip("\"'")
    _fail(f"{_config_arg(argv, field)}: the config has no field {field!r}")


def _config_arg(argv, field):
  """The --config.<path> argument whose last path component is ``field``."""
  for a in argv:
    name = a.split("=", 1)[0].lstrip("-")
    if name.startswith("config.") and name.split(".")[-1] == field:
      return a
  return f"--config...{field}"


def _parse_flags(argv):
  """Parses flags and validates the config: every problem is a one-line error naming the
  flag (no traceback, no usage dump)."""
  presets = experiment1_configs.PRESETS
  argv = [f"--config={_CONFIG_FILE}:{a.split('=', 1)[1]}"
          if a.startswith("--config=") and a.split("=", 1)[1] in presets else a for a in argv]
  try:
    rest = flags.FLAGS(argv)
    config = _CONFIG.value
    config.keys()  # a config file that failed to load raises here
  except flags.Error as e:
    _fail(str(e))
  except (AttributeError, KeyError) as e:  # --config.<unknown field>=...
    field = str(e).strip("\"'")
    _fail(f"{_config_arg(argv, field)}: the config has no field {field!r}")
  except Exception as e:  # pylint: disable=broad-except  (a bad --config file)
    path = flags.FLAGS["config"].config_filename
    if not os.path.isfile(path.split(":", 1)[0]):
      _fail(f"--config={path}: neither a preset {experiment1_configs.PRESETS} nor a config "
            "file[:preset]")
    _fail(f"--config={path}: {type(e).__name__}: {e}")
  if len(rest) > 1:
    _fail(f"unexpected arguments: {' '.join(rest[1:])}")
  if not _OUT_DIR.value:
    _fail("--out_dir is required")
  out_dir = os.path.expanduser(_OUT_DIR.value)
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not _OVERWRITE.value:
    _fail(f"--out_dir={_OUT_DIR.value} exists and is not empty: pass --overwrite to replace "
          "its results")
  if _DATASET.value:
    config.dataset = _DATASET.value
  if _DATA_DIR.value:
    config.data_dir = _DATA_DIR.value
  if _DOWNLOAD.value:
    config.download = True
  try:
    experiment1_checks.validate_config(config)
  except experiment1_checks.ConfigError as e:
    if e.field in ("dataset", "data_dir", "download") and (
        _DATASET.value or _DATA_DIR.value or _DOWNLOAD.value):
      _fail(f"--{e.field}: {e}")
    given = [a for a in argv if a.split("=", 1)[0].lstrip("-") == f"config.{e.field}"]
    _fail(f"{given[-1] if given else '--config.' + e.field}: {e}")
  return rest


def main(argv):
  del argv
  out_dir = os.path.expanduser(_OUT_DIR.value)
  try:
    experiment1.run_experiment1(_CONFIG.value, out_dir, overwrite=_OVERWRITE.value)
  except (data_lib.DownloadError, data_lib.DataError) as e:
    # Bad or unreachable data, not a bug: one line naming the URL or file, no traceback.
    sys.stderr.write(f"FATAL {type(e).__name__}: {' '.join(str(e).split())}\n")
    sys.exit(1)
  except (FileExistsError, FileNotFoundError, experiment1_checks.ConfigError) as e:
    raise app.UsageError(str(e)) from None
  logging.info("results in %s", os.path.abspath(out_dir))


if __name__ == "__main__":
  _define_config_flag(sys.argv)
  app.run(main, flags_parser=_parse_flags)
