"""What the solver benchmarks share: their common flags, the instance range and the JSON
output."""

from __future__ import annotations

import json
import os
import platform
import sys

from absl import flags, logging

LOW, HIGH = -0.464, 0.541  # the trained FC2's weight range (SPEC section 5)


def define_flags(*, batch: int, batch_help: str, repeats: int, check: int, check_help: str,
                 epsilon_help: str, out: str) -> None:
  """The flags every solver benchmark has (with its own defaults)."""
  flags.DEFINE_list("n", ["16", "21", "24"], "Instance sizes (coefficients per target).")
  flags.DEFINE_integer("batch", batch, batch_help)
  flags.DEFINE_integer("repeats", repeats, "Timed repetitions (best is reported).")
  flags.DEFINE_integer("check", check, check_help)
  flags.DEFINE_float("epsilon", 0.01, epsilon_help)
  flags.DEFINE_string("key_format", None, "int64 / int32x2 (default: per backend).")
  flags.DEFINE_string("out", out, "JSON output path.")


def write_json(path: str, machine: dict, **payload) -> None:
  """``{"machine": platform, cpus, jax backend and version, ...; "command": ...}`` plus
  ``payload``, written atomically to ``path``."""
  import jax  # pylint: disable=g-import-not-at-top  (after absl parsed the flags)
  from lth_jax import files  # pylint: disable=g-import-not-at-top

  machine = {"platform": platform.platform(), "cpus": os.cpu_count(),
             "backend": jax.default_backend(), "jax": jax.__version__, **machine}
  out = {"machine": machine, "command": " ".join(sys.argv), **payload}
  files.atomic_write_text(path, json.dumps(out, indent=2))
  logging.info("wrote %s", path)
