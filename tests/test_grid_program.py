"""The grid program: one trace and one solver call per grid, driven by the registry (a
construction registered at run time sweeps with no other code)."""

import dataclasses
import importlib

import chex
import jax
import numpy as np
import pytest

from lth_jax import construction
from lth_jax import grid_program
from lth_jax import subset_sum
from lth_jax import targets as targets_lib
from lth_jax.configs import sweep as sweep_configs
from lth_jax.constructions import base
from lth_jax.constructions import direct
from lth_jax.constructions import network
from lth_jax.run import sweep as run_sweep

sweep_lib = importlib.import_module("lth_jax.sweep")

STATIC = ("specs", "num_seeds", "opts")
FAST = dict(num_points=64, ascent_steps=5,
            compiler_options={"xla_backend_optimization_level": 0})


def test_whole_grid_is_one_trace_and_one_solver_call(monkeypatch):
  calls = []
  real_solve = subset_sum.solve_subset_sum

  def counting_solve(*args, **kwargs):
    calls.append(args[1].shape)
    return real_solve(*args, **kwargs)

  monkeypatch.setattr(subset_sum, "solve_subset_sum", counting_solve)
  program = jax.jit(chex.assert_max_traces(grid_program.grid_program.__wrapped__, n=1),
                    static_argnames=STATIC, compiler_options=FAST["compiler_options"])
  monkeypatch.setattr(grid_program, "grid_program", program)
  target = targets_lib.random_target(jax.random.key(0), (3, 4, 2))
  before = grid_program.TRACE_COUNTS["grid_program"]
  kw = dict(num_points=16, ascent_steps=2)  # no compiler_options: use the patched program
  first = sweep_lib.sweep(target, (2, 3, 5), 2, "network", key=jax.random.key(0), **kw)
  # Same shapes, another key: the compiled program is reused (assert_max_traces would raise).
  second = sweep_lib.sweep(target, (2, 3, 5), 2, "network", key=jax.random.key(1), **kw)
  assert grid_program.TRACE_COUNTS["grid_program"] - before == 1
  assert program._cache_size() == 1
  # Both layers' instances of all 3 widths x 2 seeds went to ONE solver call.
  m = network.default_max_half(5)
  assert calls == [(3 * 2 * 2 * (3 * 4 + 4 * 2), m + m % 2)]
  assert first.max_weight_error.shape == (3, 2)
  assert not np.array_equal(first.max_weight_error, second.max_weight_error)


def test_multi_target_all_methods_grid_with_entry_point_options_is_one_compile(monkeypatch):
  """The entry point's path: sweep_kwargs(config) (compiler options from xla_opt_level) and
  several targets x every method, still one trace, one executable, one solver call."""
  config = sweep_configs.get_config("quick")
  config.sweep.num_points, config.sweep.ascent_steps = 16, 2  # tiny; same code path
  kwargs = run_sweep.sweep_kwargs(config)
  assert kwargs["compiler_options"] == {"xla_backend_optimization_level": 0}
  calls = []
  real_solve = subset_sum.solve_subset_sum

  def counting_solve(*args, **kw):
    calls.append(args[1].shape)
    return real_solve(*args, **kw)

  monkeypatch.setattr(subset_sum, "solve_subset_sum", counting_solve)
  targets = [targets_lib.random_target(jax.random.key(i), s)
             for i, s in enumerate(((3, 3), (2, 3, 2)))]  # one layer, two layers
  widths = {"network": (2, 4), "single": (2, 4), "direct": (2, 4), "lplus1": (2, 4),
            "conv": (2, 4), "bias": (2, 4)}
  program = grid_program.program_with_options(
      tuple(sorted(kwargs["compiler_options"].items())))
  traces, compiled = grid_program.TRACE_COUNTS["grid_program"], program._cache_size()
  first = sweep_lib.sweep_targets(targets, widths, 2, construction.METHODS, **kwargs)
  kwargs["key"] = jax.random.key(5)  # new randomness, same shapes: no retrace
  second = sweep_lib.sweep_targets(targets, widths, 2, construction.METHODS, **kwargs)
  assert grid_program.TRACE_COUNTS["grid_program"] - traces == 1
  assert program._cache_size() - compiled == 1
  # Every target's network, conv and bias halves (default_max_half(4) = 3, padded to 4;
  # conv on an MLP target is network's construction), direct instances (4 coefficients)
  # and bias's per-output bias instances (size 3) share ONE call: widths x seeds x
  # ((2 + 2 + 2 + 1) per weight + 1 per output unit).
  weights = 3 * 3 + (2 * 3 + 3 * 2)
  outputs = 3 + (3 + 2)
  # lplus1 (drawn at width 4): 2 halves per weight of a first layer with one output copy
  # (3-3), and for 2-3-2 4 output copies x 2 halves per first-layer weight + 1 per
  # output-layer weight.
  lplus1 = 2 * (3 * 3) + (4 * 2 * 2 * 3 + 3 * 2)
  assert calls == [(2 * 2 * (7 * weights + outputs + lplus1), 4)]
  for a, b in zip(first, second):
    assert set(a) == set(construction.METHODS)
    # no bound where the analytic bound does not hold (lplus1), a finite one elsewhere
    assert all((a[m].bound is None) == (m == "lplus1") for m in a)
    assert not np.array_equal(a["network"].sup_error, b["network"].sup_error)


def test_a_construction_registered_at_run_time_sweeps_without_other_code(monkeypatch):
  """A new name on direct's functions and stream: the grid samples its stream once (shared
  with "direct") and gives exactly direct's measurements."""
  copy = dataclasses.replace(direct.DIRECT, name="direct_copy")
  monkeypatch.setitem(base._REGISTRY, "direct_copy", copy)
  target = targets_lib.random_target(jax.random.key(2), (3, 4, 2))
  res = sweep_lib.sweep_targets([target], (2, 5), 2, ("direct", "direct_copy"),
                                key=jax.random.key(0), **FAST)[0]
  for field in ("max_weight_error", "mean_weight_error", "sup_error", "bound", "params_kept",
                "params_random", "width_factor"):
    np.testing.assert_array_equal(getattr(res["direct"], field), getattr(res["direct_copy"], field))


def test_grid_spec_reads_instance_sizes_from_the_registry():
  spec = grid_program.grid_spec(0, "network", (2, 9, 16), None)
  assert spec.caps == tuple(network.default_max_half(w) for w in (2, 9, 16))
  assert spec.size == network.default_max_half(16)
  assert grid_program.grid_spec(0, "network", (2, 9), 4)[3:] == ((4, 4), 4)
  assert grid_program.grid_spec(1, "single", (2, 9), 4)[3:] == ((2, 9), 9)
  assert grid_program.grid_spec(1, "direct", (3, 7), None)[3:] == ((3, 7), 7)
  with pytest.raises(ValueError, match="method must be one of"):
    grid_program.grid_spec(0, "magic", (2,), None)
