"""What every driver shares: the config error, field checkers, device set-up, peak RSS.

A driver's ``validate_config`` is a list of checker calls; each checker raises
``ConfigError(field, why)`` for the first bad value, so every entry point reports it as the
same one line (``error: --config.<field>: <why>``, see ``lth_jax/run/flags.py``).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax

from lth_jax import _checks
from lth_jax import sharding


class ConfigError(ValueError):
  """A bad config value. ``field`` is its dotted path (``sweep.widths``; ``""``: the
  ``--config`` flag itself), ``why`` what is wrong; ``str`` is ``--config.<field>: <why>``,
  the flag that sets it and the reason."""

  def __init__(self, field: str, why: str):
    self.field, self.why = field, why
    super().__init__(f"--config{'.' + field if field else ''}: {why}")


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def int_in(field: str, value: Any, low: int, high: int | None = None, note: str = "") -> int:
  """An int in ``[low, high]`` (``high=None``: no upper end); ``note`` explains a special
  value, e.g. ``"0: skip"``."""
  if not _checks.is_int(value) or value < low or (high is not None and value > high):
    where = f">= {low}" if high is None else f"in [{low}, {high}]"
    if low == 1 and high is None:
      where = "positive"
    raise ConfigError(field, f"must be {where}{f' ({note})' if note else ''}, got {value!r}")
  return int(value)


def float_in(field: str, value: Any, low: float, high: float | None = None) -> float:
  """A number in the open interval ``(low, high)`` (``high=None``: just ``> low``)."""
  if not _is_number(value) or not (value > low and (high is None or value < high)):
    where = "positive" if (low == 0 and high is None) else (
        f"> {low:g}" if high is None else f"in ({low:g}, {high:g})")
    raise ConfigError(field, f"must be {where}, got {value!r}")
  return float(value)


def int_tuple(field: str, values: Any, what: str, *, distinct: bool = True,
              nonempty: bool = True) -> tuple[int, ...]:
  """Positive ints (``what``: their name in the message, e.g. ``"widths"``), distinct if
  asked; the tuple."""
  ints = tuple(values) if isinstance(values, (list, tuple)) else (values,)
  if nonempty and not ints:
    raise ConfigError(field, "empty")
  if any(not _checks.is_int(v) or v < 1 for v in ints):
    raise ConfigError(field, f"{what} must be positive integers, got {ints}")
  if distinct and len(set(ints)) != len(ints):
    raise ConfigError(field, f"{what} must be distinct, got {ints}")
  return ints


def one_of(field: str, value: Any, names: Sequence[str], what: str = "") -> str:
  """One of ``names``; with ``what`` the message reads ``unknown <what> 'x'; choose from
  (...)``, else ``must be one of (...), got 'x'``."""
  if value not in names:
    raise ConfigError(field, f"unknown {what} {value!r}; choose from {tuple(names)}" if what
                      else f"must be one of {tuple(names)}, got {value!r}")
  return value


def distinct_names(field: str, values: Any, names: Sequence[str], what: str) -> tuple[str, ...]:
  """Distinct members of ``names`` (may be empty)."""
  values = tuple(values)
  for v in values:
    one_of(field, v, names, what)
  if len(set(values)) != len(values):
    raise ConfigError(field, f"{what}s must be distinct, got {values}")
  return values


def existing_file(field: str, path: str) -> str:
  """``path`` (``~`` expanded) names a file."""
  full = os.path.expanduser(path)
  if not os.path.isfile(full):
    raise ConfigError(field, f"no such file: {path}")
  return full


# --------------------------------------------------------------------------------------
# Devices: config.devices = {shard, distributed, coordinator_address, num_processes,
# process_id} (every field optional).
# --------------------------------------------------------------------------------------


class Devices(NamedTuple):
  shard: bool             # split the work over every device (a 1-D mesh)
  distributed: bool       # jax.distributed.initialize() first (multi-host; implies shard)
  init_kwargs: dict       # its arguments given in the config (others: from the cluster)


def device_settings(config) -> Devices:
  """``config.devices`` (absent: one process, unsharded), checked."""
  dev = config.get("devices", None) or {}
  num_proc, proc_id = dev.get("num_processes", 0), dev.get("process_id", -1)
  int_in("devices.num_processes", num_proc, 0, note="0: from the environment")
  if not _checks.is_int(proc_id) or proc_id < -1 or (num_proc and proc_id >= num_proc):
    raise ConfigError("devices.process_id", "must be -1 (from the environment) or in "
                      f"[0, num_processes), got {proc_id}")
  multi = bool(dev.get("distributed", False))
  kwargs = {}
  if dev.get("coordinator_address", ""):
    kwargs["coordinator_address"] = dev["coordinator_address"]
  if num_proc > 0:
    kwargs["num_processes"] = int(num_proc)
  if proc_id >= 0:
    kwargs["process_id"] = int(proc_id)
  return Devices(bool(dev.get("shard", False)) or multi, multi, kwargs)


def set_up_devices(devices: Devices) -> bool:
  """Initializes ``jax.distributed`` once per process if asked (call it before anything
  touches a device); its failure is a ``devices.distributed`` ConfigError. Returns whether
  this process is the primary one (process 0: it prepares the output and writes)."""
  if devices.distributed and not getattr(jax.distributed, "is_initialized", lambda: False)():
    try:
      sharding.initialize_distributed(True, **devices.init_kwargs)
    except (ValueError, RuntimeError) as e:
      msg = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise ConfigError("devices.distributed", f"jax.distributed.initialize failed: {msg} "
                        "(outside a managed cluster set config.devices.coordinator_address, "
                        "num_processes and process_id)") from None
  return sharding.is_primary()


def peak_rss_mb() -> float:
  """Peak resident set size of this process so far (MB; Linux reports KB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


__all__ = ["ConfigError", "int_in", "float_in", "int_tuple", "one_of", "distinct_names",
           "existing_file", "Devices", "device_settings", "set_up_devices", "peak_rss_mb"]
