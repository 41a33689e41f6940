"""The "bias" construction (network + bias units) on tiny biased targets: every weight and
bias error is the brute-force optimum (float64 enumeration), pruning only (biases included),
the three forwards agree with biases, bias-free layers cost nothing, and the error bound
with biases holds."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

from lth_jax import construction
from lth_jax import constructions
from lth_jax import evaluation
from lth_jax import targets as targets_lib
from lth_jax.constructions import bias as bias_lib
from lth_jax.constructions import network

SIZES = (3, 4, 2)
WIDTH = 8


@pytest.fixture(scope="module")
def case():
  kernels = targets_lib.random_target(jax.random.key(0), SIZES)
  biases = [jnp.asarray([0.3, -0.45, 0.0, 0.12]), jnp.asarray([-0.2, 0.6])]
  target = targets_lib.join_layers(kernels, biases)
  obj = bias_lib.sample(jax.random.key(1), target, WIDTH)
  return target, obj, construction.find_ticket(obj, target, "bias")


def _best(target, values):
  """min |target - subset sum| over all subsets, float64."""
  return min(abs(target - sum(s)) for r in range(len(values) + 1)
             for s in itertools.combinations(values, r))


def _top(products, member, m):
  """The ``m`` member products with the largest |.|, ties to the lower index."""
  idx = [k for k in sorted(range(len(products)), key=lambda k: -abs(products[k]))
         if member[k]]
  return [products[k] for k in idx[:m]]


def test_every_weight_and_bias_error_is_the_brute_force_optimum(case):
  target, obj, ticket = case
  kernels, biases = targets_lib.split_layers(target)
  m = network.default_max_half(WIDTH)
  for i, (k, b) in enumerate(zip(kernels, biases)):
    u = np.asarray(obj.net.params["u"][i], np.float64)
    v = np.asarray(obj.net.params["v"][i], np.float64)
    beta = np.asarray(obj.params["beta"][i], np.float64)
    w = np.asarray(obj.params["w"][i], np.float64)
    for o in range(k.shape[1]):
      prods = w[o] * beta
      best = _best(float(b[o]), _top(list(prods), list(beta > 0), m))
      assert float(ticket.bias_errors[i][o]) == pytest.approx(best, abs=3e-6)
      for j in range(k.shape[0]):
        p = list(v[o, j] * u[j])
        best = max(_best(float(k[j, o]), _top(p, list(u[j] > 0), m)),
                   _best(float(k[j, o]), _top(p, list(u[j] <= 0), m)))
        assert float(ticket.weight_errors[i][j, o]) == pytest.approx(best, abs=3e-6)


def test_pruning_only_with_biases_and_the_kept_count(case):
  _, obj, ticket = case
  full = bias_lib.dense_random(obj)
  pruned = bias_lib.dense_params(obj, ticket.masks)
  kept = helpers.pruned_entries(full, pruned)
  assert kept == int(ticket.num_params_kept)
  # the kept bias units' biases are drawn values > 0; the other biases are all pruned
  for i in range(2):
    d_in, n = SIZES[i], WIDTH
    hidden_bias = np.asarray(pruned[2 * i]["bias"])
    assert not hidden_bias[:d_in * n].any() and not np.asarray(pruned[2 * i + 1]["bias"]).any()
    kept_beta = hidden_bias[d_in * n:]
    assert (kept_beta[kept_beta != 0] > 0).all()
    assert np.asarray(full[2 * i]["bias"]).all()  # the dense draw has a bias on every unit
  assert ticket.num_params_random == sum(int(x.size) for x in jax.tree.leaves(full))


def test_three_forwards_agree_with_biases_and_the_bound_holds(case):
  target, obj, ticket = case
  c = constructions.get("bias")
  x = jax.random.normal(jax.random.key(2), (16, SIZES[0]))
  fast = c.effective_forward(ticket.effective_kernels, x)
  structured = c.structured_forward(obj, ticket.masks, x)
  dense = targets_lib.forward(c.dense_params(obj, ticket.masks), x)
  np.testing.assert_allclose(fast, structured, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dense, structured, rtol=1e-5, atol=1e-5)
  # the effective biases are the targets' up to the bias errors
  for eff, b, e in zip(ticket.effective_kernels, targets_lib.split_layers(target)[1],
                       ticket.bias_errors):
    np.testing.assert_allclose(jnp.abs(eff["bias"] - b), e, atol=1e-6)
  report = evaluation.approximation_error(target, ticket, jax.random.key(3), 256, net=obj,
                                          ascent_steps=10)
  assert float(report.sup_error) <= float(report.bound) * (1 + 1e-5)
  assert float(report.max_weight_error) >= float(max(jnp.max(e) for e in ticket.bias_errors))


def test_bias_free_layers_use_the_empty_subset(case):
  target, obj, _ = case
  kernels = targets_lib.split_layers(target)[0]
  ticket = construction.find_ticket(obj, kernels, "bias")
  assert all(float(jnp.max(e)) == 0.0 for e in ticket.bias_errors)
  assert all(int(jnp.sum(m)) == 0 for m in ticket.masks["w"] + ticket.masks["beta"])
  plain = construction.find_ticket(obj.net, kernels, "network")
  for a, b in zip(ticket.weight_errors, plain.weight_errors):  # the same weight part
    np.testing.assert_array_equal(a, b)
  # and the bound: zero bias errors on a bias-free target give the bias-free recursion
  np.testing.assert_array_equal(
      evaluation.analytic_bound(kernels, ticket.weight_errors, bias_errors=ticket.bias_errors),
      evaluation.analytic_bound(kernels, plain.weight_errors))
  with pytest.raises(ValueError, match="method 'bias'"):
    construction.find_ticket(obj.net, target, "network")


def test_analytic_bound_with_biases_against_a_hand_computation():
  k = [jnp.asarray([[2.0, 0.0], [0.0, 1.0]]), jnp.asarray([[1.0], [1.0]])]
  target = targets_lib.join_layers(k, [jnp.asarray([3.0, 4.0]), jnp.asarray([1.0])])
  e = [jnp.full((2, 2), 0.1), jnp.full((2, 1), 0.1)]
  eb = [jnp.asarray([0.3, 0.4]), jnp.asarray([0.5])]
  # r1 = ||W1|| r0 + ||b1|| = 2 + 5 = 7; delta1 = ||E1|| (r0 + 0) + ||e1|| = 0.2 + 0.5;
  # delta2 = ||E2|| (r1 + delta1) + ||e2|| + ||W2|| delta1
  want = np.sqrt(0.02) * 7.7 + 0.5 + np.sqrt(2) * 0.7
  got = evaluation.analytic_bound(target, e, bias_errors=eb, host=True)
  assert float(got) == pytest.approx(want, rel=1e-6)  # float32 inputs


def test_sample_is_nested_and_honours_the_distribution(case):
  target, _, _ = case
  wide = bias_lib.sample(jax.random.key(5), target, 6, distribution="normal")
  narrow = bias_lib.sample(jax.random.key(5), target, 3, distribution="normal")
  np.testing.assert_array_equal(wide.params["beta"][0][:3], narrow.params["beta"][0])
  assert float(jnp.max(jnp.abs(wide.params["w"][0]))) > 0 and wide.distribution == "normal"
  with pytest.raises(ValueError, match="BiasNetwork"):
    construction.find_ticket(wide.net, target, "bias")


def test_sweep_of_a_biased_target(case):
  from lth_jax import sweep
  target, _, _ = case
  r = sweep.sweep(target, [4, 8], 2, "bias", key=jax.random.key(6), num_points=16,
                  ascent_steps=2)
  assert r.target_params == 3 * 4 + 4 * 2 + 4 + 2
  assert np.all(r.sup_error <= r.bound * (1 + 1e-5))
  assert np.all(r.max_weight_error[1] <= r.max_weight_error[0] + 1e-7)  # nested widths
  with pytest.raises(ValueError, match=r"methods \['network'\] build none"):
    sweep.sweep(target, [4], 1, "network", key=jax.random.key(6))
  assert construction.takes_biases("bias") and not construction.takes_biases("direct")


def test_experiment1_biased_targets_get_their_own_checkpoint_and_construction():
  from lth_jax.configs import experiment1 as presets
  from lth_jax.run import experiment1
  # bias-free names (and hashes) are those from before use_bias existed
  assert experiment1._target_run_name(presets.get_config("fc2")).endswith("_e00a3d5e")
  biased = experiment1._target_run_name(presets.get_config("fc2_bias"))
  assert biased.startswith("fc2-bias_") and not biased.endswith("_e00a3d5e")
  kernels = [jnp.ones((2, 2))]
  assert experiment1._construction_for(kernels) == "network"
  assert experiment1._construction_for(targets_lib.join_layers(kernels, [jnp.ones(2)])) == "bias"
