"""The construction interface and its registry.

A construction turns a random object (a random network, or coefficients) into a ticket for
a target by pruning only. Each one is a module of pure functions bundled in a
``Construction`` and registered by name; ``find_ticket``, the sweep's grid program,
Experiment 1 and streaming read the registry and never branch on a name. Adding one = a new
module here defining the functions below and ending in
``register(from_module(sys.modules[__name__], name, stream=..., prunes_network=...))``, plus
its import in ``constructions/__init__``.

The steps and who calls them:

1. ``sample(key, target, width, *, distribution)``: the random object, a pytree. NESTED in
   ``width``: the draw at ``w`` equals the first ``w`` copies of any wider draw from the same
   key, so a grid samples once at its widest width.
2. ``instances(obj, kernels, width, cap, *, sizes) -> Instances``: the SubsetSum problems
   (``(targets, coefficients (..., m))`` pairs, ``m = sizes[layer]`` static) and what
   assembly needs (``aux``). ``width`` and ``cap`` are ints or traced int32 scalars, one for
   all layers or one per layer: copies at or beyond ``width`` and instance slots at or
   beyond ``cap`` must not be used (zero coefficients, never chosen).
3. The problems are solved by a ``solve_fn`` (``objectives.solve_grouped``) or, where
   ``choose`` is given, by ``choose(problems, aux) -> [(mask, error)]`` (no SubsetSum).
4. ``assemble(problems, aux, solutions) -> Assembled``: masks, per-weight errors
   (kernel-shaped), the compact ``effective`` form, the kept-parameter count and, for
   constructions that build target biases, per-bias errors (``bias_errors``).
5. ``effective_forward(effective, x)``: the pruned network's output from the compact form
   (fast; the grid evaluates with it). ``structured_forward(obj, masks, x)``: the same
   from the random weights and the masks. ``dense_params(obj, masks)``: the literal masked
   dense layers, run by ``targets.forward`` (kernels, or ``{"kernel", "bias"}`` dicts for a
   random network with biases), or by the module's ``dense_forward`` when it defines one
   (e.g. a CNN's). All three agree (tests check it).

Targets: ``check`` returns the target layers; bias-free constructions refuse biased layers
(``targets.check_target``), ``"bias"`` and ``"conv"`` take both (``targets.split_layers``).

Static bookkeeping: ``instance_size(width, cap)`` (``cap=None``: the construction's default),
``num_params(kernel_shapes, width)`` (``find_ticket`` uses ``num_params_of(obj)`` where a
module defines it: conv's optional bias units), ``width_factor(kernel_shapes, width)`` and
``depth(num_target_layers)``. ``stream``: the seed key's ``fold_in`` that draws the object in
the grid; constructions with the same stream share one draw, so they must share ``sample``
(stream 2 is the grid's evaluation points).

Every step 2-5 function is traceable: the grid vmaps them over (width, seed).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax

# The grid's evaluation points use fold_in(seed_key, EVAL_STREAM): no construction may.
EVAL_STREAM = 2


class Instances(NamedTuple):
  """``problems``: list of ``(targets (...), coefficients (..., m))``; ``aux``: any pytree
  ``assemble`` (and ``choose``) read."""

  problems: list
  aux: Any


class Assembled(NamedTuple):
  """A ticket's arrays.

  Attributes:
    masks: 0/1 uint8 pytree over the random object's entries.
    weight_errors: per layer, shaped like the target kernel: each weight's error.
    effective: the compact form ``effective_forward`` runs (``Ticket.effective_kernels``).
    kept: int32 scalar, nonzero mask entries that the pruned network uses.
    bias_errors: per layer ``(d_out,)``, each target bias's error, for constructions that
      build biases (``"bias"``); None for the others (their targets are bias-free).
  """

  masks: Any
  weight_errors: list
  effective: list
  kept: jax.Array
  bias_errors: list | None = None


@dataclasses.dataclass(frozen=True)
class Construction:
  """One construction's pure functions (see the module doc); hashable, so jit may take it
  as a static argument."""

  name: str
  stream: int
  prunes_network: bool  # evaluation needs the random object (``net=``) for the real forward
  sample: Callable
  check: Callable  # (obj, target) -> validated float32 kernels; ValueError on bad input
  widths: Callable  # obj -> per-layer width (copies / coefficients per weight)
  instance_size: Callable
  instances: Callable
  assemble: Callable
  effective_forward: Callable
  structured_forward: Callable
  dense_params: Callable
  num_params: Callable
  width_factor: Callable
  depth: Callable
  choose: Callable | None = None
  dense_forward: Callable | None = None  # (dense_params, x) -> output; None: targets.forward
  # Whether ``evaluation.analytic_bound`` (per-weight errors pushed through the target's
  # layers) bounds the pruned network's sup error; a module opts out with ``BOUNDED = False``.
  bounded: bool = True
  # obj -> its dense parameter count, for a draw whose count is more than its kernel shapes
  # and widths say (conv's optional bias units); None: num_params(kernel_shapes, widths)
  num_params_of: Callable | None = None

  @property
  def solves(self) -> bool:
    """Whether its problems go to a SubsetSum solver (else ``choose`` picks)."""
    return self.choose is None


_FUNCTIONS = tuple(f.name for f in dataclasses.fields(Construction)
                   if f.name not in ("name", "stream", "prunes_network", "choose",
                                     "dense_forward", "bounded", "num_params_of"))


def from_module(module, name: str, *, stream: int, prunes_network: bool) -> Construction:
  """The ``Construction`` of a module defining every interface function under its field
  name (``sample``, ``check``, ..., and ``choose`` if it picks instead of solving)."""
  return Construction(name=name, stream=stream, prunes_network=prunes_network,
                      choose=getattr(module, "choose", None),
                      dense_forward=getattr(module, "dense_forward", None),
                      bounded=getattr(module, "BOUNDED", True),
                      num_params_of=getattr(module, "num_params_of", None),
                      **{f: getattr(module, f) for f in _FUNCTIONS})


_REGISTRY: dict[str, Construction] = {}


def register(construction: Construction) -> Construction:
  """Adds ``construction`` under its name (once). Returns it."""
  if construction.name in _REGISTRY:
    raise ValueError(f"construction {construction.name!r} is already registered")
  if construction.stream == EVAL_STREAM:
    raise ValueError(f"stream {EVAL_STREAM} draws the grid's evaluation points")
  for other in _REGISTRY.values():
    if other.stream == construction.stream and other.sample is not construction.sample:
      raise ValueError(f"{construction.name!r} shares stream {other.stream} with "
                       f"{other.name!r} but samples differently")
  _REGISTRY[construction.name] = construction
  return construction


def names() -> tuple[str, ...]:
  """Registered names, in registration order."""
  return tuple(_REGISTRY)


def get(name: str) -> Construction:
  """The construction registered as ``name``; ValueError naming the choices otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f"method must be one of {names()}, got {name!r}")
  return _REGISTRY[name]


def per_layer(value, layer: int):
  """``value[layer]`` for a per-layer sequence, else ``value`` (one for all layers)."""
  return value[layer] if isinstance(value, (tuple, list)) else value


def layer_sizes_of(kernel_shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
  """``(d_0, ..., d_l)`` of 2-D kernel shapes ``(d_in, d_out)``."""
  return (int(kernel_shapes[0][0]),) + tuple(int(s[1]) for s in kernel_shapes)


def pair_forward(pairs: Sequence[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
  """Per layer ``z -> relu(z) @ P - relu(-z) @ N`` (``P``, ``N``: ``(d_in, d_out)``), ReLU
  between layers (not after the last). ``x``: ``(batch, d_0)``."""
  for i, (pos, neg) in enumerate(pairs):
    x = jax.nn.relu(x) @ pos - jax.nn.relu(-x) @ neg
    if i + 1 < len(pairs):
      x = jax.nn.relu(x)
  return x
