"""The driver behind ``python -m experiments.sweep``: config in, files out.

``run_experiment(config, out_dir)`` checks the config (``validate_config``), builds the
targets (random and permutation families, an npz file, or one trained on a dataset), runs
every target's width x seed grid as one XLA program (``lth_jax.sweep.sweep_targets``), the
Lueker coverage check, and writes the rows, the success probabilities at every epsilon of
``config.sweep.epsilons`` (read from the same grid's sup errors: the solve does not depend
on epsilon), the copies needed and the log-law fit, the tables and the figures
(``lth_jax.report``), then ``done.json``. Presets: ``lth_jax/configs/sweep.py``. Callable
from a notebook.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time

import jax
import jax.numpy as jnp
from absl import logging

from lth_jax import data as data_lib
from lth_jax import sharding
from lth_jax import files as files_lib
from lth_jax import lueker
from lth_jax import models
from lth_jax import progress as progress_lib
from lth_jax import sweep as sweep_lib
from lth_jax import targets as targets_lib
from lth_jax import training
from lth_jax.report import figures
from lth_jax.report import tables
from lth_jax.run import common
from lth_jax.run import sweep_store
from lth_jax.run.sweep_checks import DATASETS, validate_config  # noqa: F401 (API)

# Measurements that must be finite in every written row (None: does not apply).
_FINITE = ("max_weight_error", "mean_weight_error", "fraction_within_epsilon", "sup_error",
           "bound", "accuracy")


def sweep_widths(config) -> dict[str, tuple[int, ...]]:
  """``method -> widths`` of ``config.sweep`` (``"direct"`` has its own; every network
  construction uses ``sweep.widths``)."""
  sw = config.sweep
  return {m: tuple(sw.direct_widths if m == "direct" else sw.widths) for m in sw.methods}


def sweep_kwargs(config) -> dict:
  """The keyword arguments ``run_experiment`` gives ``sweep_targets`` (all but ``dataset``
  and ``mesh``), compiler options from ``config.sweep.xla_opt_level`` included."""
  sw = config.sweep
  return dict(key=jax.random.key(config.seed), epsilon=sw.epsilon, num_points=sw.num_points,
              ascent_steps=sw.ascent_steps, max_half=sw.max_half or None,
              distribution=sw.distribution, eval_batch=sw.eval_batch,
              compiler_options=(None if sw.xla_opt_level < 0 else
                                {"xla_backend_optimization_level": sw.xla_opt_level}))


# --------------------------------------------------------------------------------------
# Targets.
# --------------------------------------------------------------------------------------


def _target_name(sizes):
  return "x".join(str(d) for d in sizes)


def build_targets(config) -> list[tuple[str, list[jax.Array]]]:
  """The random targets of ``config.targets.sizes`` (``random_<sizes>``), the permutation
  targets of ``config.targets.permutation_sizes`` (``perm_<sizes>``: errors add up with
  depth, ``targets.permutation_target``) and the npz one, named by family and sizes."""
  key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
  out = []
  for i, sizes in enumerate(config.targets.sizes):
    out.append((f"random_{_target_name(sizes)}",
                targets_lib.random_target(jax.random.fold_in(key, i), sizes,
                                        config.targets.spectral_norm)))
  perm_key = jax.random.fold_in(key, 7_000_003)
  for i, sizes in enumerate(config.targets.permutation_sizes):
    out.append((f"perm_{_target_name(sizes)}",
                targets_lib.permutation_target(jax.random.fold_in(perm_key, i), sizes,
                                               config.targets.spectral_norm)))
  if config.targets.bias_scale:  # biases on the random families (not on an npz target)
    bias_key = jax.random.fold_in(key, 11_000_003)
    out = [(name + "_bias", targets_lib.with_random_biases(
        jax.random.fold_in(bias_key, i), t, config.targets.bias_scale))
           for i, (name, t) in enumerate(out)]
  if config.targets.npz and not config.data.name:
    kernels = targets_lib.load_npz_target(os.path.expanduser(config.targets.npz),
                                          config.targets.npz_layout)
    out.append((f"npz_{_target_name(targets_lib.target_layer_sizes(kernels))}", kernels))
  return out


def _datasets(config) -> tuple | None:
  """The dataset experiment's ``(test, train)`` splits (train None with an npz target; None
  without a dataset): read before the output directory is prepared, so that bad data
  files fail with nothing written."""
  if not (config.sweep.methods and config.data.name):
    return None
  data_dir = os.path.expanduser(config.data.data_dir) if config.data.data_dir else None
  test = data_lib.load_dataset(config.data.name, "test", data_dir, limit=config.data.limit,
                               seed=config.seed)
  train = None if config.targets.npz else data_lib.load_dataset(
      config.data.name, "train", data_dir, limit=config.data.train_limit, seed=config.seed)
  return test, train


def _data_target(config, test, train):
  """(name, kernels, (images, labels)) for the dataset experiment."""
  if config.targets.npz:
    kernels = targets_lib.load_npz_target(os.path.expanduser(config.targets.npz),
                                          config.targets.npz_layout)
    name = "npz"
  else:
    model = models.MLP(tuple(config.data.train_hidden) + (10,))
    logging.info("training a bias-free %s target on %s (%d examples, %d epochs)",
                 "-".join(map(str, (784,) + tuple(model.widths))), config.data.name,
                 len(train.labels), config.data.train_epochs)
    params, _ = training.train_classifier(
        model, train, None, epochs=config.data.train_epochs,
        learning_rate=config.data.learning_rate, key=jax.random.key(config.seed), log_every=0)
    kernels = models.kernels_from_params(params)
    name = "trained"
  kernels = [jnp.asarray(k, jnp.float32) for k in kernels]
  sizes = targets_lib.target_layer_sizes(kernels)
  return (f"{name}_{config.data.name}_{_target_name(sizes)}", kernels,
          (test.images.reshape(len(test.labels), -1), test.labels))


# --------------------------------------------------------------------------------------
# The work: grids and the Lueker check.
# --------------------------------------------------------------------------------------


def estimated_keys(sizes_list, widths, num_seeds, method, max_half=None) -> float:
  """Sort keys the solver processes for a grid (the dominant cost; 0 for ``"single"``)."""
  if method == "single":
    return 0.0
  m = sweep_lib.instance_size(method, widths, max_half)
  per_instance = 2.0 ** ((m + 1) // 2 + 1)
  weights = sum(sum(a * b for a, b in zip(s[:-1], s[1:])) for s in sizes_list)
  # lplus1: two halves per weight and output copy in the first layer (an upper estimate);
  # the other network constructions: two sign halves per weight
  halves = {"direct": 1, "lplus1": 2 * max(widths)}.get(method, 2)
  return per_instance * weights * halves * len(widths) * num_seeds


def _sweep_one(config, named, data, widths, kwargs, target_ids):
  """One program over the targets ``named`` ([(name, kernels)]; key indices
  ``target_ids``); their per-method results."""
  sw = config.sweep
  sizes = [targets_lib.target_layer_sizes(k) for _, k in named]
  keys = sum(estimated_keys(sizes, widths[m], sw.num_seeds, m, sw.max_half or None)
             for m in sw.methods)
  points = sum(len(widths[m]) for m in sw.methods) * sw.num_seeds * len(named)
  logging.info("sweep: %d targets (%s) x methods %s x %d seeds = %d grid points, ~%.2g "
               "solver keys, as one XLA program (compiled once)", len(named),
               ", ".join(n for n, _ in named), "/".join(sw.methods), sw.num_seeds, points, keys)
  estimate = keys / 50e6 + 3 * len(named) + 5  # idle: 12 s, 5.7e8 keys, 4 targets
  with progress_lib.Heartbeat("sweep program", estimate=estimate,
                              interval=max(10.0, estimate / 20)):
    return sweep_lib.sweep_targets([k for _, k in named], widths, sw.num_seeds,
                                   tuple(sw.methods), dataset=data, target_ids=target_ids,
                                   **kwargs)


def _run_sweeps(config, mesh, splits, store) -> tuple[list, list[dict]]:
  """Every target's grid: ``(named_results, rows)``; rows carry the config. ``splits``:
  ``_datasets(config)``; ``store``: ``(out_dir, fingerprint)`` of a resumable run, or None
  (``sweep_store.resumable_targets``)."""
  kwargs = sweep_kwargs(config)
  if mesh is not None:
    kwargs["mesh"] = mesh
  experiments = []  # (targets [(name, kernels)], dataset)
  if config.sweep.methods:
    named = build_targets(config)
    if named:
      experiments.append((named, None))
    if config.data.name:
      name, kernels, data = _data_target(config, *splits)
      experiments.append(([(name, kernels)], data))
  named_results, rows = [], []
  cfg = files_lib.to_jsonable(config)
  for named, data in experiments:
    compute = lambda group, named=named, data=data: _sweep_one(
        config, [named[i] for i in group], data, sweep_widths(config), kwargs, group)
    cost = lambda i, named=named: sum(estimated_keys(
        [targets_lib.target_layer_sizes(named[i][1])], w, 1, m, config.sweep.max_half or None)
        for m, w in sweep_widths(config).items())
    for name, per_method in sweep_store.resumable_targets(
        named, compute, store, config.sweep.program_per_target, cost):
      named_results.append((name, per_method))
      for r in per_method.values():
        rows += r.rows(experiment=name, config=cfg)
  files_lib.check_finite_rows(rows, _FINITE)
  return named_results, rows


def run_lueker(config, progress=True, store=None):
  """The Lueker coverage check of ``config.lueker``; list of ``lueker.Coverage``. ``store``:
  ``(out_dir, fingerprint)`` to load finished jobs from and save each as it finishes."""
  lu = config.lueker
  key = jax.random.fold_in(jax.random.key(config.seed), 2_000_003)
  grid_points = len(lueker.grid(lu.epsilon, lu.spacing))
  jobs = [("uniform", n) for n in lu.uniform_sizes] + [("products", n) for n in lu.product_sizes]

  def cost(kind, n):
    return lueker.solver_keys(lueker.instance_size(kind, n), lu.trials, grid_points)

  total = sum(cost(k, n) for k, n in jobs)
  meter = progress_lib.Progress(total, "lueker check", "solver keys",
                                every=0.0 if progress else math.inf)
  done, out = 0.0, []
  for kind, n in jobs:
    found = sweep_store.load_lueker(store[0], kind, n, store[1]) if store else None
    out.append(found or lueker.coverage(
        jax.random.fold_in(jax.random.fold_in(key, n), len(kind)), n, kind, trials=lu.trials,
        epsilon=lu.epsilon, spacing=lu.spacing))
    if store and found is None:
      sweep_store.save_lueker(store[0], out[-1], store[1])
    done += cost(kind, n)
    meter.update(done, note=f"{kind} n={n}: covered {out[-1].covered:.2f}")
  return out


# --------------------------------------------------------------------------------------
# Outputs and the run.
# --------------------------------------------------------------------------------------


def analyse(named_results, config) -> dict:
  """Success probabilities at every epsilon, copies needed, the log-law fits and the
  per-(target, method) summary at ``config.sweep.epsilon`` (``lth_jax.report.tables``)."""
  epsilons = sorted(set(tuple(config.sweep.epsilons)) | {config.sweep.epsilon}, reverse=True)
  copies = tables.copies_rows(named_results, epsilons)
  return dict(success=tables.success_rows(named_results, epsilons), copies=copies,
              fits=tables.log_law_fits(copies),
              summary=tables.summary_rows(named_results, config.sweep.epsilon))


def _write_sweep(out, named_results, rows, analysis, text, config) -> list[pathlib.Path]:
  """results.jsonl, success.jsonl, copies.jsonl, summary.json, tables.txt and the sweep
  figures; every row and summary.json carry the config."""
  cfg = files_lib.to_jsonable(config)
  eps = config.sweep.epsilon
  summary = analysis["summary"]
  written = [files_lib.write_jsonl(out / "results.jsonl", rows),
             files_lib.write_jsonl(out / "success.jsonl",
                                   [dict(r, config=cfg) for r in analysis["success"]]),
             files_lib.write_jsonl(out / "copies.jsonl",
                                   [dict(r, config=cfg) for r in analysis["copies"]]),
             files_lib.atomic_write_text(out / "summary.json", json.dumps(
                 files_lib.to_jsonable(dict(config=cfg, summary=summary,
                                            copies=analysis["copies"], fits=analysis["fits"])),
                 indent=1, sort_keys=True)),
             files_lib.atomic_write_text(out / "tables.txt", "\n\n".join(text.values()) + "\n")]
  figures.close(figures.plot_error_vs_copies(named_results, out / "error_vs_copies.png", eps))
  written.append(out / "error_vs_copies.png")
  figures.close(figures.plot_success_vs_copies(analysis["success"], eps,
                                               out / "success_vs_copies.png"))
  written.append(out / "success_vs_copies.png")
  # Level 0.5: the median seed; level 0.9 needs a fine width grid (step 8 puts most
  # points on the last two widths; the paper preset's step is 4).
  for level, name in ((0.5, "log_law.png"), (0.9, "log_law_0.9.png")):
    figures.close(figures.plot_log_law(analysis["copies"], analysis["fits"], out / name,
                                       level=level))
    written.append(out / name)
  single_layer = [(n, r) for n, r in named_results
                  if len(next(iter(r.values())).layer_sizes) == 2]
  figures.close(figures.plot_overparam_vs_d(
      single_layer, [s for s in summary if len(s["layer_sizes"]) == 2], eps,
      out / "overparam_vs_d.png"))
  written.append(out / "overparam_vs_d.png")
  return written


def _write_lueker(out, coverage, config) -> list[pathlib.Path]:
  """lueker.jsonl and lueker.png."""
  cfg = files_lib.to_jsonable(config)
  rows = [dict(kind=c.kind, n=c.n, epsilon=c.epsilon, trials=c.trials, spacing=c.spacing,
               covered=c.covered, covered_upper=c.covered_upper,
               reference=lueker.REFERENCE.get(c.kind, {}).get(c.n), config=cfg)
          for c in coverage]
  written = [files_lib.write_jsonl(out / "lueker.jsonl", rows)]
  fig = figures.plot_lueker_check(coverage, config.lueker.epsilon, out / "lueker.png")
  figures.close(fig)
  written.append(out / "lueker.png")
  return written


def run_experiment(config, out_dir, overwrite: bool = False) -> dict:
  """Runs the sweep (and Lueker check) of ``config`` and writes into ``out_dir``:
  ``results.jsonl`` (one row per target x method x width x seed, each with the config),
  ``success.jsonl`` (P(sup error <= eps) with its Wilson interval per target x method x
  eps x width), ``copies.jsonl`` (copies needed for success >= 0.5 / 0.9 per target x
  method x eps), ``summary.json`` (the config, copies needed vs theory, the log-law fits),
  ``tables.txt``, ``lueker.jsonl``, the PNG figures ``success_vs_copies.png``,
  ``log_law.png`` (level 0.5), ``log_law_0.9.png``, ``error_vs_copies.png``,
  ``overparam_vs_d.png``, ``lueker.png``, first
  ``run.json`` (the settings) and last ``done.json`` (the marker of a finished run: a
  directory with ``run.json`` but without it holds a killed or failed run, which a rerun of
  the same config resumes: every target's grid and Lueker job is saved as it finishes,
  ``targets/*.npz``, ``lueker/*.npz``, ``run.sweep_store``; other settings are refused).

  ``config.devices.shard``: every grid's seeds split over all devices
  (``sharding.make_instance_mesh``); ``config.devices.distributed``: first
  ``jax.distributed.initialize()`` (multi-host; implies ``shard``; arguments from the cluster
  or ``config.devices.coordinator_address`` etc.). Every process computes everything (the
  sharded programs need all of them); only process 0 prepares ``out_dir`` and writes files.

  Returns:
    a dict with ``results`` ([(name, {method: SweepResult})]), ``summary``, ``analysis``
    (``analyse``), ``lueker``,
    ``tables`` (text), ``files`` (those written by this process), ``seconds``, ``out_dir``
    and ``primary`` (whether this process wrote them).
  """
  validate_config(config)
  devices = common.device_settings(config)
  primary = common.set_up_devices(devices)  # before anything touches a device
  splits = _datasets(config)
  # run.json marks the directory as this run's, done.json as finished: a killed run of the
  # same config resumes (finished targets and Lueker jobs are loaded, sweep_store); other
  # settings are refused. Multi-host runs do not resume (every process must agree).
  fingerprint = config.to_dict()
  resumable = jax.process_count() == 1
  out = (files_lib.prepare_out_dir(out_dir, overwrite, fingerprint=fingerprint,
                                   resumable=resumable)[0] if primary
         else pathlib.Path(out_dir).expanduser())
  store = (out, fingerprint) if primary and resumable else None
  t0 = time.perf_counter()
  mesh = None
  if devices.shard:
    mesh = sharding.make_instance_mesh()
    logging.info("sweep: seeds split over %d devices (%d process(es))",
                 sharding.num_devices(mesh), jax.process_count())
  named_results, rows = _run_sweeps(config, mesh, splits, store)
  written, text = ([out / files_lib.RUN_FILE] if primary else []), {}
  analysis = analyse(named_results, config) if named_results else {}
  summary = analysis.get("summary", [])
  if named_results:
    text["success"] = tables.format_success_table(analysis["success"], config.sweep.epsilon)
    text["log_law"] = tables.format_log_law_table(analysis["copies"], analysis["fits"])
    text["summary"] = tables.format_summary_table(summary)
    if config.sweep.constructions_table:
      text["constructions"] = tables.format_constructions_table(summary)
    if primary:
      written += _write_sweep(out, named_results, rows, analysis, text, config)
  coverage = []
  if config.lueker.trials:
    # Every process runs it (unsharded), so all of them reach the end together.
    coverage = run_lueker(config, progress=primary, store=store)
    text["lueker"] = tables.format_lueker_table(coverage)
    if primary:
      written += _write_lueker(out, coverage, config)
  seconds = time.perf_counter() - t0
  if store:  # the saved pieces (sweep_store)
    written += [out / d for d in (sweep_store.TARGETS_DIR, sweep_store.LUEKER_DIR)
                if (out / d).is_dir()]
  if primary:  # last: its presence says every other file is complete
    written.append(files_lib.mark_done(out, dict(
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=seconds,
        files=sorted(pathlib.Path(f).name for f in written), preset=config.preset,
        devices=jax.device_count(), processes=jax.process_count(), sharded=devices.shard)))
  return dict(results=named_results, summary=summary, analysis=analysis, lueker=coverage,
              tables=text,
              files=[str(f) for f in written], seconds=seconds, out_dir=str(out),
              primary=primary)
