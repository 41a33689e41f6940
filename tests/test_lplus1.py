"""lplus1 (Burkholz 2022, depth L+1): every instance's subset against brute-force
enumeration in float64, depth, parameter counts by formula, distributions. The interface
contract (nested draws, three forwards, pruning only, traced width) is in
test_constructions; the one-grid sweep with every method in test_grid_program."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import construction
from lth_jax import evaluation
from lth_jax import targets as targets_lib
from lth_jax.constructions import lplus1
from lth_jax.constructions import network

SIZES = (2, 3, 2, 2)
WIDTHS = (5, 4, 3)  # copies per input of each target layer


@pytest.fixture(scope="module")
def case():
  target = targets_lib.random_target(jax.random.key(0), SIZES)
  net = lplus1.sample(jax.random.key(1), target, WIDTHS)
  return target, net, construction.find_ticket(net, target, "lplus1")


def _best(target, values):
  """Smallest |target - sum(S)| over all subsets S of ``values`` (float64)."""
  return min(abs(target - sum(s)) for r in range(len(values) + 1)
             for s in itertools.combinations(values, r))


def _top(values, members, m):
  """The ``m`` members with the largest |value| (ties: lower index)."""
  return sorted(members, key=lambda k: (-abs(values[k]), k))[:m]


def test_every_instance_is_the_brute_force_optimum(case):
  """Per (weight, output copy, sign half) the kept entries' sum is the optimum over the
  instance's copies: products v u of one sign of u in layer 0, plain samples later."""
  target, net, ticket = case
  u = np.asarray(net.params["u"], np.float64)
  for i, (kernel, v, mv) in enumerate(zip(target, net.params["v"], ticket.masks["v"])):
    v, mv, w = np.asarray(v, np.float64), np.asarray(mv), np.asarray(kernel, np.float64)
    d_out, n_out, d_in, n_in = v.shape
    assert n_in == WIDTHS[i] and n_out == (WIDTHS[i + 1] if i + 1 < len(WIDTHS) else 1)
    m = network.default_max_half(n_in)
    worst = np.zeros((d_in, d_out))
    for o, p, j in itertools.product(range(d_out), range(n_out), range(d_in)):
      coef = v[o, p, j] * (u[j] if i == 0 else 1.0)
      halves = ([[k for k in range(n_in) if u[j, k] > 0], [k for k in range(n_in) if u[j, k] <= 0]]
                if i == 0 else [list(range(n_in))])
      in_some = set()
      for members in halves:
        slots = _top(coef, members, m)
        in_some |= set(slots)
        best = _best(w[j, o], [coef[k] for k in slots])
        kept = sum(coef[k] for k in slots if mv[o, p, j, k])
        assert abs(w[j, o] - kept) == pytest.approx(best, abs=3e-6)
        worst[j, o] = max(worst[j, o], abs(w[j, o] - kept))
      assert all(mv[o, p, j, k] == 0 for k in range(n_in) if k not in in_some)
    np.testing.assert_allclose(ticket.weight_errors[i], worst, atol=3e-6)
  # a copy-layer entry is kept exactly when layer 0 reads it
  np.testing.assert_array_equal(ticket.masks["u"],
                                np.any(np.asarray(ticket.masks["v"][0]), axis=(0, 1)))


def test_depth_and_parameter_counts_by_formula(case):
  """L + 1 dense kernels of the documented shapes, counts
  d_0 c_0 d_0 + sum_i c_i d_i n_out_i d_{i+1} (per-layer copies (5, 4, 3))."""
  target, net, ticket = case
  assert lplus1.widths(net) == WIDTHS
  ones = jax.tree.map(jnp.ones_like, ticket.masks)
  dense = lplus1.dense_params(net, ones)
  assert len(dense) == lplus1.depth(3) == 4
  assert [k.shape for k in dense] == [(2, 10), (10, 12), (12, 6), (6, 2)]
  shapes = tuple(k.shape for k in target)
  formula = 2 * 5 * 2 + (5 * 2) * (4 * 3) + (4 * 3) * (3 * 2) + (3 * 2) * (1 * 2)
  assert lplus1.num_params(shapes, WIDTHS) == formula == sum(k.size for k in dense)
  assert ticket.num_params_random == formula
  assert lplus1.width_factor(shapes, WIDTHS) == 12 / 3
  # one layer: the depth-2 network of "network" (same counts)
  one = ((4, 3),)
  assert lplus1.num_params(one, 6) == network.num_params(one, 6) and lplus1.depth(1) == 2


def test_distributions_are_honoured(case):
  target, uni, _ = case
  nor = lplus1.sample(jax.random.key(1), target, WIDTHS, distribution="normal")
  leaves = lambda n: np.concatenate([np.ravel(a) for a in jax.tree.leaves(n.params)])
  assert np.max(np.abs(leaves(uni))) <= 1.0 < np.max(np.abs(leaves(nor)))
  assert nor.distribution == "normal"
  with pytest.raises(ValueError, match="distribution"):
    lplus1.sample(jax.random.key(1), target, WIDTHS, distribution="cauchy")
  with pytest.raises(ValueError, match="LPlus1Network"):
    construction.find_ticket(uni, target, "network")


def test_experiment1_refuses_fc2_before_training_and_accepts_the_smoke_mlp():
  from lth_jax.configs import experiment1 as presets
  from lth_jax.run import experiment1_checks as checks
  from lth_jax.run.common import ConfigError
  config = presets.get_config("fc2")
  config.variants = ("lplus1",)
  with pytest.raises(ConfigError, match="lplus1.copies.*6.5[0-9]e\\+08 parameters"):
    checks.validate_config(config)
  smoke = presets.get_config("smoke")
  smoke.variants = ("direct", "lplus1")
  checks.validate_config(smoke)
  assert checks.lplus1_size_error((784, 32, 10), 24, 10**8) is None


def test_the_analytic_bound_is_not_claimed(case):
  """network's bound does not hold for L+1 (a copy's error is scaled by the next layer's
  chosen |v|): approximation_error reports NaN, never a false bound."""
  target, net, ticket = case
  assert not lplus1.LPLUS1.bounded and network.NETWORK.bounded
  report = evaluation.approximation_error(target, ticket, jax.random.key(2), 8, net=net,
                                          ascent_steps=1)
  assert np.isnan(float(report.bound)) and float(report.sup_error) >= 0
