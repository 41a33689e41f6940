"""Experiment 1: approximate EVERY weight of a trained target by exact SubsetSum.

The paper's Table (Pensia et al. 2020, Experiment 1; SPEC section 5): a bias-free FC2
(784-500-10) is trained, each of its 397,000 weights is replaced by a subset sum of random
values, and the approximation is evaluated. One row per (variant, objective):

* variants: ``"direct"`` (the official code's shortcut: ``n`` i.i.d. ``U[low, high]``
  coefficients per output row, reused along the row; no network; for LeNet5 too, whose
  conv kernels ``(kh, kw, in, out)`` count as ``(kh * kw * in, out)`` matrices, one row
  per output channel; ``find_ticket(..., "direct")`` with ``objectives.blocked_solver``)
  and ``"network"`` (Theorem 1: a depth-``2l`` random ReLU network pruned by two SubsetSum
  problems per weight; for LeNet5 the random CNN of ``constructions.conv``, for an MLP
  with biases (``target.use_bias``, preset ``fc2_bias``, or an npz with nonzero biases) the
  ``"bias"`` construction (the same network plus bias units, every bias one more SubsetSum
  instance; the statistics count the biases), for LeNet5 with biases (``lenet5_bias``) the
  conv construction with its bias channels; the row's ``construction`` says which. Sized
  by ``sizing.search_copies`` (on the weights), evaluated as that pruned
  network through its ``structured_forward`` and checked against the literal dense masked
  network on a small batch, ``evaluation.dense_check``);
* ``"lplus1"`` (MLP targets; Burkholz 2022's depth-``L+1`` network, ``lplus1.copies`` per
  input, evaluated as that pruned network; refused above ``lplus1.max_random_params``);
* objectives: ``"min_error"`` (``solve_subset_sum``: the subset closest to the weight) and
  ``"fewest_terms"`` (``solve_fewest_terms``: among subsets within epsilon, the fewest
  terms; where none is within epsilon, the closest one).

The ticket's test accuracy is always its OWN forward pass (approximated kernels for
``"direct"``, the pruned random network for ``"network"``), never the target's. Weights
whose error exceeds epsilon are counted and reported, never fatal.

Driver (run stage): config in (checked by ``experiment1_checks.validate_config``),
``results.jsonl`` and ``table.txt`` out; ``experiments/subset_sum.py`` only parses flags and
calls ``run_experiment1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lth_jax import checkpoints
from lth_jax import construction
from lth_jax import constructions
from lth_jax import data as data_lib
from lth_jax import evaluation
from lth_jax import files
from lth_jax import models
from lth_jax import objectives
from lth_jax import sizing
from lth_jax import targets as targets_lib
from lth_jax import training
from lth_jax.constructions import bias as bias_lib
from lth_jax.constructions import conv
from lth_jax.constructions import direct
from lth_jax.constructions import lplus1
from lth_jax.progress import Progress
from lth_jax.report import tables
from lth_jax.run import experiment1_checks as checks
from lth_jax.run.common import ConfigError, peak_rss_mb

__all__ = [
    "PAPER_FC2_DIRECT", "RESULTS_FILE", "TABLE_FILE", "load_target", "target_checkpoint_dir",
    "peak_rss_mb", "run_experiment1",
]

RESULTS_FILE = "results.jsonl"
TABLE_FILE = "table.txt"

# The official run (subset-sum/results/paper/fc2_approx.out): FC2 on MNIST, n = 21, one
# Gurobi MIP per weight.
PAPER_FC2_DIRECT = dict(initial_params=8_337_000, remaining_params=3_725_871,
                        remaining_ratio=9.39, target_params=397_000, fraction_within_eps=1.0,
                        target_accuracy=0.9719, solve_seconds=77_266.02,
                        solver="Gurobi MIP per weight, MIPGap 0.01, 36 cores")


# --------------------------------------------------------------------------------------
# The target and the test set.
# --------------------------------------------------------------------------------------


def _target_run_name(config) -> str:
  """Checkpoint subdirectory: readable, plus a hash of everything that trains the target."""
  t = config.target
  model = t.model if t.model != "mlp" else "mlp" + "-".join(str(w) for w in t.widths)
  spec = dict(model=model, dataset=config.dataset, epochs=t.epochs, lr=t.learning_rate,
              batch_size=t.batch_size, momentum=t.momentum, weight_decay=t.weight_decay,
              seed=t.seed)
  if t.use_bias:  # only when set: bias-free targets keep their directories
    spec["use_bias"] = True
    model += "-bias"
  digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
  return f"{model}_{config.dataset}_e{t.epochs}_lr{t.learning_rate:g}_s{t.seed}_{digest}"


def target_checkpoint_dir(config: ml_collections.ConfigDict, workdir: str | None = None
                          ) -> str:
  """The orbax checkpoint directory of ``config``'s trained target (absolute):
  ``<config.target.checkpoint_dir or workdir/targets>/<run name + hash of the training
  settings>``, so different targets never share one and the same one is always found."""
  base = config.target.checkpoint_dir or os.path.join(workdir or ".", "targets")
  return os.path.abspath(os.path.join(os.path.expanduser(base), _target_run_name(config)))


def _data_dir(config) -> str | None:
  """The directory the dataset is read from (None: the dataset's default, or no files)."""
  return os.path.expanduser(config.data_dir) if config.data_dir else None


def load_target(config: ml_collections.ConfigDict, *, workdir: str | None = None,
                train: bool = True) -> tuple[list[jax.Array], dict]:
  """The target's kernels and a description of where they came from.

  ``config.target.npz`` set: imported (``targets.load_npz_target``). Otherwise the model is
  restored from its orbax checkpoint in ``target_checkpoint_dir(config, workdir)`` if
  finished there, else trained there (``load_or_train_target``); with ``train=False`` a
  missing checkpoint raises FileNotFoundError instead.

  Returns:
    kernels ``[(d_in, d_out)]`` for MLPs; for LeNet5 all five kernels
    (``models.LENET5_KERNEL_SHAPES``: conv ``(kh, kw, in, out)``, then FC), and the info.
    Layers with biases (``target.use_bias``, or an npz with nonzero biases) are
    ``{"kernel", "bias"}`` dicts (``targets.split_layers``).
  """
  t = config.target
  if t.npz:
    kernels = targets_lib.load_npz_target(os.path.expanduser(t.npz), t.npz_layout)
    return kernels, dict(source="npz", path=os.path.abspath(os.path.expanduser(t.npz)),
                         layout=t.npz_layout)
  model = (models.get_model(t.model, t.use_bias) if t.model != "mlp"
           else models.MLP(tuple(t.widths), use_bias=t.use_bias))
  ckpt = target_checkpoint_dir(config, workdir)
  checkpoints.check_restorable(ckpt)  # garbage there: one line, not a KeyError from orbax
  t0 = time.perf_counter()
  params, metrics = training.load_or_train_target(
      model, checkpoint_dir=ckpt, key=jax.random.PRNGKey(t.seed), epochs=t.epochs,
      learning_rate=t.learning_rate, dataset=config.dataset, data_dir=_data_dir(config),
      batch_size=t.batch_size, momentum=t.momentum, weight_decay=t.weight_decay,
      train=train)
  kernels = jax.tree.map(lambda k: jnp.asarray(k, jnp.float32),
                         models.kernels_from_params(params))
  return kernels, dict(source="checkpoint" if metrics.get("restored") else "trained",
                       checkpoint_dir=ckpt, epochs=t.epochs, learning_rate=t.learning_rate,
                       batch_size=t.batch_size, seconds=time.perf_counter() - t0,
                       train_history=metrics.get("history"))


def _test_set(config) -> data_lib.Dataset:
  return data_lib.load_dataset(config.dataset, "test", _data_dir(config),
                               limit=config.test_limit or None)


# --------------------------------------------------------------------------------------
# Accuracy and measurements.
# --------------------------------------------------------------------------------------


def _kernels_accuracy(kernels, dataset: data_lib.Dataset, batch_size: int) -> float:
  """Test accuracy of the bias-free network with these kernels: the ReLU MLP for
  ``(d_in, d_out)`` kernels, LeNet5 (convs, pools, FC head) for LeNet5's kernels."""
  model = models.model_from_kernels(kernels)
  return training.accuracy_of(model.apply, (models.params_from_kernels(kernels),),
                              dataset.images, dataset.labels, batch_size)


# --------------------------------------------------------------------------------------
# The run: prepare, one row per variant x objective, write.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
  """What every row of one run shares."""

  config: ml_collections.ConfigDict
  out_dir: str
  test_ds: data_lib.Dataset
  kernels: list  # the target's kernels
  sizes: tuple | None  # MLP layer sizes (None for LeNet5)
  common: dict  # the fields every row carries
  rows: list = dataclasses.field(default_factory=list)

  @property
  def epsilon(self) -> float:
    return float(self.config.epsilon)

  @property
  def objectives(self) -> tuple[str, ...]:
    return checks.names(self.config.objectives)


def _target_error(config, why: str) -> ValueError:
  """A target that does not fit the data: names the npz file's flag when it is imported."""
  if config.target.npz:
    return ConfigError("target.npz", f"{config.target.npz}: {why}")
  return ValueError(why)


def _check_target_fits(config, kernels, test_ds) -> tuple | None:
  """The target's layer sizes (None for LeNet5), after checking that it reads the test
  images and that the network variant can run on it (before any solving)."""
  is_mlp = all(k.ndim == 2 for k in targets_lib.split_layers(kernels)[0])
  if targets_lib.has_biases(kernels) and "direct" in checks.names(config.variants):
    raise _target_error(config, "the target has non-zero biases and the direct variant "
                        "builds none: run the network variant only (variants=('network',))")
  sizes = None
  if is_mlp:
    sizes = targets_lib.target_layer_sizes(kernels)
    if sizes[0] != int(np.prod(test_ds.images.shape[1:])):
      raise _target_error(config, f"target input size {sizes[0]} does not match "
                          f"{config.dataset}'s {int(np.prod(test_ds.images.shape[1:]))} pixels")
  elif test_ds.images.shape[1:] != (*data_lib.IMAGE_SHAPE, 1):  # LeNet5 fixes its input
    raise _target_error(config, f"LeNet5 needs (28, 28, 1) images, {config.dataset} has "
                        f"{test_ds.images.shape[1:]}")
  if "lplus1" in checks.names(config.variants):
    if not is_mlp or targets_lib.has_biases(kernels):
      raise ConfigError("variants", "the lplus1 variant is for bias-free MLP targets only")
    why = checks.lplus1_size_error(sizes, config.lplus1.copies,
                                   config.lplus1.max_random_params)
    if why:  # an npz target (a trained model's sizes are checked before training)
      raise _target_error(config, why)
  if "network" in checks.names(config.variants):
    try:
      sizing.layer_caps(config.network.max_half, len(kernels))
    except ValueError as e:
      raise ConfigError("network.max_half", str(e)) from None
  return sizes


def _common_fields(config, kernels, sizes, target_info, test_ds) -> dict:
  """The target's measurements (accuracy included) and the config, shared by every row."""
  # every parameter: the kernels and the biases of biased layers
  target_params = sum(int(k.size) for k in jax.tree.leaves(kernels))
  all_w = np.concatenate([np.asarray(k).reshape(-1) for k in jax.tree.leaves(kernels)])
  t0 = time.perf_counter()
  target_acc = _kernels_accuracy(kernels, test_ds, config.eval_batch_size)
  logging.info("target %s: layer sizes %s, %d weights in [%.4f, %.4f], test accuracy %.4f "
               "(%d examples, %.1f s)", target_info["source"],
               sizes or [tuple(k.shape) for k in targets_lib.split_layers(kernels)[0]],
               target_params,
               all_w.min(), all_w.max(), target_acc, len(test_ds.labels),
               time.perf_counter() - t0)
  return dict(model=config.target.model if not config.target.npz else "npz",
              layer_sizes=list(sizes) if sizes else None,
              kernel_shapes=[list(k.shape) for k in targets_lib.split_layers(kernels)[0]],
              target_has_biases=targets_lib.has_biases(kernels), dataset=config.dataset,
              test_examples=len(test_ds.labels), epsilon=float(config.epsilon),
              target_params=target_params,
              target_weight_range=[float(all_w.min()), float(all_w.max())],
              target_accuracy=target_acc, target=target_info, config=config.to_dict())


def _prepare(config, out_dir: str, overwrite: bool) -> _Run:
  """Validates, loads the test set (and an npz target), readies ``out_dir``, then loads or
  trains the target. Bad input fails before ``out_dir`` is touched; an unusable
  ``out_dir`` fails before the expensive work (training)."""
  checks.validate_config(config)
  if config.download:  # opt-in; before out_dir is touched, so a failed fetch leaves nothing
    data_lib.resolve_data_dir(config.dataset, _data_dir(config), download=True,
                              base_url=config.download_url or None)
  test_ds = _test_set(config)
  if config.target.npz:
    try:
      kernels, target_info = load_target(config)
    except ValueError as e:  # not an npz, NaN, biases, shapes: name the flag and the file
      raise ConfigError("target.npz", str(e)) from None
    sizes = _check_target_fits(config, kernels, test_ds)
  # run.json marks the directory as this run's; done.json (mark_done) as finished. A killed
  # run is refused as unfinished (no resume: --overwrite starts it again).
  files.prepare_out_dir(out_dir, overwrite, fingerprint=config.to_dict(), resumable=False)
  if not config.target.npz:
    kernels, target_info = load_target(config, workdir=out_dir)
    sizes = _check_target_fits(config, kernels, test_ds)
  common = _common_fields(config, kernels, sizes, target_info, test_ds)
  return _Run(config, out_dir, test_ds, kernels, sizes, common)


def _add_row(run: _Run, row: dict, ticket, solve_seconds: float, evaluate) -> None:
  """Measures ``ticket`` into ``row``, appends it and rewrites ``results.jsonl``."""
  target_params = run.common["target_params"]
  t_eval = time.perf_counter()
  row.update(evaluate())
  row["eval_seconds"] = time.perf_counter() - t_eval
  row.update(evaluation.ticket_error_stats(ticket, run.epsilon))
  row.update(solve_seconds=solve_seconds, remaining_params=int(ticket.num_params_kept),
             initial_params=int(ticket.num_params_random),
             remaining_ratio=int(ticket.num_params_kept) / target_params,
             initial_ratio=int(ticket.num_params_random) / target_params,
             peak_rss_mb=peak_rss_mb(), **run.common)
  files.check_finite_rows([row], [k for k, v in row.items() if isinstance(v, float)])
  run.rows.append(row)
  files.write_jsonl(os.path.join(run.out_dir, RESULTS_FILE), run.rows)
  logging.info("%s/%s: %d of %d weights within eps (worst error %.3g), remaining %d "
               "params (%.2fx target), ticket accuracy %.4f (target %.4f), solve %.1f s",
               row["variant"], row["objective"], target_params - row["weights_missing_eps"],
               target_params, row["max_weight_error"], row["remaining_params"],
               row["remaining_ratio"], row["ticket_accuracy"],
               run.common["target_accuracy"], solve_seconds)


def _direct_rows(run: _Run) -> None:
  config = run.config
  n = int(config.direct.copies)
  # Key fold_in(seed, 1), the target's global weight range (bench_experiment1 draws alike).
  coefs = direct.sample_direct_coefficients(
      jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), run.kernels, n)
  for objective in run.objectives:
    t0 = time.perf_counter()
    progress = Progress(run.common["target_params"], what=f"direct/{objective}",
                        unit="instances")
    solve_fn = objectives.blocked_solver(objective, run.epsilon, config.solver.block_keys,
                                         progress)
    ticket = construction.find_ticket(coefs, run.kernels, "direct", solve_fn=solve_fn)
    jax.block_until_ready(ticket)
    solve = time.perf_counter() - t0
    row = dict(variant="direct", objective=objective, copies=n,
               coefficient_range=[float(coefs.low), float(coefs.high)])
    if run.sizes == (784, 500, 10):  # the paper's FC2
      row["paper"] = PAPER_FC2_DIRECT
    _add_row(run, row, ticket, solve, lambda t=ticket: dict(ticket_accuracy=_kernels_accuracy(
        t.effective_kernels, run.test_ds, config.eval_batch_size)))


