"""Forward passes, errors, bounds and accuracy of tickets (evaluate stage).

* ``forward(kernels, x)`` (``targets.forward``): one jitted ReLU MLP for targets (with or
  without biases), dense pruned random networks and ``"direct"`` kernels alike.
* ``structured_forward(obj, masks, x, method)``: a construction's pruned random object
  evaluated from its random weights and masks (for ``"network"`` without the dense
  block-diagonal ``M1``: ``y = einsum('bjk,ojk->bo', relu(x[:,:,None] * U'), V')``).
* ``approximation_error``: max per-weight error, a tight-from-below estimate of the sup of
  ``||f(x) - g(x)||_2`` over the unit ball (random points, ``±e_j`` and gradient ascent),
  and an analytic upper bound.
* ``analytic_bound`` (batched over leading axes), ``sup_output_error``, ``accuracy``: the
  one implementation of each, shared by tickets, the sweep's grid program and training.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import _checks
from lth_jax import constructions
from lth_jax import construction
from lth_jax import random_net as rn
from lth_jax.targets import check_target, forward, split_layers, target_layer_sizes


def structured_forward(net, masks: dict, x: jax.Array, method: str = "network") -> jax.Array:
  """The pruned random object of construction ``method`` from its weights and masks.

  For ``"network"`` (and ``"single"``): the depth-2l network through its structured view,
  equal to ``forward(dense_pruned_params(net, ticket), x)`` up to float32 summation order.

  Args:
    net: the random object (a ``RandomNetwork`` for network methods);
    masks: the ticket's masks (``{"u": [(d_in, n)], "v": [(d_out, d_in, n)]}``).
    x: ``(batch, d_0)``.
  Returns:
    ``(batch, d_l)``.
  """
  return constructions.get(method).structured_forward(net, masks, x)


def pruned_forward_fn(ticket: construction.Ticket, net=None) -> Callable:
  """``x -> output`` of the pruned network behind ``ticket``: from the random object when
  given (required for constructions that prune a network), else the compact form."""
  c = constructions.get(ticket.method)
  if net is not None:
    return lambda x: c.structured_forward(net, ticket.masks, x)
  if c.prunes_network:
    raise ValueError(f"method {ticket.method!r}: pass the RandomNetwork the ticket prunes")
  return lambda x: c.effective_forward(ticket.effective_kernels, x)


def dense_pruned_params(net, ticket: construction.Ticket) -> list[jax.Array]:
  """The ticket as a plain pruned MLP: the construction's masked dense kernels."""
  return constructions.get(ticket.method).dense_params(net, ticket.masks)


class ErrorReport(NamedTuple):
  """Approximation quality of a ticket.

  Attributes:
    max_weight_error: max over layers and weights (and target biases, for tickets with
      ``bias_errors``) of the per-parameter error.
    sup_error: estimate (from below) of ``sup_{||x|| <= 1} ||f(x) - g(x)||_2``.
    bound: analytic upper bound on the same sup from the per-weight errors (NaN for a
      construction it does not bound, ``Construction.bounded``).
    worst_input: ``(d_0,)`` unit vector attaining ``sup_error``.
  """

  max_weight_error: jax.Array
  sup_error: jax.Array
  bound: jax.Array
  worst_input: jax.Array


