"""Sweeps as one XLA program: one trace, equality with find_ticket, sane measurements,
parameter counts, the summary's theory columns, the entry point (quick preset, done marker,
sharded and multi-process runs, bad flags, out-dir guard)."""

import importlib
import json
import os
import pathlib
import socket
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import construction
from lth_jax import constructions
from lth_jax import evaluation
from lth_jax import grid_program
from lth_jax import random_net as rn
from lth_jax import files as files_lib
from lth_jax import subset_sum
from lth_jax import targets as targets_lib
from lth_jax.configs import sweep as sweep_configs

# The module (lth_jax.sweep is also the name of the re-exported sweep() function).
sweep_lib = importlib.import_module("lth_jax.sweep")

REPO = pathlib.Path(__file__).resolve().parents[1]
# Tiny grids: compile time is everything, so XLA's backend optimisation is switched off.
FAST = dict(num_points=64, ascent_steps=5,
            compiler_options={"xla_backend_optimization_level": 0})
WIDTHS = {"network": (3, 6, 12, 20), "single": (3, 6, 12, 20), "direct": (3, 6, 12)}
SEEDS = 3


@pytest.fixture(scope="module")
def grid():
  """ONE program: a 6x6 and a 5-4-3 target, every method, shared by the tests below."""
  key = jax.random.key(1)
  targets = [targets_lib.random_target(jax.random.key(7), (6, 6)),
             targets_lib.random_target(jax.random.key(3), (5, 4, 3))]
  res = sweep_lib.sweep_targets(targets, WIDTHS, SEEDS, ("network", "single", "direct"),
                                key=key, epsilon=0.05, **FAST)
  return key, targets, res