def _construction_for(kernels) -> str:
  """The 2L construction the ``network`` variant uses: ``conv`` (the random CNN of
  ``constructions.conv``) for targets with conv kernels, ``bias`` (network plus bias units)
  for MLPs with biases, else ``network`` (Theorem 1)."""
  if any(jnp.ndim(k) == 4 for k in targets_lib.split_layers(kernels)[0]):
    return "conv"
  return "bias" if targets_lib.has_biases(kernels) else "network"


def _network_evaluation(run: _Run, net, ticket, nc=None) -> dict:
  nc, images = nc or run.config.network, run.test_ds.images
  # The pruned random network's own forward (structured view): on the images for the random
  # CNN, flattened for an MLP.
  if ticket.method != "conv":
    images = images.reshape(len(images), -1)
  out = dict(ticket_accuracy=training.accuracy_of(
      constructions.get(ticket.method).structured_forward, (net, ticket.masks), images,
      run.test_ds.labels, run.config.eval_batch_size))
  if nc["dense_check_batch"]:
    diff = evaluation.dense_check(net, ticket, images[:nc["dense_check_batch"]])
    if not diff <= 1e-4:
      logging.error("structured and dense forward passes differ: rel. diff %.3g", diff)
    out["dense_check_rel_diff"] = diff
  else:
    out["dense_check_rel_diff"] = None
  return out


