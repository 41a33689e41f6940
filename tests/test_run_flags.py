"""lth_jax/run/flags.py: the one config-flag loader (presets, files, overrides, checked
before ml_collections sees them) and the one failure line with its exit statuses."""

import errno
import pathlib

import pytest
from absl import flags

from lth_jax.run import flags as run_flags
from lth_jax import data as data_lib
from lth_jax.configs import edge_popup as edge_popup_configs
from lth_jax.configs import sweep as sweep_configs
from lth_jax.run.common import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEP_FILE = str(REPO / "lth_jax" / "configs" / "sweep.py")


def test_check_config_args_names_unknown_fields_and_presets():
  default = str(REPO / "lth_jax" / "configs" / "sweep.py") + ":default"
  check = lambda *args: run_flags.check_config_args(["prog", *args], default)
  check("--config.sweep.widths=(2,4)", "--noconfig.devices.shard", "--out_dir=x")  # known
  check("--config", default.replace(":default", ":quick"), "--config.lueker.trials=0")
  with pytest.raises(ConfigError, match=r"^--config\.sweep\.foo: unknown field 'foo' in "
                     r"config\.sweep \(fields: ascent_steps, .*direct_widths, "):
    check("--config.sweep.foo=1")
  with pytest.raises(ConfigError, match=r"^--config\.seed\.x: config\.seed is a value \(int\)"):
    check("--config.seed.x", "1")
  with pytest.raises(ConfigError, match=r"^--config: unknown preset 'nope' \(choose from "
                     + ", ".join(sweep_configs.PRESETS) + r"\)$"):
    check("--config=" + default.replace(":default", ":nope"))
  with pytest.raises(ConfigError, match=r"^--config: cannot load .*No such file"):
    check("--config=/no/such/config.py")
  # after "--" nothing is a flag
  check("--", "--config.sweep.foo=1")


def test_bare_presets_and_the_preset_alias_become_config_files():
  flag = run_flags.ConfigFlag.__new__(run_flags.ConfigFlag)  # no absl definitions
  flag.file, flag.presets, flag.preset_flag = SWEEP_FILE, sweep_configs.PRESETS, None
  assert flag.normalize(["p", "--config=quick", "--config.seed=1"]) == [
      "p", f"--config={SWEEP_FILE}:quick", "--config.seed=1"]
  assert flag.normalize(["p", "--config", "paper"]) == ["p", "--config", f"{SWEEP_FILE}:paper"]
  kept = ["p", "--config=a/b.py:quick", "--config=a/b.py", "--", "--config=quick"]
  assert flag.normalize(kept) == kept
  flag.preset_flag = "preset"
  assert flag.normalize(["p", "--preset=paper", "--config.epochs=3"]) == [
      "p", f"--config={SWEEP_FILE}:paper", "--preset=paper", "--config.epochs=3"]
  assert flag.normalize(["p", "--preset", "quick"])[1] == f"--config={SWEEP_FILE}:quick"
  # an explicit --config wins over the alias
  assert flag.normalize(["p", "--config=quick", "--preset=paper"])[1] == (
      f"--config={SWEEP_FILE}:quick")


def test_check_config_args_accepts_every_entry_points_config_files():
  for configs, preset in ((sweep_configs, "quick"), (edge_popup_configs, "paper")):
    path = str(pathlib.Path(configs.__file__).with_suffix(".py"))
    run_flags.check_config_args(["p", f"--config={path}:{preset}"], f"{path}:{preset}")


@pytest.mark.parametrize("error, line", [
    (ConfigError("sweep.widths", "empty"), "--config.sweep.widths: empty"),
    (ConfigError("", "unknown preset 'x'"), "--config: unknown preset 'x'"),
    (ValueError("config.epochs must be >= 1, got 0"), "--config.epochs must be >= 1, got 0"),
    (FileExistsError("output directory /x is not empty; pass --overwrite"),
     "output directory /x is not empty; pass --overwrite"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/d/t.npz"),
     "/d/t.npz: No such file or directory"),
    (PermissionError(errno.EACCES, "output directory /r is not writable (denied)"),
     "output directory /r is not writable (denied)"),
    (data_lib.DataError("/d/train-images: truncated\n  (expected 47040016 bytes)"),
     "/d/train-images: truncated"),
])
def test_error_line_names_what_and_why(error, line):
  assert run_flags.error_line(error) == line


def test_flag_errors_name_the_flag():
  assert run_flags._flag_error(flags.UnrecognizedFlagError("bogus", "--bogus=1")) == (
      "--bogus: unknown flag")
  e = flags.IllegalFlagValueError("flag --out_dir=: must not be empty")
  assert run_flags._flag_error(e) == "--out_dir: must not be empty (got )"


@pytest.mark.parametrize("error, status, start", [
    (ConfigError("sweep.epsilon", "must be in (0, 1), got 2"), 2,
     "error: --config.sweep.epsilon: must be in (0, 1), got 2"),
    (FileExistsError("output directory /o is not empty"), 2, "error: output directory /o"),
    (data_lib.DownloadError("https://x/y: HTTP 404"), 2, "error: https://x/y: HTTP 404"),
    (FloatingPointError("row 3: non-finite sup_error"), 1,
     "error: FloatingPointError: row 3: non-finite sup_error (an internal error; --debug"),
    (KeyError("k"), 1, "error: KeyError: 'k' (an internal error"),
])
def test_main_errors_end_in_one_line_and_status(error, status, start, capsys, monkeypatch):
  monkeypatch.delenv(run_flags.DEBUG_ENV, raising=False)

  def main(argv):
    raise error

  with pytest.raises(SystemExit) as info:
    run_flags._guarded(main)(["prog"])
  assert info.value.code == status
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(start), err
  assert "Traceback" not in err


def test_debug_env_reraises(monkeypatch):
  monkeypatch.setenv(run_flags.DEBUG_ENV, "1")

  def main(argv):
    raise ConfigError("seed", "bad")

  with pytest.raises(ConfigError):
    run_flags._guarded(main)(["prog"])
