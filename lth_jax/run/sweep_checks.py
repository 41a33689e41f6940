"""The sweep's config checks (``validate_config``): every field of
``lth_jax/configs/sweep.py``'s config, before anything runs or any file is written. Bad
input raises ``ConfigError`` naming the flag (``--config.<field>: <why>``)."""

from __future__ import annotations

from lth_jax import construction
from lth_jax import lueker
from lth_jax import random_net as rn
from lth_jax import subset_sum
from lth_jax import targets as targets_lib
from lth_jax.run import common
from lth_jax.run.common import ConfigError

DATASETS = ("fashion_mnist", "mnist", "kmnist", "synthetic")

# --------------------------------------------------------------------------------------
# The config.
# --------------------------------------------------------------------------------------


def _check_sweep(sw) -> None:
  common.distinct_names("sweep.methods", sw.methods, construction.METHODS, "method")
  for field in ("widths", "direct_widths"):
    common.int_tuple(f"sweep.{field}", sw[field], "widths", nonempty=bool(sw.methods))
  if "direct" in sw.methods and max(sw.direct_widths) > subset_sum.MAX_N:
    raise ConfigError("sweep.direct_widths", f"at most {subset_sum.MAX_N} coefficients per "
                      f"weight (the solver's MAX_N), got {max(sw.direct_widths)}")
  common.float_in("sweep.epsilon", sw.epsilon, 0.0, 1.0)
  epsilons = tuple(sw.epsilons) if isinstance(sw.epsilons, (list, tuple)) else (sw.epsilons,)
  if not epsilons or len(set(epsilons)) != len(epsilons):
    raise ConfigError("sweep.epsilons", f"must be distinct values in (0, 1), got {epsilons}")
  for eps in epsilons:
    common.float_in("sweep.epsilons", eps, 0.0, 1.0)
  common.int_in("sweep.num_seeds", sw.num_seeds, 1)
  if sw.num_points < 1 or sw.ascent_steps < 0 or sw.eval_batch < 1:
    raise ConfigError("sweep.num_points",
                      "num_points and eval_batch must be positive, ascent_steps >= 0")
  common.int_in("sweep.max_half", sw.max_half, 0, subset_sum.MAX_N, "0: default")
  common.one_of("sweep.distribution", sw.distribution, rn.DISTRIBUTIONS)
  common.int_in("sweep.xla_opt_level", sw.xla_opt_level, -1, 3, "-1: XLA default")


def _methods_take_biases(config, path) -> None:
  """ValueError unless every swept method builds biases (a biased npz target)."""
  plain = [m for m in config.sweep.methods if not construction.takes_biases(m)]
  if plain:
    raise ValueError(f"{path} has non-zero biases; methods {plain} build none (use 'bias')")


def _check_targets_and_data(config) -> None:
  t = config.targets
  for field in ("sizes", "permutation_sizes"):
    for sizes in t[field]:
      if len(sizes) < 2 or any(not isinstance(d, int) or d < 1 for d in sizes):
        raise ConfigError(f"targets.{field}",
                          f"each target needs >= 2 positive layer sizes, got {sizes}")
  common.float_in("targets.spectral_norm", t.spectral_norm, 0.0)
  if not t.bias_scale >= 0:
    raise ConfigError("targets.bias_scale", f"must be >= 0, got {t.bias_scale}")
  common.one_of("targets.npz_layout", t.npz_layout, ("torch", "jax"))
  if t.npz:  # read now (it is small): a malformed file is a config error, not a crash
    path = common.existing_file("targets.npz", t.npz)
    try:
      layers = targets_lib.load_npz_target(path, t.npz_layout)
      if targets_lib.has_biases(layers):
        _methods_take_biases(config, path)
    except ValueError as e:
      raise ConfigError("targets.npz", str(e)) from None
  if config.data.name:
    common.one_of("data.name", config.data.name, DATASETS + ("",), "dataset")
    common.int_in("data.limit", config.data.limit, 1)


def _check_lueker(lu) -> None:
  common.int_in("lueker.trials", lu.trials, 0, note="0: skip")
  if lu.trials:
    common.float_in("lueker.epsilon", lu.epsilon, 0.0, 1.0)
    if not 0.0 < lu.spacing < lu.epsilon:
      raise ConfigError("lueker.spacing", f"must be in (0, lueker.epsilon), got {lu.spacing}")
  # Sizes are checked even when the check is skipped: a bad one is a typo either way.
  # Beyond the solver's size the check still runs (an exact reduction), but every extra
  # coefficient doubles its cost: n = 60 would start a job of years.
  for field, kind in (("uniform_sizes", "uniform"), ("product_sizes", "products")):
    top = lueker.max_size(kind)
    why = (f"the solver's MAX_N = {subset_sum.MAX_N}" if kind == "uniform" else
           f"the expected largest sign half must fit the solver's MAX_N = {subset_sum.MAX_N}")
    sizes = common.int_tuple(f"lueker.{field}", lu[field], "sizes", distinct=False,
                             nonempty=False)
    if any(n > top for n in sizes):
      raise ConfigError(f"lueker.{field}", f"sizes at most {top} ({why}), got {sizes}")


def validate_config(config) -> None:
  """Raises ``ConfigError`` (``--config.<field>: <why>``) for the first bad field."""
  sw = config.sweep
  _check_sweep(sw)
  _check_targets_and_data(config)
  _check_lueker(config.lueker)
  common.device_settings(config)
  if not sw.methods and not config.lueker.trials:
    raise ConfigError("sweep.methods", "nothing to do: no methods and lueker.trials = 0")
  if (sw.methods and not config.targets.sizes and not config.targets.permutation_sizes
      and not config.targets.npz and not config.data.name):
    raise ConfigError("targets.sizes", "no targets: give sizes, an npz file or a dataset")
