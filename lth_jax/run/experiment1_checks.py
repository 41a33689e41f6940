"""Experiment 1's configuration checks: ``validate_config`` names the bad field.

Every field of ``lth_jax/configs/experiment1.py`` is required; ``common.ConfigError(field,
why)`` says ``--config.<field>: <why>``, the entry point's one error line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections

import math

from lth_jax import _checks
from lth_jax import data as data_lib
from lth_jax import models
from lth_jax import objectives
from lth_jax import random_net as rn
from lth_jax.configs import experiment1 as presets
from lth_jax.constructions import lplus1
from lth_jax.run.common import ConfigError

__all__ = ["VARIANTS", "names", "validate_config"]

VARIANTS = ("direct", "network", "lplus1")


def names(x) -> tuple[str, ...]:
  """A tuple of names from a config field: ``("a", "b")``, ``"a,b"`` or ``("a,b",)`` (the
  last is what ``--config.variants=a,b`` parses to)."""
  items = [x] if isinstance(x, str) else list(x)
  return tuple(p.strip().strip("'\"") for item in items for p in str(item).split(",")
               if p.strip().strip("'\""))


def _check_present(have, want, prefix: str = "") -> None:
  """Every field (and group) of the ``want`` preset is in ``have``."""
  for name, value in want.items():
    if name not in have:
      raise ConfigError(prefix + name, "missing (every field of "
                        "lth_jax/configs/experiment1.py is required)")
    if isinstance(value, ml_collections.ConfigDict):
      if not isinstance(have[name], (ml_collections.ConfigDict, dict)):
        raise ConfigError(prefix + name, "must be a group of fields")
      _check_present(have[name], value, prefix + name + ".")


def _check_choices(config) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """epsilon, variants and objectives; returns (variants, objectives)."""
  eps = config.epsilon
  if not isinstance(eps, (int, float)) or not 0 < eps < 1:
    raise ConfigError("epsilon", f"must be in (0, 1), got {eps!r}")
  variants = names(config.variants)
  if not variants or any(v not in VARIANTS for v in variants) or len(set(variants)) != len(variants):
    raise ConfigError("variants", f"must be distinct names from {VARIANTS}, got {variants}")
  chosen = names(config.objectives)
  if (not chosen or any(o not in objectives.OBJECTIVES for o in chosen)
      or len(set(chosen)) != len(chosen)):
    raise ConfigError("objectives",
                      f"must be distinct names from {tuple(objectives.OBJECTIVES)}, got {chosen}")
  return variants, chosen


def _check_data(config) -> None:
  """dataset, download, download_url, data_dir, test_limit, eval_batch_size."""
  if str(config.dataset).lower().replace("-", "_") not in data_lib.DATASET_NAMES:
    raise ConfigError("dataset", f"must be one of {data_lib.DATASET_NAMES}, got "
                      f"{config.dataset!r}")
  if not isinstance(config.download, bool):
    raise ConfigError("download", f"must be true or false, got {config.download!r}")
  if config.download:
    if config.dataset == "synthetic":
      raise ConfigError("download", "the synthetic dataset is generated: nothing to download")
    if not config.data_dir:
      raise ConfigError("download", "needs data_dir: the directory to download the IDX "
                        "files into")
  if config.download_url and not str(config.download_url).startswith(("http://", "https://")):
    raise ConfigError("download_url", f"must be an http(s) URL, got {config.download_url!r}")
  data_dir = os.path.expanduser(config.data_dir) if config.data_dir else ""
  # With download, a missing data_dir is created; an existing non-directory never works.
  if data_dir and not os.path.isdir(data_dir) and (not config.download
                                                   or os.path.exists(data_dir)):
    raise ConfigError("data_dir", f"{config.data_dir} is not a directory")
  if config.dataset in ("mnist", "kmnist") and not config.data_dir:
    raise ConfigError("data_dir", f"dataset {config.dataset!r} needs a data_dir with its IDX "
                      "files (add --download to fetch them into it)")
  if not isinstance(config.test_limit, int) or config.test_limit < 0:
    raise ConfigError("test_limit", f"must be an int >= 0, got {config.test_limit!r}")
  if not isinstance(config.eval_batch_size, int) or config.eval_batch_size < 1:
    raise ConfigError("eval_batch_size", f"must be a positive int, got {config.eval_batch_size!r}")


def _check_target(t, variants: Sequence[str]) -> None:
  """The ``target`` group: an npz file, or a model to train."""
  if t.npz_layout not in ("torch", "jax"):  # also unused: a typo either way
    raise ConfigError("target.npz_layout", f"must be 'torch' or 'jax', got {t.npz_layout!r}")
  if t.npz:
    if not os.path.isfile(os.path.expanduser(t.npz)):
      raise ConfigError("target.npz", f"{t.npz} is not a file")
    return
  if not isinstance(t.use_bias, bool):
    raise ConfigError("target.use_bias", f"must be True or False, got {t.use_bias!r}")
  if t.use_bias and "direct" in variants:
    raise ConfigError("variants", "a target with biases (target.use_bias) runs the network "
                      "variant only: the direct variant builds no biases")
  if t.model not in ("fc2", "fc4", "lenet5", "mlp"):
    raise ConfigError("target.model", f"must be fc2, fc4, lenet5 or mlp, got {t.model!r}")
  if t.model == "lenet5" and "lplus1" in variants:
    raise ConfigError("variants", "the lplus1 variant is for MLP targets only; run lenet5 "
                      "with variants direct and network")
  if t.model == "mlp" and (not _checks.is_int_seq(t.widths) or not t.widths
                           or min(t.widths) < 1 or t.widths[-1] != data_lib.NUM_CLASSES):
    raise ConfigError("target.widths", "must be positive ints ending in "
                      f"{data_lib.NUM_CLASSES}, got {t.widths!r}")
  for field in ("epochs", "batch_size"):
    if not isinstance(t[field], int) or t[field] < 1:
      raise ConfigError(f"target.{field}", f"must be a positive int, got {t[field]!r}")
  if not t.learning_rate > 0:
    raise ConfigError("target.learning_rate", f"must be > 0, got {t.learning_rate!r}")


def _check_sizes(config, variants: Sequence[str], objective_names: Sequence[str]) -> None:
  """direct.copies, the network group and solver.block_keys."""
  max_n = min(objectives.objective_max_n(o) for o in objective_names)
  if "direct" in variants:
    n = config.direct.copies
    if not isinstance(n, int) or not 1 <= n <= max_n:
      raise ConfigError("direct.copies", f"must be an int in [1, {max_n}] "
                        f"(the objectives' maximum instance size), got {n!r}")
  if "network" in variants:
    nc = config.network
    if not _checks.is_int_seq(nc.copies) or not nc.copies or min(nc.copies) < 1:
      raise ConfigError("network.copies", f"must be positive ints, got {nc.copies!r}")
    caps = (nc.max_half,) if isinstance(nc.max_half, int) else nc.max_half
    if not _checks.is_int_seq(caps) or not caps or min(caps) < 0:
      raise ConfigError("network.max_half", "must be ints >= 0 (0 = default_max_half), one "
                        f"for every layer or one per layer, got {nc.max_half!r}")
    if max(caps) > max_n:
      raise ConfigError("network.max_half", f"must be <= {max_n} (the "
                        f"objectives' maximum instance size), got {nc.max_half!r}")
    if nc.distribution not in rn.DISTRIBUTIONS:
      raise ConfigError("network.distribution", f"must be one of {rn.DISTRIBUTIONS}, got "
                        f"{nc.distribution!r}")
    if not isinstance(nc.dense_check_batch, int) or nc.dense_check_batch < 0:
      raise ConfigError("network.dense_check_batch", f"must be an int >= 0, got "
                        f"{nc.dense_check_batch!r}")
  if "lplus1" in variants:
    _check_lplus1(config.lplus1, max_n)
    _check_lplus1_size(config)
  if not isinstance(config.solver.block_keys, int) or config.solver.block_keys < 1:
    raise ConfigError("solver.block_keys", f"must be a positive int, got "
                      f"{config.solver.block_keys!r}")


def _check_lplus1(lc, max_n: int) -> None:
  if not isinstance(lc.copies, int) or lc.copies < 1:
    raise ConfigError("lplus1.copies", f"must be a positive int, got {lc.copies!r}")
  if not isinstance(lc.max_half, int) or not 0 <= lc.max_half <= max_n:
    raise ConfigError("lplus1.max_half", f"must be an int in [0, {max_n}] (0 = "
                      f"default_max_half), got {lc.max_half!r}")
  if lc.distribution not in rn.DISTRIBUTIONS:
    raise ConfigError("lplus1.distribution", f"must be one of {rn.DISTRIBUTIONS}, got "
                      f"{lc.distribution!r}")
  for field in ("dense_check_batch", "max_random_params"):
    if not isinstance(lc[field], int) or lc[field] < 0:
      raise ConfigError(f"lplus1.{field}", f"must be an int >= 0, got {lc[field]!r}")


def lplus1_size_error(sizes, copies: int, limit: int) -> str | None:
  """Why ``lplus1`` at ``copies`` is refused for MLP ``sizes`` (None: it is not): its
  random network (``lplus1.num_params``, growing like copies^2) is over ``limit``."""
  size = lplus1.num_params(tuple(zip(sizes[:-1], sizes[1:])), copies)
  if size <= limit:
    return None
  return (f"{copies} copies make a depth-L+1 random network of {size:.3g} parameters for "
          f"layer sizes {list(sizes)} (over lplus1.max_random_params = {limit:.3g}: "
          f"{4 * size / 2**30:.1f} GiB of float32 and hours of solving on 2 cores); use "
          "fewer copies or a smaller target (the smoke preset's MLP)")


def _check_lplus1_size(config) -> None:
  """Refuses a too large lplus1 network before any training (trained MLP targets; an npz
  target is checked once loaded)."""
  t = config.target
  if t.npz or t.model not in ("fc2", "fc4", "mlp"):
    return
  widths = tuple(t.widths) if t.model == "mlp" else tuple(models.MODELS[t.model].widths)
  sizes = (math.prod(data_lib.IMAGE_SHAPE),) + widths
  why = lplus1_size_error(sizes, config.lplus1.copies, config.lplus1.max_random_params)
  if why:
    raise ConfigError("lplus1.copies", why)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` (naming the field) for values the experiment cannot run."""
  _check_present(config, presets.get_config("smoke"))
  variants, chosen = _check_choices(config)
  _check_data(config)
  _check_target(config.target, variants)
  _check_sizes(config, variants, chosen)
