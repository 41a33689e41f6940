"""Tickets end to end on small targets: exactness of pruning, error bounds, baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lth_jax as L

SIZES = (16, 32, 8)


def unit_norm_target(key, sizes=SIZES):
  """Random kernels with spectral norm exactly 1 (the theorem's assumption)."""
  kernels = []
  for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
    w = jax.random.normal(k, (a, b))
    kernels.append(w / jnp.linalg.norm(w, ord=2))
  return kernels


@pytest.fixture(scope="module")
def target():
  return unit_norm_target(jax.random.key(0))


@pytest.fixture(scope="module")
def tickets(target):
  """(copies -> (net, network ticket, single ticket)) for a few widths."""
  out = {}
  for copies in (8, 24, 48):
    net = L.sample_random_network(jax.random.key(1), SIZES, copies)
    out[copies] = (net, L.find_ticket(net, target, "network"), L.find_ticket(net, target, "single"))
  return out


def test_masks_are_binary_and_pruning_keeps_values_bit_identical(tickets):
  net, ticket, _ = tickets[24]
  for m in jax.tree.leaves(ticket.masks):
    assert m.dtype == jnp.uint8 and set(np.unique(np.asarray(m))) <= {0, 1}
  dense = L.dense_params(net)
  pruned = L.dense_pruned_params(net, ticket)
  for d, p in zip(dense, pruned):
    d, p = np.asarray(d), np.asarray(p)
    nz = p != 0
    assert nz.any()
    np.testing.assert_array_equal(p[nz].view(np.uint32), d[nz].view(np.uint32))
  # M1 keeps only block-diagonal entries (one input per hidden unit)
  m1 = np.asarray(pruned[0])
  assert (np.count_nonzero(m1, axis=0) <= 1).all()
  assert int(ticket.num_params_kept) == sum(int(np.count_nonzero(p)) for p in pruned)


def test_structured_forward_matches_dense_forward(tickets):
  net, ticket, _ = tickets[24]
  x = jax.random.normal(jax.random.key(2), (64, SIZES[0]))
  dense = L.forward(L.dense_pruned_params(net, ticket), x)
  structured = L.structured_forward(net, ticket.masks, x)
  np.testing.assert_allclose(np.asarray(structured), np.asarray(dense), rtol=1e-5, atol=1e-5)


def test_layer_output_within_per_weight_bound(target, tickets):
  """|y_o - (Wx)_o| <= sum_j err[o,j] |x_j| for the first layer, on random inputs."""
  net, ticket, _ = tickets[24]
  x = jax.random.normal(jax.random.key(3), (256, SIZES[0]))
  one_layer = L.sample_random_network(jax.random.key(1), SIZES[:2], 24)
  np.testing.assert_array_equal(np.asarray(one_layer.params["v"][0]), np.asarray(net.params["v"][0]))
  masks = {"u": ticket.masks["u"][:1], "v": ticket.masks["v"][:1]}
  y = L.structured_forward(one_layer, masks, x)
  exact = x @ target[0]
  bound = jnp.abs(x) @ ticket.weight_errors[0]
  assert bool(jnp.all(jnp.abs(y - exact) <= bound * (1 + 1e-4) + 1e-5))


def test_error_falls_with_copies_and_stays_below_bound(target, tickets):
  sups = []
  for copies in (8, 24, 48):
    net, ticket, _ = tickets[copies]
    rep = L.approximation_error(target, ticket, jax.random.key(4), 512, net=net, ascent_steps=20)
    assert float(rep.sup_error) <= float(rep.bound) * (1 + 1e-4) + 1e-6
    sups.append(float(rep.sup_error))
  assert sups[0] > sups[1] > sups[2]
  assert sups[2] < 0.25 * sups[0]


def test_single_is_far_worse_than_network(tickets):
  _, network, single = tickets[48]
  net_err = float(jnp.mean(jnp.concatenate([e.ravel() for e in network.weight_errors])))
  single_err = float(jnp.mean(jnp.concatenate([e.ravel() for e in single.weight_errors])))
  assert single_err > 3 * net_err
  # single keeps at most one copy per (o, j, sign half)
  for mv in single.masks["v"]:
    assert int(jnp.max(jnp.sum(mv, axis=-1))) <= 2


def _kept_copies(u, v, o, j, sign, cap, width):
  """The rule: a half's member copies below `width` with the largest |v u| (ties: lower k)."""
  members = [k for k in range(width) if (u[j, k] > 0) == (sign > 0)]
  return sorted(members, key=lambda k: (-abs(v[o, j, k] * u[j, k]), k))[:cap]


def test_network_ticket_is_optimal_per_instance(target, tickets):
  """Recompute one layer's per-weight errors by brute force over the kept-able copies."""
  net, ticket, _ = tickets[8]
  u, v = np.asarray(net.params["u"][1], np.float64), np.asarray(net.params["v"][1], np.float64)
  w = np.asarray(target[1], np.float64).T
  cap = L.default_max_half(8)
  import itertools
  for o, j in [(0, 0), (3, 5), (7, 31)]:
    errs = []
    for sign in (1, -1):
      prods = np.array([v[o, j, k] * u[j, k] for k in _kept_copies(u, v, o, j, sign, cap, 8)])
      best = min(abs(w[o, j] - sum(s)) for r in range(len(prods) + 1)
                 for s in itertools.combinations(prods, r))
      errs.append(best)
    assert abs(float(ticket.weight_errors[1][j, o]) - max(errs)) < 1e-6


@pytest.mark.parametrize("width, cap", [(24, 4), (17, 6), (24, 30)])
def test_cap_keeps_the_largest_products_below_the_width(width, cap):
  """Per (o, j, half) the kept slots are the top-|v u| members among copies k < width, in
  decreasing order; slot/copy_index invert each other; no copy at or beyond the width."""
  from lth_jax.constructions import network
  net = L.sample_random_network(jax.random.key(6), (5, 3), 24)
  u, v = net.params["u"][0], net.params["v"][0]
  inst = network.layer_instances(u, v, jnp.zeros((5, 3)), cap, width)
  un, vn = np.asarray(u, np.float64), np.asarray(v, np.float64)
  idx, valid, slot = map(np.asarray, (inst.copy_index, inst.valid, inst.slot))
  assert idx.shape == (2, 3, 5, cap) and valid.shape == (2, 5, cap) and slot.shape == (3, 5, 24)
  for o in range(3):
    for j in range(5):
      for h, sign in enumerate((1, -1)):
        want = _kept_copies(un, vn, o, j, sign, cap, width)
        assert list(idx[h, o, j][valid[h, j]]) == want
        np.testing.assert_allclose(np.asarray(inst.products[h, o, j][valid[h, j]]),
                                   [vn[o, j, k] * un[j, k] for k in want], rtol=1e-6)
        for s, k in enumerate(want):
          assert slot[o, j, k] == h * cap + s
      kept = set(idx[0, o, j][valid[0, j]]) | set(idx[1, o, j][valid[1, j]])
      assert {k for k in range(24) if slot[o, j, k] >= 0} == kept
  assert np.all(np.asarray(inst.products)[~np.broadcast_to(valid[:, None], idx.shape)] == 0)


def test_more_copies_help_beyond_the_cap():
  """Weights of size 0.6 with the cap binding (m = 10; halves of ~12-32 members): more
  copies keep larger products, so fewer weights miss eps. Keeping the first m members in
  copy order gave the same instances at every width once a half had m members."""
  signs = jnp.sign(jax.random.normal(jax.random.key(2), (16, 8)))
  target = [0.6 * signs]
  misses, means = [], []
  for copies in (24, 64):
    net = L.sample_random_network(jax.random.key(1), (16, 8), copies)
    err = np.asarray(L.find_ticket(net, target, "network", max_half=10).weight_errors[0])
    misses.append(int(np.sum(err > 0.01)))
    means.append(float(np.mean(err)))
  assert misses[1] < misses[0] and means[1] < means[0]


def test_deterministic(target):
  net = L.sample_random_network(jax.random.key(1), SIZES, 8)
  a = L.find_ticket(net, target, "network")
  b = L.find_ticket(L.sample_random_network(jax.random.key(1), SIZES, 8), target, "network")
  for x, y in zip(jax.tree.leaves(a.masks), jax.tree.leaves(b.masks)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_direct_variant(target):
  coefs = L.sample_direct_coefficients(jax.random.key(5), target, 16)
  ticket = L.find_ticket(coefs, target, "direct")
  assert ticket.num_params_random == 16 * sum(k.size for k in target)
  for c, k, m, e, approx in zip(coefs.coefficients, target, ticket.masks["coefficients"],
                                ticket.weight_errors, ticket.effective_kernels):
    assert c.shape == (k.shape[1], 16) and m.shape == (k.shape[1], k.shape[0], 16)
    recon = jnp.sum(jnp.where(m.astype(bool), c[:, None, :], 0.0), -1).T
    np.testing.assert_allclose(np.asarray(recon), np.asarray(approx), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jnp.abs(approx - k)), np.asarray(e), atol=2e-6)
  all_w = jnp.concatenate([k.ravel() for k in target])
  assert float(coefs.low) == float(all_w.min()) and float(coefs.high) == float(all_w.max())
  rep = L.approximation_error(target, ticket, jax.random.key(6), 256, ascent_steps=10)
  assert float(rep.max_weight_error) < 1e-2
  assert float(rep.sup_error) <= float(rep.bound) * (1 + 1e-4) + 1e-6


def test_bad_input(target):
  net = L.sample_random_network(jax.random.key(1), SIZES, 8)
  with pytest.raises(ValueError, match="method"):
    L.find_ticket(net, target, "magic")
  with pytest.raises(ValueError, match="NaN"):
    L.find_ticket(net, [target[0].at[0, 0].set(jnp.nan), target[1]])
  with pytest.raises(ValueError, match="layer sizes"):
    L.find_ticket(net, [jnp.ones((16, 30)), jnp.ones((30, 8))])
  with pytest.raises(ValueError, match="d_in"):
    L.find_ticket(net, [jnp.ones((16, 32)), jnp.ones((31, 8))])
  with pytest.raises(ValueError, match="DirectCoefficients"):
    L.find_ticket(net, target, "direct")
  with pytest.raises(ValueError, match="max_half"):
    L.find_ticket(net, target, "network", max_half=0)
  with pytest.raises(ValueError, match="no layers"):
    L.find_ticket(net, [])


def _with_param(net, name, layer, value, index=(0, 0)):
  params = {k: list(v) for k, v in net.params.items()}
  params[name][layer] = params[name][layer].at[index].set(value)
  return net.replace(params=params)


@pytest.mark.parametrize("method", ["network", "single"])
@pytest.mark.parametrize("name, layer, value", [
    ("u", 0, np.nan), ("v", 1, np.nan), ("u", 1, np.inf), ("v", 0, -np.inf)])
def test_non_finite_random_network_raises(target, method, name, layer, value):
  """Once silently empty SubsetSum instances (finite-looking errors, wrong ticket)."""
  net = _with_param(L.sample_random_network(jax.random.key(1), SIZES, 8), name, layer, value)
  with pytest.raises(ValueError, match=rf"random network params {name}\[{layer}\].*NaN or Inf"):
    L.find_ticket(net, target, method)


def test_malformed_random_network_raises(target):
  net = L.sample_random_network(jax.random.key(1), SIZES, 8)
  bad = net.replace(params={"u": net.params["u"], "v": [net.params["v"][0][:, :, :5],
                                                        net.params["v"][1]]})
  with pytest.raises(ValueError, match="layer 0: u .* and v"):
    L.find_ticket(bad, target)
  with pytest.raises(ValueError, match="1 u and 2 v layers"):
    L.find_ticket(net.replace(params={"u": net.params["u"][:1], "v": net.params["v"]}), target)


def test_bad_target_raises(target):
  net = L.sample_random_network(jax.random.key(1), SIZES, 8)
  with pytest.raises(ValueError, match="layer 1 contains NaN or Inf"):
    L.find_ticket(net, [target[0], target[1].at[2, 3].set(jnp.inf)])
  with pytest.raises(ValueError, match="non-empty"):
    L.find_ticket(net, [jnp.ones((16, 0)), jnp.ones((0, 8))])
  with pytest.raises(ValueError, match="non-empty"):
    L.find_ticket(net, [target[0], jnp.ones(8)])
  coefs = L.sample_direct_coefficients(jax.random.key(5), target, 6)
  with pytest.raises(ValueError, match="layer 0 contains NaN or Inf"):
    L.find_ticket(coefs, [target[0].at[0, 0].set(-jnp.inf), target[1]], "direct")
  with pytest.raises(ValueError, match="non-empty"):
    L.sample_direct_coefficients(jax.random.key(5), [jnp.zeros((0, 4))], 6)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_direct_coefficients_raise(target, value):
  coefs = L.sample_direct_coefficients(jax.random.key(5), target, 6)
  bad = coefs.replace(coefficients=[coefs.coefficients[0],
                                    coefs.coefficients[1].at[3, 2].set(value)])
  with pytest.raises(ValueError, match=r"direct coefficients \[1\] contains NaN or Inf"):
    L.find_ticket(bad, target, "direct")
  empty = coefs.replace(coefficients=[c[:, :0] for c in coefs.coefficients])
  with pytest.raises(ValueError, match="no coefficients per weight"):
    L.find_ticket(empty, target, "direct")
  with pytest.raises(ValueError, match="positive int"):
    L.sample_direct_coefficients(jax.random.key(5), target, 2.5)


def test_approximation_error_bad_input(target, tickets):
  net, ticket, _ = tickets[8]
  key = jax.random.key(4)
  with pytest.raises(ValueError, match="num_points must be an int >= 1"):
    L.approximation_error(target, ticket, key, 0, net=net)
  with pytest.raises(ValueError, match="num_points"):
    L.approximation_error(target, ticket, key, 2.5, net=net)
  with pytest.raises(ValueError, match="ascent_steps"):
    L.approximation_error(target, ticket, key, 8, net=net, ascent_steps=-1)
  with pytest.raises(ValueError, match="pass net="):
    L.approximation_error(target, ticket, key, 8)
  with pytest.raises(ValueError, match="layer sizes"):
    L.approximation_error([jnp.ones((16, 30)), jnp.ones((30, 8))], ticket, key, 8, net=net)
  with pytest.raises(ValueError, match="d_in"):
    L.approximation_error([target[0], jnp.ones((31, 8))], ticket, key, 8, net=net)
  with pytest.raises(ValueError, match="layer 0 contains NaN or Inf"):
    L.approximation_error([target[0].at[1, 1].set(jnp.nan), target[1]], ticket, key, 8,
                          net=net)
  other = L.sample_random_network(jax.random.key(1), SIZES, 24)  # wrong net for the ticket
  with pytest.raises(ValueError, match="do not fit the network"):
    L.approximation_error(target, ticket, key, 8, net=other)
  coefs = L.sample_direct_coefficients(jax.random.key(5), target, 6)
  direct = L.find_ticket(coefs, target, "direct")
  with pytest.raises(ValueError, match="layer sizes"):
    L.approximation_error([jnp.ones((16, 30)), jnp.ones((30, 8))], direct, key, 8)
  with pytest.raises(ValueError, match="no layers"):
    L.approximation_error([], direct, key, 8)


# ------------------------------------------------------------------ the solver option


def test_fewest_terms_objective_within_eps_with_fewer_terms(target):
  from lth_jax import objectives
  eps = 0.02
  net = L.sample_random_network(jax.random.key(1), SIZES, 24)
  dense = L.find_ticket(net, target, "network")
  sparse = L.find_ticket(net, target, "network", objective="fewest_terms", epsilon=eps)
  for d, s in zip(dense.weight_errors, sparse.weight_errors):
    d, s = np.asarray(d), np.asarray(s)
    assert (d <= eps).mean() > 0.9  # enough weights where the objectives differ
    # Per half: within eps when some subset is, else the min-error subset itself.
    assert (s <= np.maximum(eps, d)).all()
    np.testing.assert_array_equal(s[d > eps], d[d > eps])
  # Every instance's subset has at most the min-error one's terms (the min-error subset is
  # a candidate whenever it is within eps), so fewer second-layer entries survive.
  for d, s in zip(dense.masks["v"], sparse.masks["v"]):
    assert int(np.sum(s)) < int(np.sum(d))
  assert int(sparse.num_params_kept) < int(dense.num_params_kept)
  # Through an explicit solve_fn: the same ticket.
  same = L.find_ticket(net, target, "network",
                       solve_fn=objectives.objective_solver("fewest_terms", eps))
  for x, y in zip(jax.tree.leaves(sparse), jax.tree.leaves(same)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_custom_solve_fn_is_called_once_per_instance_size(target):
  calls = []

  def solve_fn(t, c):
    calls.append((t.shape, c.shape))
    return L.solve_subset_sum(t, c)

  net = L.sample_random_network(jax.random.key(1), SIZES, 8)
  ref = L.find_ticket(net, target, "network", max_half=[4, 5])
  got = L.find_ticket(net, target, "network", max_half=[4, 5], solve_fn=solve_fn)
  assert calls == [((2 * 32 * 16,), (2 * 32 * 16, 4)), ((2 * 8 * 32,), (2 * 8 * 32, 5))]
  for x, y in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  calls.clear()
  L.find_ticket(net, target, "network", max_half=4, solve_fn=solve_fn)
  assert calls == [((2 * (32 * 16 + 8 * 32),), (2 * (32 * 16 + 8 * 32), 4))]  # one size
  calls.clear()
  L.find_ticket(net, target, "single", solve_fn=solve_fn)
  assert not calls  # "single" solves no SubsetSum
  coefs = L.sample_direct_coefficients(jax.random.key(5), target, 6)
  ticket = L.find_ticket(coefs, target, "direct", solve_fn=solve_fn)
  assert calls == [((16 * 32 + 32 * 8,), (16 * 32 + 32 * 8, 6))]
  for x, y in zip(jax.tree.leaves(ticket), jax.tree.leaves(L.find_ticket(coefs, target, "direct"))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_layer_building_blocks_compose_to_find_ticket(target):
  from lth_jax.constructions import network
  net = L.sample_random_network(jax.random.key(1), SIZES, 8)
  ticket = L.find_ticket(net, target, "network", max_half=5)
  u, v, k = net.params["u"][1], net.params["v"][1], target[1]
  inst = network.layer_instances(u, v, k, 5)
  assert inst.products.shape == (2, 8, 32, 5) and inst.copy_index.shape == (2, 8, 32, 5)
  chosen = L.solve_subset_sum(inst.targets, inst.products).mask
  layer = network.layer_masks(chosen, inst.targets, inst.products, inst.valid, inst.slot)
  np.testing.assert_array_equal(np.asarray(layer.mask_v), np.asarray(ticket.masks["v"][1]))
  np.testing.assert_array_equal(np.asarray(layer.errors.T), np.asarray(ticket.weight_errors[1]))


def test_bad_solver_options(target):
  from lth_jax import fewest_terms, objectives
  net = L.sample_random_network(jax.random.key(1), SIZES, 8)
  with pytest.raises(ValueError, match="objective"):
    L.find_ticket(net, target, objective="closest")
  with pytest.raises(ValueError, match="needs epsilon"):
    L.find_ticket(net, target, objective="fewest_terms")
  with pytest.raises(ValueError, match="not both"):
    L.find_ticket(net, target, objective="fewest_terms", epsilon=0.1,
                  solve_fn=L.solve_subset_sum)
  with pytest.raises(ValueError, match="max_half"):
    L.find_ticket(net, target, max_half=fewest_terms.MAX_N + 1, objective="fewest_terms",
                  epsilon=0.1)
  with pytest.raises(ValueError, match="positive"):
    objectives.objective_solver("fewest_terms", 0.0)
