"""The sweep's driver (lth_jax.run.sweep) and its entry point: the quick preset's files and
done marker, sharded and multi-process runs, bad flags and the out-dir guard as one-line
errors, the config checks as ConfigError naming the field."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

import helpers
from lth_jax import files as files_lib
from lth_jax.configs import sweep as sweep_configs
from lth_jax.run import common
from lth_jax.run import sweep as run_sweep
from lth_jax.run import sweep_store

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(args, cwd=REPO, env=None):
  env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
  return subprocess.Popen([sys.executable, "-m", "experiments.sweep", *args], cwd=cwd,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_entry_point_quick_preset_writes_jsonl_and_png(tmp_path):
  out = tmp_path / "quick"
  proc = _run(["--config=lth_jax/configs/sweep.py:quick", f"--out_dir={out}"])
  stdout, stderr = proc.communicate(timeout=600)
  assert proc.returncode == 0, stderr[-3000:]
  rows = files_lib.read_jsonl(out / "results.jsonl")
  config = sweep_configs.get_config("quick")
  per_target = sum(len(config.sweep.direct_widths if m == "direct" else config.sweep.widths)
                   for m in config.sweep.methods) * config.sweep.num_seeds
  assert len(rows) == per_target * len(config.targets.sizes)
  assert rows[0]["config"]["preset"] == "quick"
  assert {"sup_error", "max_weight_error", "fraction_within_epsilon", "params_random",
          "params_kept", "width_factor", "experiment", "width", "seed"} <= set(rows[0])
  for name in ("error_vs_copies.png", "overparam_vs_d.png", "lueker.png",
               "success_vs_copies.png", "log_law.png", "log_law_0.9.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "copies per input needed" in stdout and "LB P" in stdout
  # Success at every eps of the config from the same grid, each row with its config.
  success = files_lib.read_jsonl(out / "success.jsonl")
  assert len(success) == per_target * len(config.targets.sizes) // config.sweep.num_seeds * len(
      config.sweep.epsilons)
  assert {r["epsilon"] for r in success} == set(config.sweep.epsilons)
  assert all(r["config"]["preset"] == "quick" for r in success)
  copies = files_lib.read_jsonl(out / "copies.jsonl")
  assert {"copies_0.5", "copies_0.9", "log_term", "config"} <= set(copies[0])
  summary = json.loads((out / "summary.json").read_text())
  assert summary["config"]["preset"] == "quick" and "fits" in summary
  assert "P(sup error <= 0.05)" in stdout and "fit copies" in stdout
  assert (out / "tables.txt").read_text().count("target ") >= 2
  last = [line for line in stderr.splitlines() if line.strip()][-1]
  assert last.endswith(str(out)), last
  # The completion marker, written last, lists every other output file.
  done = json.loads((out / files_lib.DONE_FILE).read_text())
  assert done["preset"] == "quick" and not done["sharded"]
  assert done["files"] == sorted(p.name for p in out.iterdir() if p.name != "done.json")
  assert (out / "done.json").stat().st_mtime >= max(p.stat().st_mtime for p in out.iterdir())
  _check_resume(out, config)


def _check_resume(out, config):
  """A killed run (no done.json; one target's grid and the Lueker job not saved yet) rerun
  with the same config computes only what is missing and writes identical files; a changed
  config, or a saved piece of another run, is refused with one line."""
  before = {f: (out / f).read_bytes() for f in ("results.jsonl", "success.jsonl",
                                                 "copies.jsonl", "summary.json", "tables.txt",
                                                 "lueker.jsonl")}
  assert sorted(p.name for p in (out / sweep_store.TARGETS_DIR).iterdir()) == [
      "random_3x3.npz", "random_4x2.npz"]
  for name in ("done.json", "targets/random_4x2.npz", "lueker/uniform_6.npz",
               "results.jsonl"):
    (out / name).unlink()
  result = run_sweep.run_experiment(config, out)
  assert set(result["results"][1][1]) == set(config.sweep.methods)
  assert {f: (out / f).read_bytes() for f in before} == before
  assert (out / "done.json").exists()
  (out / "done.json").unlink()
  changed = sweep_configs.get_config("quick")
  changed.seed = 1
  with pytest.raises(FileExistsError, match="unfinished run with other settings"):
    run_sweep.run_experiment(changed, out)
  sweep_store.save_target(out, "random_3x3", result["results"][0][1], changed.to_dict())
  with pytest.raises(FileExistsError, match="random_3x3.npz was written by a run with other"):
    run_sweep.run_experiment(config, out)


# A small grid (one 2-3-2 target, every method, 2 seeds) for the multi-device runs.
SMALL = ["--config=lth_jax/configs/sweep.py:quick", "--config.lueker.trials=0",
         "--config.targets.sizes=((2,3,2),)", "--config.sweep.widths=(2,4)",
         "--config.sweep.direct_widths=(2,4)", "--config.sweep.num_points=16"]
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def _finish(proc):
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr[-3000:]
  return stderr


def _assert_same_rows(out_a, out_b):
  """Equal results.jsonl: solver-derived numbers bit for bit, float32 grid reductions up
  to their last bits (XLA vectorises them by the per-device shape; lth_jax.distributed)."""
  key = lambda r: (r["experiment"], r["method"], r["width"], r["seed"])
  rows_a, rows_b = (sorted(files_lib.read_jsonl(o / "results.jsonl"), key=key)
                    for o in (out_a, out_b))
  assert len(rows_a) == len(rows_b) > 0
  for a, b in zip(rows_a, rows_b):
    assert key(a) == key(b)
    for field in ("max_weight_error", "fraction_within_epsilon", "params_kept",
                  "params_random", "width_factor", "param_factor"):
      assert a[field] == b[field], (key(a), field, a[field], b[field])
    for field in ("mean_weight_error", "sup_error", "bound"):
      np.testing.assert_allclose(a[field], b[field], rtol=1e-5, err_msg=f"{key(a)} {field}")


@pytest.fixture(scope="module")
def small_unsharded(tmp_path_factory):
  out = tmp_path_factory.mktemp("small") / "plain"
  stderr = _finish(_run([*SMALL, f"--out_dir={out}"], env=TWO_DEVICES))
  assert "seeds split" not in stderr
  return out


def test_entry_point_sharded_over_two_devices_equals_unsharded(tmp_path, small_unsharded):
  """--config.devices.shard=True on 2 forced CPU devices splits the seeds over both and
  gives the unsharded run's results."""
  out = tmp_path / "sharded"
  stderr = _finish(_run([*SMALL, "--config.devices.shard=True", f"--out_dir={out}"],
                        env=TWO_DEVICES))
  assert "seeds split over 2 devices (1 process(es))" in stderr
  done = json.loads((out / "done.json").read_text())
  assert done["sharded"] and done["devices"] == 2 and done["processes"] == 1
  _assert_same_rows(out, small_unsharded)


def test_entry_point_two_processes_distributed_equals_unsharded(tmp_path, small_unsharded):
  """--config.devices.distributed=True with 2 local processes (1 CPU device each, Gloo):
  jax.distributed.initialize, the seeds split over both processes' devices, only process 0
  prints and writes, and the results equal the unsharded run's."""
  with socket.socket() as sock:  # a free port for the coordinator
    sock.bind(("localhost", 0))
    port = sock.getsockname()[1]
  out = tmp_path / "distributed"
  procs = [_run([*SMALL, "--config.devices.distributed=True",
                 f"--config.devices.coordinator_address=localhost:{port}",
                 "--config.devices.num_processes=2", f"--config.devices.process_id={i}",
                 f"--out_dir={out}"], env={"JAX_PLATFORMS": "cpu"}) for i in range(2)]
  outputs = [proc.communicate(timeout=300) for proc in procs]
  for proc, (_, stderr) in zip(procs, outputs):
    assert proc.returncode == 0, stderr[-3000:]
    assert "seeds split over 2 devices (2 process(es))" in stderr
  # process 0 prints the tables (Gloo's own connection message aside)
  assert "copies per input needed" in outputs[0][0]
  assert "copies per input needed" not in outputs[1][0] and "target " not in outputs[1][0]
  assert "output directory" in outputs[0][1] and "output directory" not in outputs[1][1]
  done = json.loads((out / "done.json").read_text())
  assert done["processes"] == 2 and done["devices"] == 2
  _assert_same_rows(out, small_unsharded)


def test_entry_point_bad_flags_and_guard_are_one_line_errors(tmp_path, monkeypatch):
  # In this process (helpers.invoke: runpy, as `python -m` runs it): a fresh interpreter
  # per case only paid the JAX import ten times; the quick preset's run above is the real
  # process.
  monkeypatch.chdir(REPO)  # the --config file path is relative to the repository
  full = tmp_path / "full"
  full.mkdir()
  (full / "keep.txt").write_text("precious")
  quick = "--config=lth_jax/configs/sweep.py:quick"
  # flag -> (arguments, the start of the one-line error)
  cases = {
      "--config.sweep.widths": ([quick, "--config.sweep.widths=(2,-4)"], "widths must be positive"),
      "--config.sweep.epsilon": ([quick, "--config.sweep.epsilon=1.5"], "must be in (0, 1)"),
      "--config.sweep.methods": ([quick, "--config.sweep.methods=('network','greedy')"],
                                 "unknown method"),
      "--config.data.name": ([quick, "--config.data.name=cifar"], "unknown dataset"),
      # ml_collections resolves these while defining / parsing the flag (was a traceback):
      "--config.sweep.foo": (["--config.sweep.foo=1"], "unknown field 'foo' in config.sweep"),
      "--config.bar.baz": ([quick, "--config.bar.baz=1"], "unknown field 'bar' in config "),
      "--config": (["--config=lth_jax/configs/sweep.py:nope"],
                   "unknown preset 'nope' (choose from default, quick, paper, lueker"),
      # no upper bound used to start an endless job
      "--config.lueker.uniform_sizes": (["--config.lueker.uniform_sizes=(60,)"],
                                        "sizes at most 36"),
      "--config.lueker.product_sizes": ([quick, "--config.lueker.product_sizes=(44,54)"],
                                        "sizes at most 53"),
      "--overwrite": ([quick], "output directory"),
  }
  for flag, (args, why) in cases.items():
    out = full if flag == "--overwrite" else tmp_path / flag.strip("-")
    code, stderr = helpers.invoke("experiments.sweep", *args, f"--out_dir={out}")
    assert code != 0, flag
    assert "Traceback" not in stderr and "FATAL" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    if flag == "--overwrite":
      assert lines[-1].startswith("error: output directory") and flag in lines[-1], lines[-1]
    else:
      assert lines[-1].startswith(f"error: {flag}: {why}"), (flag, lines[-1])
      assert not (tmp_path / flag.strip("-")).exists(), flag  # nothing ran
  assert (full / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("field, value, why", [
    ("sweep.widths", (2, -4), "widths must be positive integers, got (2, -4)"),
    ("sweep.widths", (2, 2), "widths must be distinct"),
    ("sweep.direct_widths", (2, 40), "at most 36 coefficients per weight"),
    ("sweep.methods", ("network", "network"), "methods must be distinct"),
    ("sweep.epsilon", 0.0, "must be in (0, 1), got 0.0"),
    ("sweep.epsilons", (0.1, 1.5), "must be in (0, 1), got 1.5"),
    ("targets.permutation_sizes", ((3,),), "each target needs >= 2 positive layer sizes"),
    ("sweep.num_seeds", 0, "must be positive, got 0"),
    ("sweep.max_half", 37, "must be in [0, 36] (0: default), got 37"),
    ("sweep.distribution", "cauchy", "must be one of ('uniform', 'normal'), got 'cauchy'"),
    ("sweep.xla_opt_level", 4, "must be in [-1, 3] (-1: XLA default), got 4"),
    ("targets.sizes", ((3,),), "each target needs >= 2 positive layer sizes"),
    ("targets.spectral_norm", -1.0, "must be positive"),
    ("targets.npz_layout", "tf", "must be one of ('torch', 'jax')"),
    ("targets.npz", "/no/such.npz", "no such file: /no/such.npz"),
    ("lueker.trials", -1, "must be >= 0 (0: skip), got -1"),
    ("lueker.spacing", 0.5, "must be in (0, lueker.epsilon)"),
    ("lueker.uniform_sizes", (0,), "sizes must be positive integers"),
    ("devices.num_processes", -1, "must be >= 0 (0: from the environment)"),
    ("devices.process_id", 3, "must be -1 (from the environment) or in [0, num_processes)"),
])
def test_validate_config_names_the_field(field, value, why):
  config = sweep_configs.get_config("quick")
  group, name = field.split(".")
  config[group][name] = value
  if field == "devices.process_id":
    config.devices.num_processes = 2
  with pytest.raises(common.ConfigError) as info:
    run_sweep.validate_config(config)
  assert info.value.field == field
  assert str(info.value).startswith(f"--config.{field}: {why}"), str(info.value)


def test_validate_config_accepts_every_preset_and_refuses_empty_work():
  for preset in sweep_configs.PRESETS:
    run_sweep.validate_config(sweep_configs.get_config(preset))
  config = sweep_configs.get_config("quick")
  config.sweep.methods, config.lueker.trials = (), 0
  with pytest.raises(common.ConfigError, match="nothing to do"):
    run_sweep.validate_config(config)
  config = sweep_configs.get_config("quick")
  config.targets.sizes = ()
  with pytest.raises(common.ConfigError, match="^--config.targets.sizes: no targets"):
    run_sweep.validate_config(config)


def test_widths_targets_and_cost_estimate():
  config = sweep_configs.get_config("quick")
  assert run_sweep.sweep_widths(config) == {"network": (2, 4, 8), "direct": (2, 4, 6),
                                            "single": (2, 4, 8)}
  named = run_sweep.build_targets(config)
  assert [n for n, _ in named] == ["random_3x3", "random_4x2"]
  config.targets.permutation_sizes = ((3, 3, 3),)
  assert [n for n, _ in run_sweep.build_targets(config)][2:] == ["perm_3x3x3"]
  assert np.asarray(run_sweep.build_targets(config)[2][1][1]).sum() == 3.0
  assert [k.shape for k in named[1][1]] == [(4, 2)]
  assert run_sweep.estimated_keys([(3, 3)], (2, 4), 2, "single") == 0.0
  # "direct" at widths up to 6: 2^(3 + 1) keys per weight, 9 weights, 2 widths, 2 seeds
  assert run_sweep.estimated_keys([(3, 3)], (2, 6), 2, "direct") == 16 * 9 * 2 * 2
  # targets.bias_scale: the same kernels, each layer with a bias of that norm
  config.targets.bias_scale, config.sweep.methods = 0.5, ("bias",)
  biased = run_sweep.build_targets(config)
  assert [n for n, _ in biased] == ["random_3x3_bias", "random_4x2_bias", "perm_3x3x3_bias"]
  layer = biased[1][1][0]
  np.testing.assert_array_equal(layer["kernel"], named[1][1][0])
  assert float(np.linalg.norm(layer["bias"])) == pytest.approx(0.5, rel=1e-6)
  assert run_sweep.sweep_widths(config) == {"bias": (2, 4, 8)}


def test_device_settings_from_config():
  config = sweep_configs.get_config("quick")
  assert common.device_settings(config) == common.Devices(False, False, {})
  config.devices.distributed = True
  config.devices.coordinator_address = "localhost:1234"
  config.devices.num_processes, config.devices.process_id = 2, 1
  assert common.device_settings(config) == common.Devices(
      True, True, dict(coordinator_address="localhost:1234", num_processes=2, process_id=1))