def analytic_bound(target: Sequence, weight_errors: Sequence[jax.Array], *,
                   host: bool = False, bias_errors: Sequence[jax.Array] | None = None
                   ) -> jax.Array | np.ndarray:
  """Upper bound on ``sup_{||x||<=1} ||f(x) - g(x)||_2`` from per-weight (and per-bias)
  errors.

  Each approximated layer satisfies ``|g_i(z)_o - (W_i z + b_i)_o| <= sum_j E_i[o,j] |z_j|
  + |e_i[o]|`` (``e_i``: the bias errors), so ``||g_i(z) - W_i z - b_i|| <= ||E_i||_2 ||z||
  + ||e_i||``. The target's activations satisfy ``||z_i|| <= r_i`` with ``r_0 = 1`` and
  ``r_i = ||W_i||_2 r_{i-1} + ||b_i||`` (ReLU does not increase norms), and with ReLU
  1-Lipschitz the output deviations ``delta_i`` satisfy
  ``delta_i = ||E_i||_2 (r_{i-1} + delta_{i-1}) + ||e_i|| + ||W_i||_2 delta_{i-1}``
  (the ticket's input to layer ``i`` has norm at most ``r_{i-1} + delta_{i-1}``). Without
  biases this is the bias-free recursion term for term.

  Args:
    target: layers: kernels ``(d_in, d_out)`` or ``{"kernel", "bias"}`` dicts.
    weight_errors: per layer ``(..., d_in, d_out)``: batched over leading axes (a grid).
    host: numpy in float64 (outside ``jit``; the sweep's reports) instead of traceable
      float32 ``jnp``.
    bias_errors: per layer ``(..., d_out)`` (batched like ``weight_errors``), or None.
  Returns:
    the bound, shape ``weight_errors[0].shape[:-2]``.
  """
  xp, dtype = (np, np.float64) if host else (jnp, jnp.float32)
  kernels, biases = split_layers(target)
  bias_errors = [None] * len(kernels) if bias_errors is None else bias_errors
  delta = xp.zeros(np.shape(weight_errors[0])[:-2], dtype)
  radius = dtype(1.0)
  for k, b, e, e_b in zip(kernels, biases, weight_errors, bias_errors):
    w_norm = xp.linalg.norm(xp.asarray(k, dtype), ord=2)
    e_norm = xp.linalg.norm(xp.asarray(e, dtype), ord=2, axis=(-2, -1))
    delta = e_norm * (radius + delta) + w_norm * delta
    if e_b is not None:
      delta = delta + xp.linalg.norm(xp.asarray(e_b, dtype), axis=-1)
    radius = radius * w_norm
    if b is not None:
      radius = radius + xp.linalg.norm(xp.asarray(b, dtype))
  return delta


