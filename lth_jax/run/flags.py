"""The one config-flag loader and the one failure line of every entry point.

Run stage (``experiments/*.py`` and ``benchmarks/*.py`` import it; nothing in lth_jax
does). An entry point declares its config flag, its own flags, a ``main`` and runs it::

  _CONFIG = run_flags.ConfigFlag(sweep_configs, "default")   # lth_jax/configs/sweep.py
  _OUT_DIR = flags.DEFINE_string("out_dir", None, "...")

  def main(argv):
    del argv  # stray arguments were refused already
    run_sweep.run_experiment(_CONFIG.value, _OUT_DIR.value)

  if __name__ == "__main__":
    run_flags.run(main, _CONFIG)      # without a config: run_flags.run(main)

``--config`` takes a preset name of the config module (``--config=quick``) or
``path/to/config.py[:preset]``; ``--config.<field>=value`` overrides a field
(ml_collections parses the value by the field's type). ``preset_flag="preset"`` also
accepts ``--preset=<name>`` (edge-popup's spelling).

Failure contract (issue 12): every failure ends the process with ONE line on stderr,
``error: <what>: <why>``, naming the flag, field or file, and no traceback:

* exit status 2 -- bad input: an unknown flag, field or preset, a stray argument, a bad flag
  value, a config field the driver refuses (``ConfigError``/``ValueError``, including the
  data module's ``DataError``), an output directory that may not be used
  (``FileExistsError``), a missing or unreadable file (``OSError``, including
  ``DownloadError``), a file that is not what it claims (``ValueError`` from
  ``files.load_npz``/``load_npy``, ``data.read_idx``: never unpickled);
* exit status 1 -- anything else (a bug or a numerical failure), as
  ``error: <ExceptionType>: <message> (...)``.

``--debug`` (or the environment variable ``LTH_DEBUG=1``) re-raises instead, with the full
traceback.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from absl import app, flags
from ml_collections import config_dict
from ml_collections.config_flags import config_flags  # ConfigFileFlagParser: not re-exported
from ml_collections.config_flags import config_path

from lth_jax.run.common import ConfigError

BAD_INPUT, FAILURE = 2, 1  # exit statuses
DEBUG_ENV = "LTH_DEBUG"
_DEBUG = flags.DEFINE_bool("debug", False,
                           "On an error, raise with the full traceback instead of one line "
                           f"(also: {DEBUG_ENV}=1).")


def _debug(argv: Sequence[str] = ()) -> bool:
  """Whether a traceback was asked for (readable before absl parsed the flags)."""
  if os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes"):
    return True
  return _DEBUG.value if flags.FLAGS.is_parsed() else "--debug" in argv


def error_line(e: BaseException) -> str:
  """``<what>: <why>`` of an error, one line; a legacy ``config.<field>: ...`` message names
  its flag (``--config.<field>: ...``), an ``OSError`` its file."""
  if isinstance(e, OSError) and e.strerror and not isinstance(e, FileExistsError):
    msg = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
  else:
    msg = str(e)
  lines = [" ".join(line.split()) for line in msg.splitlines() if line.strip()]
  msg = lines[0] if lines else type(e).__name__
  if msg.startswith(("config.", "config:")):
    msg = "--" + msg
  return msg


def fail(message: str, status: int = BAD_INPUT):
  """Ends the process: ``error: <message>`` on stderr, exit ``status``."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(status)


def check_config_args(argv: Sequence[str], default_config: str) -> None:
  """Checks ``argv``'s ``--config`` flags before absl defines and parses them.

  ml_collections loads ``--config=file.py:preset`` and resolves every ``--config.<field>``
  override while the flag is defined or parsed, and reports an unknown preset or field with
  a traceback. This raises ``ConfigError`` instead (field ``""`` for the ``--config`` flag
  itself). Values are left to ml_collections and the driver's ``validate_config``.

  Args:
    argv: the command line, program name first.
    default_config: the ``--config`` value used when ``argv`` gives none.
  """
  try:
    argv = flags.FLAGS.read_flags_from_files(list(argv), force_gnu=False)  # --flagfile=
  except flags.Error:
    return  # absl reports it
  spec, overrides, args = default_config, [], list(argv[1:])
  for i, arg in enumerate(args):
    if arg == "--":
      break
    if re.fullmatch(r"--?config(=.*)?", arg):  # --config=x or --config x
      spec = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else spec)
    elif re.match(r"--?(no)?config\.", arg):  # the pattern ml_collections matches
      overrides.append(arg.split("=", 1)[0].split(".", 1)[1])
  try:
    config = config_flags.ConfigFileFlagParser("config").parse(spec)
    config.keys()  # a file that failed to load comes back as a placeholder that raises
  except OSError as e:  # the loader's last line says why: "[Errno 2] No such file ..."
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise ConfigError("", f"cannot load {spec!r}: {lines[-1] if lines else e}") from None
  except (TypeError, ValueError) as e:
    # ml_collections re-raises get_config's error with a traceback text; report the original.
    raise ConfigError("", str(e.__context__ or e)) from None
  for path in overrides:
    _check_override(config, path)


