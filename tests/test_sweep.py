"""Sweeps as one XLA program: one trace, equality with find_ticket, sane measurements,
parameter counts. (The summary table: test_report.py; the driver and entry point:
test_run_sweep.py; the flag loader: test_run_flags.py.)"""

import importlib
import json

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
from lth_jax import subset_sum
from lth_jax import targets as targets_lib
from lth_jax.configs import sweep as sweep_configs
from lth_jax.constructions import direct
from lth_jax.run import sweep as run_sweep

# The module (lth_jax.sweep is also the name of the re-exported sweep() function).
sweep_lib = importlib.import_module("lth_jax.sweep")

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
      full = direct.sample_direct_coefficients(jax.random.fold_in(seed_key, 1), target,
                                                     widest, nested=True)
      coefs = direct.sample_direct_coefficients(jax.random.fold_in(seed_key, 1), target,
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


def test_targets_run_alone_with_their_ids_reproduce_the_joint_sweep():
  """A resumed sweep runs the missing targets alone with ``target_ids``: each draws what it
  draws among all targets, and two targets of one shape share one compiled program."""
  key = jax.random.key(5)
  targets = [targets_lib.random_target(jax.random.key(i), (2, 2)) for i in range(2)]
  kwargs = dict(FAST, key=key, num_points=8, ascent_steps=1)
  joint = sweep_lib.sweep_targets(targets, (2, 4), 2, ("network",), **kwargs)
  before = grid_program.TRACE_COUNTS["grid_program"]
  alone = [sweep_lib.sweep_targets([t], (2, 4), 2, ("network",), target_ids=[i], **kwargs)[0]
           for i, t in enumerate(targets)]
  assert grid_program.TRACE_COUNTS["grid_program"] - before == 1
  for a, j in zip(alone, joint):
    for field in ("max_weight_error", "sup_error", "params_kept"):
      np.testing.assert_array_equal(getattr(a["network"], field), getattr(j["network"], field))
  with pytest.raises(ValueError, match="target_ids must be 1 distinct"):
    sweep_lib.sweep_targets(targets[:1], (2, 4), 2, ("network",), target_ids=[0, 1], **kwargs)