def accuracy(apply_fn: Callable, images: jax.Array, labels: jax.Array,
             batch: int = 512) -> jax.Array:
  """Fraction of ``argmax apply_fn(images) == labels``, a ``lax.map`` over batches of
  ``batch`` examples (padding examples get label -1: never correct). Traceable: the grid
  program calls it inside its one program.

  Args:
    apply_fn: ``(batch, ...) -> (batch, classes)`` logits.
    images: ``(n, ...)``; labels: ``(n,)`` int.
  """
  n = images.shape[0]
  pad = (-n) % batch
  x = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
  x = x.reshape((-1, batch) + images.shape[1:])
  y = jnp.pad(labels, (0, pad), constant_values=-1).reshape(-1, batch)
  correct = jax.lax.map(lambda xy: jnp.sum(jnp.argmax(apply_fn(xy[0]), -1) == xy[1]), (x, y))
  return jnp.sum(correct) / n


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

  Bias-free ReLU networks are positively homogeneous, so the sup is on the sphere (with
  biases it need not be: the sphere's points still give a lower bound of the ball's sup):
  ``num_points`` random unit vectors and the ``2 d_in`` points ``±e_j``, then projected
  (normalised) gradient ascent on the sphere from the ``num_starts`` worst ones. For a
  one-layer ticket the output error at ``x = ±e_j`` is input ``j``'s vector of errors
  (for ``"network"``/``"single"``: of the ``u > 0`` half at ``+e_j``, of the ``u < 0`` half
  at ``-e_j``), so the estimate is never below the largest per-weight error; random points
  alone could fall below it. Returns ``(value, worst unit vector)``.
  """
  x = jax.random.normal(key, (num_points, d_in), jnp.float32)
  x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  basis = jnp.eye(d_in, dtype=jnp.float32)
  x = jnp.concatenate([x, basis, -basis])

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
    num_points: random unit vectors before the gradient ascent (the ``2 d_0`` points
      ``±e_j`` are always added).
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
  c = constructions.get(pruned.method)
  if c.prunes_network and net is None:
    raise ValueError(f"method {pruned.method!r}: pass net=, the RandomNetwork the ticket prunes")
  if not c.prunes_network:
    sizes = target_layer_sizes(pruned.effective_kernels)
  else:
    sizes = net.layer_sizes
    got = jax.tree.map(jnp.shape, pruned.masks)
    # the maskable entries: params, or a construction's own view (``BiasNetwork.maskable``)
    want = jax.tree.map(jnp.shape, getattr(net, "maskable", None) or net.params)
    if got != want:
      raise ValueError(f"ticket masks {got} do not fit the network's params {want}: "
                       "pass the RandomNetwork the ticket was found for")
  target = check_target(target, sizes, allow_bias=True)  # shapes, chaining, finite
  if pruned.bias_errors is None and any(b is not None for b in split_layers(target)[1]):
    raise ValueError(f"method {pruned.method!r} builds no biases: the target has biases")
  errors = [tuple(e.shape) for e in pruned.weight_errors]
  kernels = split_layers(target)[0]
  if errors != [tuple(k.shape) for k in kernels]:
    raise ValueError(f"ticket weight_errors shapes {errors} do not match the target's "
                     f"{[tuple(k.shape) for k in kernels]}")
  return _approximation_error(target, pruned, net, key, int(num_points), int(ascent_steps))


@functools.partial(jax.jit, static_argnames=("num_points", "ascent_steps"))
def _approximation_error(target, pruned, net, key, num_points, ascent_steps):
  g = pruned_forward_fn(pruned, net)
  f = lambda x: forward(target, x)
  d_in = int(split_layers(target)[0][0].shape[0])
  sup, worst = sup_output_error(f, g, d_in, key, num_points, ascent_steps)
  max_w = jnp.max(jnp.stack([jnp.max(e) for e in pruned.weight_errors]
                            + [jnp.max(e) for e in pruned.bias_errors or []]))
  bound = analytic_bound(target, pruned.weight_errors, bias_errors=pruned.bias_errors)
  if not constructions.get(pruned.method).bounded:  # the bound does not apply: say so
    bound = jnp.full_like(bound, jnp.nan)
  return ErrorReport(max_w, sup, bound, worst)


def dense_check(net, ticket: construction.Ticket, x: jax.Array) -> float:
  """Max |structured - dense| output difference, relative to the dense output's max |.|:
  the pruned network as literally masked dense random kernels vs its structured view.

  Args:
    net: the random network the ticket prunes; ticket: from ``find_ticket``.
    x: ``(batch, ...)`` inputs, flattened to ``(batch, d_0)`` for constructions whose dense
      kernels ``targets.forward`` runs; as given (e.g. images) for one with its own
      ``dense_forward``.
  """
  c = constructions.get(ticket.method)
  x = jnp.asarray(x, jnp.float32)
  if c.dense_forward is None:
    x = x.reshape(x.shape[0], -1)
    dense = forward(dense_pruned_params(net, ticket), x)
  else:
    dense = c.dense_forward(dense_pruned_params(net, ticket), x)
  structured = structured_forward(net, ticket.masks, x, ticket.method)
  scale = max(float(jnp.max(jnp.abs(dense))), 1e-30)
  return float(jnp.max(jnp.abs(dense - structured))) / scale


def ticket_error_stats(ticket: construction.Ticket, epsilon: float) -> dict:
  """Error statistics over every target parameter (Experiment 1's row fields): the weights,
  and the biases when the ticket builds them (``bias_errors``; then also the biases' own
  counts). Host numpy."""
  errors = np.concatenate([np.asarray(e).reshape(-1) for e in ticket.weight_errors
                           + (ticket.bias_errors or [])])
  bad = errors > np.float32(epsilon)
  out = dict(fraction_within_eps=float(1.0 - bad.mean()), weights_missing_eps=int(bad.sum()),
             max_weight_error=float(errors.max()),
             worst_missing_error=float(errors[bad].max()) if bad.any() else 0.0,
             mean_weight_error=float(errors.mean()))
  if ticket.bias_errors is not None:
    b = np.concatenate([np.asarray(e).reshape(-1) for e in ticket.bias_errors])
    out.update(biases_missing_eps=int((b > np.float32(epsilon)).sum()),
               max_bias_error=float(b.max()), num_biases=int(b.size))
  return out