def _network_rows(run: _Run) -> None:
  config, nc = run.config, run.config.network
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
  method = _construction_for(run.kernels)
  # Copies are searched on the weights (the bias instances are few and small).
  search = sizing.search_copies(
      key, targets_lib.split_layers(run.kernels)[0], nc.copies,
      epsilon=run.epsilon, max_half=sizing.layer_caps(nc.max_half, len(run.kernels)),
      distribution=nc.distribution,
      max_instance=min(objectives.objective_max_n(o) for o in run.objectives),
      block_keys=config.solver.block_keys, method=method)
  net, bias_units = search.net, int(targets_lib.has_biases(run.kernels))
  if bias_units:  # n bias units (bias) or bias channels (conv) per layer beside the copies
    attach = conv.attach if method == "conv" else bias_lib.attach
    net = attach(net, jax.random.fold_in(key, 3))
  shapes = [tuple(k.shape) for k in targets_lib.split_layers(run.kernels)[0]]
  logging.info("network (%s): copies per layer %s (max_half %s), search %.1f s", method,
               search.copies, search.max_half, search.seconds)
  for objective in run.objectives:
    t0 = time.perf_counter()
    ticket = sizing.network_ticket(net, run.kernels, objective=objective, epsilon=run.epsilon,
                                   max_half=list(search.max_half),
                                   block_keys=config.solver.block_keys, method=method)
    jax.block_until_ready(ticket)
    solve = time.perf_counter() - t0
    row = dict(variant="network", construction=method, objective=objective,
               copies=list(search.copies), max_half=list(search.max_half),
               distribution=nc.distribution,
               hidden_widths=[c * (s[-2] + bias_units) for c, s in zip(search.copies, shapes)],
               copies_search=search.log, search_seconds=search.seconds)
    _add_row(run, row, ticket, solve,
             lambda t=ticket: _network_evaluation(run, net, t))