def _check_override(config: config_dict.ConfigDict, path: str) -> None:
  """Raises ConfigError(path) unless ``--config.<path>`` names a field of ``config``."""
  try:
    config_path.get_type(path, config)
    return
  except (AttributeError, KeyError, IndexError, TypeError, ValueError):
    pass
  node, where, why = config, "config", f"cannot override {path!r}"
  for part in re.sub(r"\[[^\]]*\]", "", path).split("."):
    if not isinstance(node, config_dict.ConfigDict):
      why = f"{where} is a value ({type(node).__name__}), not a group of fields"
      break
    if part not in node:
      why = f"unknown field {part!r} in {where} (fields: {', '.join(node.keys())})"
      break
    node, where = node[part], f"{where}.{part}"
  raise ConfigError(path, why)


class ConfigFlag:
  """``--config`` (a preset of ``configs`` or ``path/to/config.py[:preset]``) with its
  ``--config.<field>`` overrides. Defined by ``run`` (ml_collections reads the command line
  while the flag is defined, so it is checked first); ``value`` is the loaded config."""

  def __init__(self, configs: ModuleType, default_preset: str,
               preset_flag: str | None = None):
    self.file = os.path.splitext(configs.__file__)[0] + ".py"
    self.presets = tuple(configs.PRESETS)
    self.default = f"{self.file}:{default_preset}"
    self.preset_flag = preset_flag
    if preset_flag:  # only for --help and parsing: run() turns it into --config
      flags.DEFINE_enum(preset_flag, default_preset, self.presets,
                        "Configuration preset (same as --config=<preset>).")
    self._holder = None

  @property
  def value(self) -> config_dict.ConfigDict:
    return self._holder.value

  def _expand(self, spec: str) -> str:
    """A bare preset name -> ``<config file>:<preset>``."""
    if ":" in spec or spec.endswith(".py") or os.path.isfile(spec):
      return spec
    return f"{self.file}:{spec}"

  def normalize(self, argv: Sequence[str]) -> list[str]:
    """``argv`` with bare preset names expanded (and ``--<preset_flag>`` as ``--config``)."""
    out, args = list(argv[:1]), list(argv[1:])
    for i, arg in enumerate(args):
      if arg == "--":
        out += args[i:]
        break
      if arg.startswith(("--config=", "-config=")):
        arg = arg.split("=", 1)[0] + "=" + self._expand(arg.split("=", 1)[1])
      elif i and re.fullmatch(r"--?config", args[i - 1]):
        arg = self._expand(arg)
      out.append(arg)
    if self.preset_flag and not any(re.match(r"--?config(=|$)", a) for a in out):
      for i, arg in enumerate(out[1:], 1):
        m = re.fullmatch(rf"--?{self.preset_flag}=(.*)", arg)
        given = m.group(1) if m else (out[i + 1] if re.fullmatch(
            rf"--?{self.preset_flag}", arg) and i + 1 < len(out) else None)
        if given is not None:
          out.insert(1, f"--config={self._expand(given)}")
          break
    return out

  def define(self, argv: Sequence[str]) -> list[str]:
    """Checks the ``--config`` arguments of ``argv`` (``ConfigError``), defines the flag;
    returns the normalized ``argv`` to parse."""
    argv = self.normalize(argv)
    check_config_args(argv, self.default)
    self._holder = config_flags.DEFINE_config_file(
        "config", self.default,
        f"A preset ({', '.join(self.presets)}) or path/to/config.py[:preset]; override "
        "fields with --config.<field>=...", sys_argv=argv)
    return argv


def _flag_error(e: flags.Error) -> str:
  """absl's flag error as ``--flag: why``."""
  if isinstance(e, flags.UnrecognizedFlagError):
    return f"--{e.flagname}: unknown flag"
  msg = " ".join(str(e).split())
  m = re.search(r"Flag (--\S+) must have a value other than None", msg)
  if m:  # a required flag that was not given
    return f"{m.group(1)}: required"
  m = re.match(r"flags (\w+=.*?): (.*)$", msg)  # a validator of several flags
  if m:
    names = re.findall(r"(\w+)=", m.group(1))
    return f"--{'/--'.join(names)}: {m.group(2)} (got {m.group(1)})"
  m = re.match(r"flag (--[^=\s]+)=(.*?): (.*)$", msg)
  return f"{m.group(1)}: {m.group(3)} (got {m.group(2)})" if m else msg


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    fail(_flag_error(e))
  if len(rest) > 1:
    fail(f"unexpected arguments: {' '.join(rest[1:])}")
  return rest


def _guarded(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
  """``main`` whose exceptions end in one line (see the module docstring)."""
  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except  (SystemExit passes)
      if _debug():
        raise
      if isinstance(e, (ValueError, OSError, app.UsageError)):  # ConfigError, DataError, ...
        fail(error_line(e))
      fail(f"{type(e).__name__}: {error_line(e)} (an internal error; --debug or "
           f"{DEBUG_ENV}=1 shows the traceback)", FAILURE)
  return wrapped


def run(main: Callable[[list[str]], object], config: ConfigFlag | None = None) -> None:
  """``absl.app.run(main)`` under the failure contract: ``config`` is checked and defined
  first, flag errors and stray arguments are one line, and so are ``main``'s errors."""
  argv = list(sys.argv)
  if config is not None:
    try:
      argv = config.define(argv)
    except ValueError as e:
      if _debug(argv):
        raise
      fail(error_line(e))
  app.run(_guarded(main), argv=argv, flags_parser=_parse_flags)
