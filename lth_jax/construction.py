"""Finding tickets: masks that prune a random object to approximate a target.

``find_ticket`` is generic over the construction registry (``lth_jax.constructions``):
``"network"`` (Theorem 1, a real pruned depth-2l network), ``"single"`` (its one-product
baseline) and ``"direct"`` (the official code's coefficient shortcut; no network). Steps:
validate (``check``), build the SubsetSum instances (``instances``), solve them (one
``solve_fn`` call per instance size, outside ``jit``) or let the construction ``choose``,
and ``assemble`` the masks. Per-instance results do not depend on the steps' boundaries.

The SubsetSum solver is pluggable (``find_ticket(..., objective=, epsilon=, solve_fn=)``):
``"min_error"`` (``solve_subset_sum``, the default), ``"fewest_terms"``
(``fewest_terms.solve_fewest_terms``: the fewest terms within ``epsilon``), or any
``solve_fn(targets (B,), coefficients (B, m))`` returning ``.mask`` and ``.error`` (e.g. a
sharded or a blocked host-side solver).

Target kernels use the JAX convention ``(d_in, d_out)``: ``W = kernel.T``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from lth_jax import _checks
from lth_jax import constructions
from lth_jax import objectives
from lth_jax import targets as targets_lib

METHODS = constructions.names()


@struct.dataclass
class Ticket:
  """The result of ``find_ticket``.

  Attributes:
    masks: 0/1 uint8 pytree over the random object: ``{"u": [...], "v": [...]}`` shaped
      like a network's params; for ``"direct"``, ``{"coefficients": [...]}`` with one
      ``(d_out, d_in, n)`` mask per layer (which coefficients each weight sums).
    weight_errors: per layer, shaped like the target kernel, per-weight errors (for
      ``"network"``: the larger of the two sign halves' errors, the quantity the error
      bound uses).
    effective_kernels: the construction's compact form (``effective_forward``): per layer
      ``(2, d_in, d_out)`` for network methods (the kept products' sums over the u > 0 and
      u < 0 copies), the approximated kernel for ``"direct"``.
    num_params_random: parameters of the random object (dense random network, or
      ``n`` coefficients per weight for ``"direct"``).
    num_params_kept: nonzero mask entries (for network methods, an ``M1`` entry counts
      only when its unit feeds some kept ``M2`` entry).
    method: the construction's name.
    bias_errors: per layer ``(d_out,)`` errors of the target's biases for constructions
      that build biases (``"bias"``: zero error for a bias-free layer); None otherwise.
  """

  masks: dict
  weight_errors: list
  effective_kernels: list
  num_params_random: int = struct.field(pytree_node=False)
  num_params_kept: jax.Array
  method: str = struct.field(pytree_node=False)
  bias_errors: list | None = None


def _caps(max_half, num_layers: int, limit: int) -> tuple:
  """Per-layer instance caps (``None``: the construction's default)."""
  if max_half is None:
    return (None,) * num_layers
  caps = (max_half,) * num_layers if _checks.is_int(max_half) else tuple(max_half)
  if len(caps) != num_layers or not all(_checks.is_int(c) and 1 <= c <= limit for c in caps):
    raise ValueError(f"max_half must be in [1, {limit}] per layer, got {max_half}")
  return tuple(int(c) for c in caps)


def find_ticket(
    random_net,
    target: Sequence[jax.Array],
    method: str = "network",
    *,
    max_half: int | Sequence[int] | None = None,
    objective: str = "min_error",
    epsilon: float | None = None,
    solve_fn: objectives.SolveFn | None = None,
) -> Ticket:
  """Masks that prune ``random_net`` to approximate ``target``.

  Args:
    random_net: the construction's random object: a ``RandomNetwork`` (``"network"``,
      ``"single"``), ``DirectCoefficients`` (``"direct"``) or ``BiasNetwork`` (``"bias"``).
    target: list of kernels ``(d_in, d_out)`` (``"direct"`` also takes conv kernels
      ``(kh, kw, in, out)``, solved as ``(kh * kw * in, out)`` matrices); ``"bias"`` also
      takes ``{"kernel", "bias"}`` layers (``targets.split_layers``).
    method: a registered construction (``METHODS``).
    max_half: per-sign-half instance size cap (``"network"``), one int or one per layer;
      default ``constructions.network.default_max_half(copies)``.
    objective: which subset each SubsetSum instance gets
      (``objectives.objective_solver``): ``"min_error"`` (closest) or ``"fewest_terms"``
      (fewest terms within ``epsilon``). Constructions that solve no SubsetSum
      (``"single"``) ignore it.
    epsilon: the per-instance tolerance of ``"fewest_terms"``.
    solve_fn: instead of ``objective``, a solver ``(targets (B,), coefficients (B, m))``
      -> result with ``.mask`` bool ``(B, m)`` and ``.error`` ``(B,)``. It is called
      outside ``jit`` with all layers' instances of one size at once (one call per
      distinct size), so it may be jitted, sharded or host code. Per-instance results
      must not depend on the batch they come in.

  Returns:
    Ticket (masks 0/1 uint8, per-weight errors, effective kernels, parameter counts).

  Raises:
    ValueError: an unknown method or objective, a bad ``max_half``, a target that is
      empty, does not chain or does not match the random object, a random object of the
      wrong kind or shapes, or (for concrete arrays) NaN/Inf in the target or the random
      object.
  """
  construction = constructions.get(method)
  if solve_fn is not None and objective != "min_error":
    raise ValueError(f"give objective ({objective!r}) or solve_fn, not both")
  limit = objectives.objective_max_n(objective)  # (validates the name)
  kernels = construction.check(random_net, target)
  widths = construction.widths(random_net)
  caps = _caps(max_half, len(widths), limit)
  sizes = tuple(construction.instance_size(w, c) for w, c in zip(widths, caps))
  if construction.solves and max(sizes) > limit:
    raise ValueError(f"method {method!r} solves instances of up to {max(sizes)} "
                     f"coefficients; objective {objective!r} solves at most {limit}")
  inst = _instances(random_net, kernels, construction=construction, widths=widths,
                    sizes=sizes)
  if construction.solves:
    solve_fn = solve_fn or objectives.objective_solver(objective, epsilon)
    solutions = objectives.solve_grouped(inst.problems, solve_fn)
  else:
    solutions = _choose(inst, construction=construction)
  out = _assemble(kernels, inst, solutions, construction=construction)
  shapes = tuple(tuple(k.shape) for k in targets_lib.split_layers(kernels)[0])
  num_random = (construction.num_params_of(random_net) if construction.num_params_of
                else construction.num_params(shapes, widths))
  return Ticket(out.masks, out.weight_errors, out.effective, num_random, out.kept, method,
                out.bias_errors)


def takes_biases(method: str) -> bool:
  """Whether construction ``method`` accepts targets with biases: its ``check`` on a
  biased one-layer target, traced on an abstract one-copy draw for it (nothing computed)."""
  c = constructions.get(method)
  kernel = jnp.ones((1, 1))

  def check(k, b):
    layers = [{"kernel": k, "bias": b}]
    return c.check(c.sample(jax.random.key(0), layers, 1), layers)
  try:
    jax.eval_shape(check, kernel, jnp.ones(1))
  except ValueError:
    return False
  return True


# The steps around the solver, jitted per construction and sizes.
@functools.partial(jax.jit, static_argnames=("construction", "widths", "sizes"))
def _instances(obj, kernels, *, construction, widths, sizes):
  return construction.instances(obj, kernels, widths, sizes, sizes=sizes)


@functools.partial(jax.jit, static_argnames=("construction",))
def _choose(inst, *, construction):
  return construction.choose(inst.problems, inst.aux)


@functools.partial(jax.jit, static_argnames=("construction",))
def _assemble(kernels, inst, solutions, *, construction):
  return construction.assemble(kernels, inst, solutions)