def _lplus1_rows(run: _Run) -> None:
  """Burkholz 2022's depth-L+1 ticket (``constructions.lplus1``) at ``lplus1.copies`` per
  input, every layer; evaluated as that pruned network (structured view, dense check).
  Refused above ``lplus1.max_random_params``: its random layers grow like copies^2
  (FC2 at 40 copies: 6.5e8 parameters, 3.1e7 SubsetSum instances)."""
  config, lc = run.config, run.config.lplus1
  net = lplus1.sample(jax.random.fold_in(jax.random.PRNGKey(config.seed), 4), run.kernels,
                      lc.copies, distribution=lc.distribution)
  cap = lc.max_half or None
  for objective in run.objectives:
    t0 = time.perf_counter()
    solve_fn = objectives.blocked_solver(objective, run.epsilon, config.solver.block_keys)
    ticket = construction.find_ticket(net, run.kernels, "lplus1", max_half=cap,
                                      solve_fn=solve_fn)
    jax.block_until_ready(ticket)
    solve = time.perf_counter() - t0
    row = dict(variant="lplus1", construction="lplus1", objective=objective,
               copies=int(lc.copies), max_half=lplus1.instance_size(lc.copies, cap),
               distribution=lc.distribution, depth=lplus1.depth(len(run.kernels)))
    check = dict(dense_check_batch=lc.dense_check_batch)
    _add_row(run, row, ticket, solve,
             lambda t=ticket: _network_evaluation(run, net, t, check))


def run_experiment1(config: ml_collections.ConfigDict, out_dir: str, *,
                    overwrite: bool = False) -> list[dict]:
  """Runs Experiment 1 and writes ``results.jsonl`` (one row per variant x objective,
  rewritten atomically after each row), ``table.txt`` and, last, ``done.json`` to
  ``out_dir``.

  Raises FileExistsError if ``out_dir`` is a non-empty directory and not ``overwrite``
  (with ``overwrite`` it is emptied first): a killed run's directory (``run.json`` without
  ``done.json``) is refused as unfinished.
  Returns the rows (dicts; see ``report.tables.format_experiment1_table`` for the columns).
  """
  run = _prepare(config, out_dir, overwrite)
  variants = checks.names(config.variants)
  if "direct" in variants:
    _direct_rows(run)
  if "network" in variants:
    _network_rows(run)
  if "lplus1" in variants:
    _lplus1_rows(run)
  table = tables.format_experiment1_table(run.rows)
  files.atomic_write_text(os.path.join(out_dir, TABLE_FILE), table + "\n")
  files.mark_done(out_dir, dict(rows=len(run.rows)))
  print(table, flush=True)
  return run.rows
