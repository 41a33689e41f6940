"""Forward passes and approximation error of tickets.

* ``forward(kernels, x)``: one jitted bias-free ReLU MLP (ReLU after every layer but the
  last) for targets, dense pruned random networks and ``"direct"`` tickets alike.
* ``structured_forward(net, masks, x)``: the pruned random network evaluated without the
  dense block-diagonal ``M1``: ``y = einsum('bjk,ojk->bo', relu(x[:,:,None] * U'), V')``.
* ``approximation_error``: max per-weight error, a tight-from-below estimate of the sup of
  ``||f(x) - g(x)||_2`` over the unit ball, and an analytic upper bound.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp

from lth_jax import _checks
from lth_jax import construction
from lth_jax import random_net as rn
from lth_jax.masks import apply_masks


@jax.jit
def forward(kernels: Sequence[jax.Array], x: jax.Array) -> jax.Array:
  """Bias-free ReLU MLP: ``x @ K_1 -> relu -> ... -> @ K_L`` (no ReLU on the output).

  Args:
    kernels: list of ``(d_in, d_out)`` kernels.
    x: ``(batch, d_0)``.
  Returns:
    ``(batch, d_L)``.
  """
  for i, k in enumerate(kernels):
    x = x @ k
    if i + 1 < len(kernels):
      x = jax.nn.relu(x)
  return x


@jax.jit
def structured_forward(net: rn.RandomNetwork, masks: dict, x: jax.Array) -> jax.Array:
  """The pruned depth-2l random network, evaluated through its structured view.

  Equal to ``forward(apply_masks(dense_params(net), dense_masks(net, masks)), x)`` up to
  float32 summation order, without materialising the block-diagonal layers.

  Args:
    net: the random network; masks: ``{"u": [(d_in, n)], "v": [(d_out, d_in, n)]}``.
    x: ``(batch, d_0)``.
  Returns:
    ``(batch, d_l)``.
  """
  num = len(net.params["u"])
  for i in range(num):
    u = net.params["u"][i] * masks["u"][i]
    v = net.params["v"][i] * masks["v"][i]
    hidden = jax.nn.relu(x[:, :, None] * u[None])  # (b, d_in, n)
    x = jnp.einsum("bjk,ojk->bo", hidden, v)
    if i + 1 < num:
      x = jax.nn.relu(x)
  return x


def pruned_forward_fn(ticket: construction.Ticket, net=None):
  """``x -> output`` of the pruned network behind ``ticket`` (structured for networks)."""
  if ticket.method == "direct":
    kernels = ticket.effective_kernels
    return lambda x: forward(kernels, x)
  if net is None:
    raise ValueError(f"method {ticket.method!r}: pass the RandomNetwork the ticket prunes")
  return lambda x: structured_forward(net, ticket.masks, x)


def dense_pruned_params(net: rn.RandomNetwork, ticket: construction.Ticket):
  """The ticket as a plain pruned MLP: masked dense kernels of the random network."""
  from lth_jax.masks import dense_masks  # local: avoids a cycle in type-only imports
  return apply_masks(rn.dense_params(net), dense_masks(net, ticket.masks))


class ErrorReport(NamedTuple):
  """Approximation quality of a ticket.

  Attributes:
    max_weight_error: max over layers and weights of the per-weight error.
    sup_error: estimate (from below) of ``sup_{||x|| <= 1} ||f(x) - g(x)||_2``.
    bound: analytic upper bound on the same sup from the per-weight errors.
    worst_input: ``(d_0,)`` unit vector attaining ``sup_error``.
  """

  max_weight_error: jax.Array
  sup_error: jax.Array
  bound: jax.Array
  worst_input: jax.Array


def analytic_bound(target: Sequence[jax.Array], weight_errors: Sequence[jax.Array]) -> jax.Array:
  """Upper bound on ``sup_{||x||<=1} ||f(x) - g(x)||_2`` from per-weight errors.

  Each approximated layer satisfies ``|g_i(z)_o - (W_i z)_o| <= sum_j E_i[o,j] |z_j|``, so
  ``||g_i(z) - W_i z|| <= ||E_i||_2 ||z||``. With ``r_i = prod_{k<=i} ||W_k||_2`` (the
  target's activations' norm bound) and ReLU 1-Lipschitz:
  ``delta_i = ||E_i||_2 (r_{i-1} + delta_{i-1}) + ||W_i||_2 delta_{i-1}``.
  """
  delta = jnp.float32(0.0)
  radius = jnp.float32(1.0)
  for k, e in zip(target, weight_errors):
    w_norm = jnp.linalg.norm(k, ord=2)
    e_norm = jnp.linalg.norm(e, ord=2)
    delta = e_norm * (radius + delta) + w_norm * delta
    radius = radius * w_norm
  return delta


@jax.custom_jvp
def _row_norm(x: jax.Array) -> jax.Array:
  """Euclidean norm over the last axis, ``x: (..., d) -> (...)``."""
  return jnp.sqrt(jnp.sum(x * x, axis=-1))


@_row_norm.defjvp
def _row_norm_jvp(primals, tangents):
  # An explicit rsqrt derivative: with jnp.linalg.norm XLA rewrites the gradient as
  # 0.5 / sqrt(s) when compiled for several partitions but 0.5 * rsqrt(s) on one device,
  # so sharded sweeps' sup errors differed in the last bit. Zero rows get gradient 0.
  (x,), (dx,) = primals, tangents
  s = jnp.sum(x * x, axis=-1)
  inv = jnp.where(s > 0, jax.lax.rsqrt(jnp.where(s > 0, s, 1.0)), 0.0)
  return jnp.sqrt(s), jnp.sum(x * dx, axis=-1) * inv


def sup_output_error(
    f, g, d_in: int, key: chex.PRNGKey, num_points: int = 4096, ascent_steps: int = 50,
    num_starts: int = 16, step_size: float = 0.1,
):
  """Estimates ``sup_{||x||<=1} ||f(x) - g(x)||_2`` from below.

  Bias-free ReLU networks are positively homogeneous, so the sup is on the sphere:
  ``num_points`` random unit vectors, then projected (normalised) gradient ascent on the
  sphere from the ``num_starts`` worst ones. Returns ``(value, worst unit vector)``.
  """
  x = jax.random.normal(key, (num_points, d_in), jnp.float32)
  x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)

  def err(z):
    return _row_norm(f(z) - g(z))

  errs = err(x)
  starts = x[jnp.argsort(-errs)[:num_starts]]

  def total(z):
    return jnp.sum(err(z))

  def step(z, _):
    grad = jax.grad(total)(z)
    grad = grad / (jnp.linalg.norm(grad, axis=-1, keepdims=True) + 1e-30)
    z_new = z + step_size * grad
    z_new = z_new / jnp.linalg.norm(z_new, axis=-1, keepdims=True)
    # keep the better point per start (ascent must never lose the best found)
    better = err(z_new) >= err(z)
    return jnp.where(better[:, None], z_new, z), None

  z, _ = jax.lax.scan(step, starts, None, length=ascent_steps)
  cand = jnp.concatenate([x, z])
  cand_err = err(cand)
  best = jnp.argmax(cand_err)
  return cand_err[best], cand[best]


def approximation_error(
    target: Sequence[jax.Array],
    pruned: construction.Ticket,
    key: chex.PRNGKey,
    num_points: int = 4096,
    *,
    net: rn.RandomNetwork | None = None,
    ascent_steps: int = 50,
) -> ErrorReport:
  """Per-weight, sup-norm (estimated) and analytic errors of a ticket.

  Args:
    target: list of ``(d_in, d_out)`` kernels.
    pruned: the ``Ticket`` from ``find_ticket``.
    key: PRNG key for the sampled unit vectors.
    num_points: random unit vectors before the gradient ascent.
    net: the pruned ``RandomNetwork`` (required for ``"network"``/``"single"``).
    ascent_steps: projected gradient ascent steps from the worst points.

  Returns:
    ``ErrorReport`` (scalars, and the worst input ``(d_0,)``).

  Raises:
    ValueError: ``num_points < 1`` or ``ascent_steps < 0`` (or not ints), a missing
      ``net``, a target whose layer sizes differ from the ticket's (``net.layer_sizes``,
      or the ``"direct"`` ticket's kernels), a ticket that does not fit ``net``, or (when
      concrete) NaN/Inf in the target.
  """
  for name, value, low in (("num_points", num_points, 1), ("ascent_steps", ascent_steps, 0)):
    if not _checks.is_int(value) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
  if pruned.method != "direct" and net is None:
    raise ValueError(f"method {pruned.method!r}: pass net=, the RandomNetwork the ticket prunes")
  if pruned.method == "direct":
    sizes = construction.target_layer_sizes(pruned.effective_kernels)
  else:
    sizes = net.layer_sizes
    for name in ("u", "v"):
      got = [tuple(m.shape) for m in pruned.masks[name]]
      want = [tuple(p.shape) for p in net.params[name]]
      if got != want:
        raise ValueError(f"ticket masks {name} {got} do not fit the network's params {want}: "
                         "pass the RandomNetwork the ticket was found for")
  target = construction.check_target(target, sizes)  # shapes, chaining, finite
  errors = [tuple(e.shape) for e in pruned.weight_errors]
  if errors != [tuple(k.shape) for k in target]:
    raise ValueError(f"ticket weight_errors shapes {errors} do not match the target's "
                     f"{[tuple(k.shape) for k in target]}")
  return _approximation_error(target, pruned, net, key, int(num_points), int(ascent_steps))


@functools.partial(jax.jit, static_argnames=("num_points", "ascent_steps"))
def _approximation_error(target, pruned, net, key, num_points, ascent_steps):
  g = pruned_forward_fn(pruned, net)
  f = lambda x: forward(target, x)
  sup, worst = sup_output_error(f, g, int(target[0].shape[0]), key, num_points, ascent_steps)
  max_w = jnp.max(jnp.stack([jnp.max(e) for e in pruned.weight_errors]))
  return ErrorReport(max_w, sup, analytic_bound(target, pruned.weight_errors), worst)
