"""The construction interface, checked for EVERY registered construction: nested draws,
pruning only, the three forwards agreeing, counts; plus direct on conv kernels and tiny
brute-force cases."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

from lth_jax import construction
from lth_jax import constructions
from lth_jax import random_net as rn
from lth_jax import targets as targets_lib
from lth_jax.constructions import base
from lth_jax.constructions import direct

SIZES = (4, 5, 3)
NAMES = constructions.names()


@pytest.fixture(scope="module")
def target():
  return targets_lib.random_target(jax.random.key(0), SIZES)


@pytest.fixture(scope="module")
def tickets(target):
  """name -> (random object, ticket), every registered construction at width 10."""
  out = {}
  for name in NAMES:
    obj = constructions.get(name).sample(jax.random.key(1), target, 10)
    out[name] = obj, construction.find_ticket(obj, target, name)
  return out


def test_registry_is_methods_and_rejects_clashes():
  assert NAMES == construction.METHODS  # in registration (import) order
  assert sorted(NAMES) == ["bias", "conv", "direct", "lplus1", "network", "single"]
  with pytest.raises(ValueError, match="already registered"):
    base.register(constructions.get("network"))
  with pytest.raises(ValueError, match="evaluation"):
    base.register(dataclasses.replace(direct.DIRECT, name="x", stream=base.EVAL_STREAM))
  with pytest.raises(ValueError, match="samples differently"):
    base.register(dataclasses.replace(direct.DIRECT, name="x", stream=0))
  with pytest.raises(ValueError, match="method must be one of"):
    constructions.get("magic")


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_nested_in_the_width(target, name):
  c = constructions.get(name)
  wide, narrow = c.sample(jax.random.key(3), target, 9), c.sample(jax.random.key(3), target, 4)
  assert c.widths(wide) == (9,) * 2 and c.widths(narrow) == (4,) * 2
  for a, b in zip(jax.tree.leaves(wide), jax.tree.leaves(narrow)):
    a, b = np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                      else a), np.asarray(jax.random.key_data(b) if jnp.issubdtype(
                          b.dtype, jax.dtypes.prng_key) else b)
    if a.shape != b.shape:  # every copy axis (lplus1: two per layer) is a prefix
      a = a[tuple(slice(0, s) for s in b.shape)]
    np.testing.assert_array_equal(a, b)


def _draws(obj) -> np.ndarray:
  """Every drawn float of a random object (PRNG-key leaves left out), flat."""
  return np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree.leaves(obj)
                         if not jnp.issubdtype(a.dtype, jax.dtypes.prng_key)])


@pytest.mark.parametrize("name", NAMES)
def test_the_distribution_option(target, name):
  """One option for every construction: "uniform" draws U[-1, 1], "normal" N(0, 1) (so
  products of normals in the 2L gadget); direct's coefficients span the target's range
  whatever the option; an unknown name is refused."""
  c = constructions.get(name)
  uni = _draws(c.sample(jax.random.key(7), target, 64, distribution="uniform"))
  nor = _draws(c.sample(jax.random.key(7), target, 64, distribution="normal"))
  if name == "direct":
    np.testing.assert_array_equal(uni, nor)
    return
  assert uni.size == nor.size > 1000
  assert np.abs(uni).max() <= 1.0 and abs(uni.std() - 1 / np.sqrt(3)) < 0.03
  assert np.abs(nor).max() > 2.0 and abs(nor.std() - 1.0) < 0.05 and abs(nor.mean()) < 0.05
  with pytest.raises(ValueError, match="distribution"):
    c.sample(jax.random.key(7), target, 4, distribution="cauchy")


@pytest.mark.parametrize("name", NAMES)
def test_three_forwards_agree(target, tickets, name):
  c = constructions.get(name)
  obj, ticket = tickets[name]
  x = jax.random.normal(jax.random.key(4), (32, SIZES[0]))
  fast = c.effective_forward(ticket.effective_kernels, x)
  structured = c.structured_forward(obj, ticket.masks, x)
  dense = targets_lib.forward(c.dense_params(obj, ticket.masks), x)
  np.testing.assert_allclose(fast, structured, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dense, structured, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if constructions.get(n).prunes_network])
def test_pruning_only_and_kept_count(tickets, name):
  c = constructions.get(name)
  obj, ticket = tickets[name]
  ones = jax.tree.map(jnp.ones_like, ticket.masks)
  full, pruned = c.dense_params(obj, ones), c.dense_params(obj, ticket.masks)
  # leaves: the dense kernels, and the dense biases of constructions with biases
  kept = helpers.pruned_entries(full, pruned)
  assert kept == int(ticket.num_params_kept)
  shapes = tuple(zip(SIZES[:-1], SIZES[1:]))
  every_entry = sum(int(leaf.size) for leaf in jax.tree.leaves(full))
  assert ticket.num_params_random == c.num_params(shapes, 10) == every_entry
  if isinstance(obj, rn.RandomNetwork):
    assert every_entry == rn.num_params(obj)
  assert c.depth(2) == len(full)


def test_errors_are_kernel_shaped_and_exact(target, tickets):
  for name in NAMES:
    _, ticket = tickets[name]
    assert [e.shape for e in ticket.weight_errors] == [k.shape for k in target]
  # direct: each error is |kernel - approximated kernel|
  _, ticket = tickets["direct"]
  for k, e, eff in zip(target, ticket.weight_errors, ticket.effective_kernels):
    np.testing.assert_allclose(e, jnp.abs(k - eff), atol=1e-6)


def test_direct_errors_are_the_brute_force_optimum():
  t = [jnp.asarray([[0.3, -0.2], [0.05, 0.41]], jnp.float32)]
  coefs = direct.sample_direct_coefficients(jax.random.key(2), t, 6)
  ticket = construction.find_ticket(coefs, t, "direct")
  c = np.asarray(coefs.coefficients[0], np.float64)  # (d_out, n)
  for j, o in itertools.product(range(2), range(2)):
    best = min(abs(float(t[0][j, o]) - sum(s))
               for r in range(7) for s in itertools.combinations(c[o], r))
    assert float(ticket.weight_errors[0][j, o]) == pytest.approx(best, abs=2e-6)


def test_single_picks_at_most_one_product_per_half(tickets):
  _, ticket = tickets["single"]
  for mv, mu in zip(ticket.masks["v"], ticket.masks["u"]):
    # per (o, j): at most one kept copy per sign half, so at most 2
    assert int(np.max(np.sum(np.asarray(mv), -1))) <= 2


def test_direct_accepts_conv_kernels_as_matrices():
  """LeNet5-style: a conv kernel (kh, kw, in, out) then a dense one (they do not chain)."""
  conv = jax.random.normal(jax.random.key(5), (3, 3, 2, 4)) * 0.3
  dense = jax.random.normal(jax.random.key(6), (7, 3)) * 0.3
  coefs = direct.sample_direct_coefficients(jax.random.key(7), [conv, dense], 8)
  assert [c.shape for c in coefs.coefficients] == [(4, 8), (3, 8)]
  ticket = construction.find_ticket(coefs, [conv, dense], "direct")
  assert [e.shape for e in ticket.weight_errors] == [conv.shape, dense.shape]
  assert [e.shape for e in ticket.effective_kernels] == [conv.shape, dense.shape]
  assert [m.shape for m in ticket.masks["coefficients"]] == [(4, 18, 8), (3, 7, 8)]
  assert ticket.num_params_random == (conv.size + dense.size) * 8
  # the conv layer is the matrix-view problem: same ticket as the 2-D kernel alone
  matrix = targets_lib.as_matrix(conv)
  alone = construction.find_ticket(direct.DirectCoefficients(coefs.coefficients[:1], coefs.low,
                                                             coefs.high), [matrix], "direct")
  np.testing.assert_array_equal(alone.weight_errors[0].reshape(conv.shape),
                                ticket.weight_errors[0])
  np.testing.assert_array_equal(alone.masks["coefficients"][0], ticket.masks["coefficients"][0])
  np.testing.assert_allclose(ticket.effective_kernels[0], conv, atol=0.2)


def test_nested_and_split_direct_draws_differ_but_share_the_range(target):
  a = direct.sample_direct_coefficients(jax.random.key(1), target, 5)
  b = direct.sample_direct_coefficients(jax.random.key(1), target, 5, nested=True)
  assert float(a.low) == float(b.low) and float(a.high) == float(b.high)
  assert not np.array_equal(a.coefficients[0], b.coefficients[0])
  for c in a.coefficients + b.coefficients:
    assert float(jnp.min(c)) >= float(a.low) and float(jnp.max(c)) <= float(a.high)


@pytest.mark.parametrize("name", NAMES)
def test_traced_width_instances_equal_the_narrow_draw(target, name):
  """instances(wide, width=w traced) solve to the ticket of the width-w draw."""
  c = constructions.get(name)
  wide = c.sample(jax.random.key(8), target, 9)
  narrow_ticket = construction.find_ticket(c.sample(jax.random.key(8), target, 5), target, name)
  m = c.instance_size(9, None)

  @jax.jit
  def grid_point(obj, w, cap):
    return c.instances(obj, target, w, cap, sizes=(m, m))

  inst = grid_point(wide, jnp.int32(5), jnp.int32(c.instance_size(5, None)))
  if c.solves:
    from lth_jax import objectives
    sol = objectives.solve_grouped(inst.problems, objectives.objective_solver())
  else:
    sol = c.choose(inst.problems, inst.aux)
  out = c.assemble(target, inst, sol)
  for a, b in zip(out.weight_errors, narrow_ticket.weight_errors):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert int(out.kept) == int(narrow_ticket.num_params_kept)
