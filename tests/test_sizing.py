"""Tests for lth_jax.sizing: the network variant's ticket and the copies search."""

import jax
import numpy as np
import pytest

import helpers
from lth_jax import construction
from lth_jax import random_net as rn
from lth_jax import sizing
from lth_jax.constructions import network

EPS = 0.01
# N = 12 coefficients per instance (halves padded to max_half = N), as in
# test_run_experiment1: one compiled program per objective.
N = 12
MAX_HALF = N




def test_network_min_error_is_find_tickets_ticket():
  target = helpers.tiny_target()
  net = rn.sample_random_network(jax.random.PRNGKey(2), (6, 5, 3), (16, 12))
  ours = sizing.network_ticket(net, target, objective="min_error", epsilon=EPS,
                               max_half=MAX_HALF)
  ref = construction.find_ticket(net, target, "network", max_half=MAX_HALF)
  for a, b in zip(jax.tree.leaves(ours.masks), jax.tree.leaves(ref.masks)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(ours.weight_errors, ref.weight_errors):
    np.testing.assert_allclose(a, b, atol=1e-6)  # float32 summation order
  assert int(ours.num_params_kept) == int(ref.num_params_kept)
  assert ours.num_params_random == rn.num_params(net)


def test_network_fewest_terms_keeps_fewer_within_eps():
  target = helpers.tiny_target()
  net = rn.sample_random_network(jax.random.PRNGKey(2), (6, 5, 3), 24)
  dense = sizing.network_ticket(net, target, objective="min_error", epsilon=EPS,
                                max_half=MAX_HALF)
  sparse = sizing.network_ticket(net, target, objective="fewest_terms", epsilon=EPS,
                                 max_half=MAX_HALF)
  assert int(sparse.num_params_kept) < int(dense.num_params_kept)
  for e_min, e_few in zip(dense.weight_errors, sparse.weight_errors):
    ok = np.asarray(e_min) <= EPS
    assert np.all(np.asarray(e_few)[ok] <= EPS)


def test_network_ticket_refuses_a_max_half_above_the_objective():
  net = rn.sample_random_network(jax.random.PRNGKey(2), (6, 5, 3), 24)
  with pytest.raises(ValueError, match="maximum instance size"):
    sizing.network_ticket(net, helpers.tiny_target(), objective="fewest_terms", max_half=31)


def test_search_copies_finds_the_smallest_sufficient_candidate():
  target = helpers.tiny_target(sizes=(6, 5, 3), scale=0.5)
  candidates = (12, 16, 24)
  found = sizing.search_copies(jax.random.PRNGKey(3), target, candidates, epsilon=EPS,
                               max_half=MAX_HALF)
  full = rn.sample_random_network(jax.random.PRNGKey(3), (6, 5, 3), max(candidates))
  err_at = lambda copies, layer: np.asarray(sizing.network_ticket(
      rn.truncate_copies(full, copies), target, epsilon=EPS,
      max_half=MAX_HALF).weight_errors[layer])
  searched = False
  assert found.net.copies == found.copies
  for layer, (log, c) in enumerate(zip(found.log, found.copies)):
    misses = [entry["misses"] for entry in log]
    assert misses == sorted(misses, reverse=True)  # nested widths: never more misses
    assert [e["copies"] for e in log] == list(candidates[:len(log)])
    assert log[-1]["copies"] == c
    assert log[-1]["misses"] == 0 or c == max(candidates)  # misses reported, not fatal
    # Cross-check against whole tickets at the chosen and the previous candidate.
    chosen = [c if i == layer else max(candidates) for i in range(2)]
    assert (err_at(chosen, layer) > EPS).sum() == log[-1]["misses"]
    if len(log) > 1:
      searched = True
      prev = [log[-2]["copies"] if i == layer else max(candidates) for i in range(2)]
      assert (err_at(prev, layer) > EPS).sum() == log[-2]["misses"] > 0
  assert searched


def test_max_half_per_layer_and_caps():
  assert sizing.layer_caps((24, 30), 2) == [24, 30]
  assert sizing.layer_caps((0,), 3) == [0, 0, 0]
  assert sizing.layer_caps(None, 2) == [None, None]
  with pytest.raises(ValueError, match="3 target layers"):
    sizing.layer_caps((24, 30), 3)
  assert sizing.half_sizes(0, [64], limit=30) == [30]  # default 36, capped at the solver's
  assert sizing.half_sizes(0, [16]) == [network.default_max_half(16)]
  assert sizing.half_sizes(21, [12]) == [12]  # never more than the copies
  assert sizing.half_sizes((24, 0), [30, 16]) == [24, network.default_max_half(16)]
  assert sizing.half_sizes(None, [16, 12]) == [network.default_max_half(c) for c in (16, 12)]
