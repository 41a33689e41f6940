"""evaluation: the batched analytic bound (traced float32 and host float64), the one
accuracy, and forwards dispatched through the construction registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import construction
from lth_jax import evaluation
from lth_jax import targets as targets_lib
from lth_jax.constructions import direct


def test_analytic_bound_is_batched_and_host_agrees():
  target = targets_lib.random_target(jax.random.key(1), (5, 4, 3))
  errs = [jnp.abs(jax.random.normal(jax.random.key(i), (2, 3) + k.shape)) * 1e-2
          for i, k in enumerate(target)]
  batched = evaluation.analytic_bound(target, errs)
  host = evaluation.analytic_bound(target, [np.asarray(e) for e in errs], host=True)
  assert batched.shape == host.shape == (2, 3) and host.dtype == np.float64
  for a in range(2):
    for b in range(3):
      one = evaluation.analytic_bound(target, [e[a, b] for e in errs])
      np.testing.assert_allclose(batched[a, b], one, rtol=1e-6)
      np.testing.assert_allclose(host[a, b], one, rtol=1e-5)
  # zero errors: zero bound; errors grow -> the bound grows
  assert float(evaluation.analytic_bound(target, [0 * e[0, 0] for e in errs])) == 0.0
  assert float(evaluation.analytic_bound(target, [2 * e[0, 0] for e in errs])) > float(batched[0, 0])


@pytest.mark.parametrize("n, batch", [(40, 512), (40, 7), (21, 3)])
def test_accuracy_pads_batches_without_counting_padding(n, batch):
  rng = np.random.default_rng(n)
  images = rng.normal(size=(n, 6)).astype(np.float32)
  labels = rng.integers(0, 3, n)
  kernels = targets_lib.random_target(jax.random.key(0), (6, 3))
  want = np.mean(np.argmax(np.asarray(targets_lib.forward(kernels, images)), -1) == labels)
  got = evaluation.accuracy(lambda x: targets_lib.forward(kernels, x), jnp.asarray(images),
                            jnp.asarray(labels), batch)
  assert float(got) == pytest.approx(want)


def test_accuracy_takes_image_shaped_inputs():
  images = jnp.ones((5, 2, 2, 1))
  labels = jnp.asarray([0, 1, 0, 0, 1])
  apply_fn = lambda x: jnp.stack([x.sum((1, 2, 3)), jnp.zeros(x.shape[0])], -1)
  assert float(evaluation.accuracy(apply_fn, images, labels, 2)) == pytest.approx(0.6)


def test_forwards_dispatch_on_the_ticket_construction():
  target = targets_lib.random_target(jax.random.key(2), (4, 3))
  coefs = direct.sample_direct_coefficients(jax.random.key(3), target, 6)
  ticket = construction.find_ticket(coefs, target, "direct")
  x = jax.random.normal(jax.random.key(4), (8, 4))
  fast = evaluation.pruned_forward_fn(ticket)(x)
  real = evaluation.pruned_forward_fn(ticket, coefs)(x)
  np.testing.assert_allclose(fast, real, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(evaluation.structured_forward(coefs, ticket.masks, x, "direct"),
                             x @ ticket.effective_kernels[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(targets_lib.forward(evaluation.dense_pruned_params(coefs, ticket), x),
                             real, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="pass the RandomNetwork"):
    evaluation.pruned_forward_fn(ticket.replace(method="network"))


@pytest.mark.parametrize("method", ["network", "single", "direct"])
def test_sup_error_is_at_least_the_largest_weight_error(method):
  """One-layer tickets: x = ±e_j (always candidates) attain each weight's error, so the
  estimate never falls below the largest one, even with few random points and no ascent."""
  from lth_jax import constructions
  target = targets_lib.random_target(jax.random.key(5), (12, 6))
  obj = constructions.get(method).sample(jax.random.key(6), target, 8)
  ticket = construction.find_ticket(obj, target, method)
  rep = evaluation.approximation_error(target, ticket, jax.random.key(7), 1, net=obj,
                                       ascent_steps=0)
  assert float(rep.sup_error) >= float(rep.max_weight_error) > 0
  assert float(rep.sup_error) <= float(rep.bound) * (1 + 1e-5)


def test_sup_error_finds_a_coordinate_direction_random_points_miss():
  """The error lives in a thin cone around e_0 (zero elsewhere, so no gradient leads to
  it): random unit vectors and the ascent from them see nothing; e_0 gives the exact sup."""
  d = 32
  f = lambda x: jnp.zeros((x.shape[0], 1))
  g = lambda x: jax.nn.relu(x[:, :1] - jnp.sum(jnp.abs(x[:, 1:]), -1, keepdims=True))
  key = jax.random.key(8)
  x = jax.random.normal(key, (256, d))  # the random candidates sup_output_error draws
  assert float(jnp.max(g(x / jnp.linalg.norm(x, axis=-1, keepdims=True)))) == 0.0
  value, worst = evaluation.sup_output_error(f, g, d, key, 256, ascent_steps=10)
  assert float(value) == 1.0
  np.testing.assert_array_equal(worst, jnp.eye(d)[0])