@pytest.mark.parametrize("method", ["network", "single", "direct"])
def test_truncated_width_equals_find_ticket(grid, method):
  """Width 3 of the grid (nested in the width-20 draw) is find_ticket on the width-3 draw."""
  key, targets, res = grid
  target, r, i, w = targets[1], res[1][method], 0, 3
  for s in range(SEEDS):
    seed_key = jax.random.fold_in(jax.random.fold_in(key, 1), s)  # target 1, seed s
    if method == "direct":
      widest = max(WIDTHS["direct"])
      full = construction.sample_direct_coefficients(jax.random.fold_in(seed_key, 1), target,
                                                     widest, nested=True)
      coefs = construction.sample_direct_coefficients(jax.random.fold_in(seed_key, 1), target,
                                                      w, nested=True)
      for a, b in zip(full.coefficients, coefs.coefficients):  # nested: a prefix
        np.testing.assert_array_equal(a[:, :w], b)
      ticket = construction.find_ticket(coefs, target, "direct")
    else:
      widest = rn.sample_random_network(jax.random.fold_in(seed_key, 0), (5, 4, 3),
                                        max(WIDTHS[method]))
      net = rn.truncate_copies(widest, w)
      ticket = construction.find_ticket(net, target, method)
      if method == "network" and s == 0:
        # the sweep evaluates tickets through their compact (P, N) form: same outputs
        x = jax.random.normal(jax.random.key(0), (32, 5))
        fast = constructions.get(method).effective_forward(ticket.effective_kernels, x)
        np.testing.assert_allclose(fast,
                                   evaluation.structured_forward(net, ticket.masks, x),
                                   rtol=1e-5, atol=1e-5)
    errs = np.concatenate([np.ravel(e) for e in ticket.weight_errors])
    np.testing.assert_allclose(r.max_weight_error[i, s], errs.max(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r.mean_weight_error[i, s], errs.mean(), rtol=1e-4, atol=1e-7)
    assert r.params_kept[i, s] == int(ticket.num_params_kept)
    assert r.params_random[i] == ticket.num_params_random


def test_errors_fall_with_width_and_single_is_worse(grid):
  _, _, res = grid
  for per_method in res:
    for method in ("network", "direct"):
      r = per_method[method]
      mean = np.median(r.mean_weight_error, axis=1)
      sup = np.median(r.sup_error, axis=1)
      # (the max over weights falls slowly for "network": rare halves with unlucky signs)
      assert mean[-1] < 0.5 * mean[0], (method, mean)
      assert sup[-1] < (0.8 if method == "network" else 0.1) * sup[0], (method, sup)
      # nested draws, growing caps, exact solver: a wider instance holds every coefficient
      # of a narrower one, so no weight's error can grow with the width
      assert np.all(np.diff(r.max_weight_error, axis=0) <= 1e-6), r.max_weight_error
    net, single = per_method["network"], per_method["single"]
    # equal widths, same networks: SubsetSum beats the best single unit per sign half
    assert np.median(net.sup_error[-1]) < np.median(single.sup_error[-1])
    wide = net.widths >= 12
    assert np.all(np.mean(net.mean_weight_error[wide], 1) < np.mean(single.mean_weight_error[wide], 1))
    for r in per_method.values():
      assert np.all((r.fraction_within_epsilon >= 0) & (r.fraction_within_epsilon <= 1))
      assert np.all(np.isfinite(r.sup_error)) and np.all(r.sup_error >= 0)
      # the sup estimate (from below) never exceeds the analytic upper bound
      assert np.all(r.sup_error <= r.bound * (1 + 1e-4) + 1e-6)
      assert r.accuracy is None and r.target_accuracy is None


def test_parameter_counts_match_formulas(grid):
  _, _, res = grid
  d = 6
  for method, r in res[0].items():
    assert r.target_params == d * d
    w = np.asarray(WIDTHS[method])
    if method == "direct":
      np.testing.assert_array_equal(r.params_random, d * d * w)
      np.testing.assert_array_equal(r.width_factor, w)
      np.testing.assert_array_equal(r.param_factor, w)
    else:
      # dense random network: M1 (d, n d) + M2 (n d, d)
      np.testing.assert_array_equal(r.params_random, 2 * d * d * w)
      for i, wi in enumerate(w):  # shapes only: no compilation
        net = jax.eval_shape(lambda: rn.sample_random_network(jax.random.key(0), (d, d), int(wi)))
        assert r.params_random[i] == rn.num_params(net)
      np.testing.assert_array_equal(r.width_factor, w)
      np.testing.assert_array_equal(r.param_factor, 2 * w)
    assert np.all(r.params_kept <= r.params_random[:, None])
    assert np.all(r.params_kept >= 0)
  # a single unit per sign half: at most 2 products (plus their 2 M1 entries) per weight
  assert np.all(res[0]["single"].params_kept <= 4 * d * d)
  # the 5-4-3 target: n d_{i-1} (d_{i-1} + d_i) summed over layers; width factor n 5 / 5
  r = res[1]["network"]
  np.testing.assert_array_equal(r.params_random,
                                [n * (5 * 9 + 4 * 7) for n in WIDTHS["network"]])
  np.testing.assert_array_equal(r.width_factor, WIDTHS["network"])
  assert r.target_params == 5 * 4 + 4 * 3


def test_rows_and_copies_needed(grid):
  _, _, res = grid
  rows = res[0]["network"].rows(experiment="x")
  assert len(rows) == len(WIDTHS["network"]) * SEEDS
  assert {r["experiment"] for r in rows} == {"x"}
  json.dumps(rows)  # plain types only
  fake = res[0]["network"]
  sup = np.array([[0.5, 0.5], [0.1, 0.5], [0.2, 0.05], [0.01, 0.04]])
  fake = type(fake)(**{**fake.__dict__, "sup_error": sup, "num_seeds": 2})
  np.testing.assert_array_equal(sweep_lib.copies_needed(fake, 0.15), [20, 12])
  np.testing.assert_array_equal(sweep_lib.copies_needed(fake, 0.01), [20, np.inf])
  np.testing.assert_array_equal(fake.widths, [3, 6, 12, 20])


def test_summary_parameter_columns(grid):
  _, _, res = grid
  named = [("a6x6", res[0]), ("b5x4x3", res[1])]
  eps = 0.05
  summary = sweep_lib.summary_rows(named, eps)
  table = sweep_lib.format_summary_table(summary).splitlines()
  assert "LB P" in table[2] and "params" in table[1]
  from lth_jax import theory
  for row in summary:
    r = dict(named)[row["target"]][row["method"]]
    sizes, method = tuple(row["layer_sizes"]), row["method"]
    const = theory.C_DIRECT if method == "direct" else theory.C_NETWORK
    theory_size = theory.construction_size(sizes, eps, const, method)
    assert row["theory_params"] == theory_size.params
    assert row["theory_copies"] == list(theory_size.copies)
    assert row["lower_bound_params"] == pytest.approx(sum(
        theory.counting_lower_bound(a, b, eps).params for a, b in zip(sizes[:-1], sizes[1:])))
    needed = sweep_lib.copies_needed(r, eps)
    if row["copies_needed_median"] is None:
      assert row["params_needed_median"] is None
      expect = f">{max(r.params_random)}"
    else:
      # the measured random object at each seed's copies needed = the theory's count there
      per_seed = [theory.random_params(sizes, int(n), method) if np.isfinite(n) else np.inf
                  for n in needed]
      assert row["params_needed_median"] == pytest.approx(np.median(per_seed))
      expect = f"{row['params_needed_median']:.0f}"
    line = next(l for l in table if l.startswith(f"{row['target']:<18} {method:<8}"))
    params = line.split("|")[1].split()
    assert params == [expect, str(row["theory_params"]), f"{row['lower_bound_params']:.0f}"]
  # the lower bound never exceeds what the construction uses
  assert all(row["lower_bound_params"] < row["theory_params"] for row in summary)


def test_bound_is_the_batched_analytic_bound_of_each_grid_point(grid):
  """SweepResult.bound (host, float64) is evaluation.analytic_bound of the point's ticket."""
  key, targets, res = grid
  target, w = targets[1], 3
  seed_key = jax.random.fold_in(jax.random.fold_in(key, 1), 0)
  net = rn.truncate_copies(rn.sample_random_network(jax.random.fold_in(seed_key, 0), (5, 4, 3),
                                                    max(WIDTHS["network"])), w)
  ticket = construction.find_ticket(net, target, "network")
  np.testing.assert_allclose(res[1]["network"].bound[0, 0],
                             evaluation.analytic_bound(target, ticket.weight_errors), rtol=1e-5)


def test_accuracy_on_a_dataset():
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(40, 12)).astype(np.float32)
  target = targets_lib.random_target(jax.random.key(3), (12, 3))
  labels = np.array(jnp.argmax(evaluation.forward(target, images), -1))
  labels[:4] = (labels[:4] + 1) % 3  # target accuracy 0.9 exactly
  res = sweep_lib.sweep(target, (2, 16), 2, "direct", key=jax.random.key(0),
                        dataset=(images, labels), **FAST)
  assert res.target_accuracy == pytest.approx(0.9)
  assert res.accuracy.shape == (2, 2)
  assert np.all((res.accuracy >= 0) & (res.accuracy <= 1))
  np.testing.assert_allclose(res.accuracy[1], 0.9, atol=0.051)  # 16 coefficients: ~exact
  with pytest.raises(ValueError, match="input size"):
    sweep_lib.sweep(target, (2,), 1, "direct", key=jax.random.key(0),
                    dataset=(images[:, :5], labels))


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=(0, 2)), "positive"),
    (dict(widths=(2, 2)), "distinct"),
    (dict(method="best"), "method"),
    (dict(epsilon=1.0), "epsilon"),
    (dict(num_seeds=0), "num_seeds"),
    (dict(widths=(40,), method="direct"), "MAX_N"),
])
def test_bad_arguments(kwargs, match):
  args = dict(target=targets_lib.random_target(jax.random.key(0), (2, 2)), widths=(2,),
              num_seeds=1, method="network", key=jax.random.key(0))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    sweep_lib.sweep(**args)


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
  for name in ("error_vs_copies.png", "overparam_vs_d.png", "lueker.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "copies per input needed" in stdout and "LB P" in stdout
  last = [line for line in stderr.splitlines() if line.strip()][-1]
  assert last.endswith(str(out)), last
  # The completion marker, written last, lists every other output file.
  done = json.loads((out / sweep_lib.DONE_FILE).read_text())
  assert done["preset"] == "quick" and not done["sharded"]
  assert done["files"] == sorted(p.name for p in out.iterdir() if p.name != "done.json")
  assert (out / "done.json").stat().st_mtime >= max(p.stat().st_mtime for p in out.iterdir())


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


def test_entry_point_bad_flags_and_guard_are_one_line_errors(tmp_path):
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
                   "unknown preset 'nope' (choose from default, quick, paper, lueker)"),
      # no upper bound used to start an endless job
      "--config.lueker.uniform_sizes": (["--config.lueker.uniform_sizes=(60,)"],
                                        "sizes at most 36"),
      "--config.lueker.product_sizes": ([quick, "--config.lueker.product_sizes=(44,54)"],
                                        "sizes at most 53"),
      "--overwrite": ([quick], "output directory"),
  }
  procs = {}
  for flag, (args, _) in cases.items():
    out = full if flag == "--overwrite" else tmp_path / flag.strip("-")
    procs[flag] = _run([*args, f"--out_dir={out}"])
  for flag, proc in procs.items():
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0, flag
    assert "Traceback" not in stderr and "FATAL" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    if flag == "--overwrite":
      assert lines[-1].startswith("error: output directory") and flag in lines[-1], lines[-1]
    else:
      assert lines[-1].startswith(f"error: {flag}: {cases[flag][1]}"), (flag, lines[-1])
      assert not (tmp_path / flag.strip("-")).exists(), flag  # nothing ran
  assert (full / "keep.txt").read_text() == "precious"


def test_check_config_args_names_unknown_fields_and_presets():
  default = str(REPO / "lth_jax" / "configs" / "sweep.py") + ":default"
  check = lambda *args: sweep_lib.check_config_args(["prog", *args], default)
  check("--config.sweep.widths=(2,4)", "--noconfig.devices.shard", "--out_dir=x")  # known
  check("--config", default.replace(":default", ":quick"), "--config.lueker.trials=0")
  with pytest.raises(ValueError, match=r"^config\.sweep\.foo: unknown field 'foo' in "
                     r"config\.sweep \(fields: ascent_steps, direct_widths, "):
    check("--config.sweep.foo=1")
  with pytest.raises(ValueError, match=r"^config\.seed\.x: config\.seed is a value \(int\)"):
    check("--config.seed.x", "1")
  with pytest.raises(ValueError, match=r"^config: unknown preset 'nope' \(choose from "
                     r"default, quick, paper, lueker\)$"):
    check("--config=" + default.replace(":default", ":nope"))
  with pytest.raises(ValueError, match=r"^config: cannot load .*No such file"):
    check("--config=/no/such/config.py")
  # after "--" nothing is a flag
  check("--", "--config.sweep.foo=1")
