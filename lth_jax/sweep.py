"""Width x seed sweeps of the ticket constructions, each whole grid as ONE jitted XLA program.

``sweep_targets(targets, widths, num_seeds, methods, key=...)`` measures, for every target,
construction (``lth_jax.constructions``), width and seed: max and mean per-weight error,
the fraction of weights within ``epsilon``, the sup of ``||f(x) - g(x)||_2`` over the unit
ball (random unit vectors + projected gradient ascent, ``evaluation.sup_output_error``), the
analytic upper bound, accuracy on a dataset when one is given, parameter counts of the random
object and of the ticket, and the over-parameterisation factors. ``sweep`` is the one-target,
one-method call of it. The traced program is ``lth_jax.grid_program``; this module checks
arguments and turns its outputs into ``SweepResult``s.

Per width, the results equal ``find_ticket`` on the width's draw (the first ``w`` copies of
the widest; errors up to float32 rounding of the solver's fixed-point grid; ties may pick
different but equally good subsets). Seeds: target ``t``, seed ``s`` uses
``fold_in(fold_in(key, t), s)``; constructions sharing a random object (``"network"``,
``"single"``) see the same draw, and all see the same evaluation points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import construction
from lth_jax import constructions
from lth_jax import evaluation
from lth_jax import grid_program
from lth_jax import random_net as rn
from lth_jax import stats
from lth_jax import subset_sum
from lth_jax import targets as targets_lib


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """Measurements of one (target, method) over a width x seed grid (numpy, host side).

  Attributes:
    method: the construction (``"network"``, ``"single"``, ``"direct"``, ...).
    layer_sizes: the target's ``(d_0, ..., d_l)``.
    widths: ``(W,)`` copies per input (``"direct"``: coefficients per weight).
    num_seeds: ``S``.
    epsilon: the per-weight threshold of ``fraction_within_epsilon``.
    max_weight_error, mean_weight_error, fraction_within_epsilon: ``(W, S)`` over all
      weights of all layers (``"network"``/``"single"``: a weight's error is the larger of
      its two sign halves' errors).
    sup_error: ``(W, S)`` estimate (from below) of ``sup_{||x||<=1} ||f(x) - g(x)||_2``.
    bound: ``(W, S)`` analytic upper bound on the same sup (``evaluation.analytic_bound``);
      None for a construction it does not bound (``Construction.bounded``: ``lplus1``).
    accuracy: ``(W, S)`` ticket accuracy on the given dataset, or ``None``.
    target_accuracy: the target's accuracy on that dataset, or ``None``.
    params_random: ``(W,)`` parameters of the random object: the dense random network
      (every entry of its ``2l`` kernels), or ``width`` coefficients per weight (direct).
    params_kept: ``(W, S)`` nonzero mask entries of the ticket.
    target_params: weights of the target.
    width_factor: ``(W,)`` random-network width / target width, i.e.
      ``max_i(w d_{i-1}) / max_i d_i`` (``"direct"``: ``w``, coefficients per weight).
    param_factor: ``(W,)`` ``params_random / target_params``.
  """

  method: str
  layer_sizes: tuple
  widths: np.ndarray
  num_seeds: int
  epsilon: float
  max_weight_error: np.ndarray
  mean_weight_error: np.ndarray
  fraction_within_epsilon: np.ndarray
  sup_error: np.ndarray
  bound: np.ndarray | None
  accuracy: np.ndarray | None
  target_accuracy: float | None
  params_random: np.ndarray
  params_kept: np.ndarray
  target_params: int
  width_factor: np.ndarray
  param_factor: np.ndarray

  def rows(self, **extra) -> list[dict]:
    """One dict per (width, seed), plain Python types; ``extra`` is added to every row."""
    out = []
    for i, w in enumerate(self.widths):
      for s in range(self.num_seeds):
        row = dict(extra)
        row.update(
            method=self.method, layer_sizes=list(self.layer_sizes), width=int(w), seed=s,
            epsilon=float(self.epsilon),
            max_weight_error=float(self.max_weight_error[i, s]),
            mean_weight_error=float(self.mean_weight_error[i, s]),
            fraction_within_epsilon=float(self.fraction_within_epsilon[i, s]),
            sup_error=float(self.sup_error[i, s]),
            bound=None if self.bound is None else float(self.bound[i, s]),
            accuracy=None if self.accuracy is None else float(self.accuracy[i, s]),
            target_accuracy=self.target_accuracy,
            params_random=int(self.params_random[i]), params_kept=int(self.params_kept[i, s]),
            target_params=int(self.target_params), width_factor=float(self.width_factor[i]),
            param_factor=float(self.param_factor[i]))
        out.append(row)
    return out


# --------------------------------------------------------------------------------------
# Static bookkeeping: sizes and factors, from the construction registry.
# --------------------------------------------------------------------------------------


def instance_size(method: str, widths: Sequence[int], max_half: int | None = None) -> int:
  """The common padded instance size of a grid (``Construction.instance_size`` at the
  widest width): per sign half for ``"network"`` (capped as ``find_ticket`` caps it),
  every copy for ``"single"`` (no solver call), coefficients per weight for ``"direct"``."""
  return constructions.get(method).instance_size(max(widths), max_half)


def width_factor(layer_sizes: Sequence[int], width: int, method: str) -> float:
  """Random-network width / target width (``"direct"``: ``width``)."""
  sizes = tuple(layer_sizes)
  return constructions.get(method).width_factor(tuple(zip(sizes[:-1], sizes[1:])), width)


def _check_grid(widths, num_seeds, method, epsilon, max_half):
  c = constructions.get(method)  # ValueError naming the methods
  widths = tuple(int(w) for w in widths)
  if not widths or any(w < 1 for w in widths):
    raise ValueError(f"widths must be a non-empty list of positive integers, got {widths}")
  if len(set(widths)) != len(widths):
    raise ValueError(f"widths must be distinct, got {widths}")
  if int(num_seeds) < 1:
    raise ValueError(f"num_seeds must be positive, got {num_seeds}")
  if not 0.0 < float(epsilon) < 1.0:
    raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
  if max_half is not None and not 1 <= int(max_half) <= subset_sum.MAX_N:
    raise ValueError(f"max_half must be in [1, {subset_sum.MAX_N}], got {max_half}")
  size = c.instance_size(max(widths), max_half)
  if c.solves and size > subset_sum.MAX_N:
    raise ValueError(f"method {method!r} solves instances of {size} coefficients at width "
                     f"{max(widths)}; at most {subset_sum.MAX_N} (solver MAX_N)")
  return widths


def _key_ids(target_ids, num_targets):
  if target_ids is None:
    return None
  ids = tuple(int(t) for t in target_ids)
  if len(ids) != num_targets or len(set(ids)) != len(ids) or min(ids) < 0:
    raise ValueError(f"target_ids must be {num_targets} distinct non-negative indices, "
                     f"got {target_ids}")
  return ids


# --------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------


def _prepare_data(dataset, sizes_list):
  if dataset is None:
    return None
  images, labels = dataset
  images = jnp.asarray(images, jnp.float32)
  images = images.reshape(images.shape[0], -1)
  labels = jnp.asarray(labels, jnp.int32)
  if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
    raise ValueError(f"dataset has {images.shape[0]} inputs and {labels.shape[0]} labels")
  for sizes in sizes_list:
    if sizes[0] != images.shape[1]:
      raise ValueError(f"target input size {sizes[0]} does not match the dataset's "
                       f"{images.shape[1]} features per example")
    if int(jnp.max(labels)) >= sizes[-1] or int(jnp.min(labels)) < 0:
      raise ValueError(f"labels must lie in [0, {sizes[-1]}) for a target with {sizes[-1]} "
                       "outputs")
  return images, labels


def _check_methods(kernels, methods, widths, num_seeds, epsilon, max_half) -> dict:
  """``method -> checked widths``; ValueError for repeated methods or a biased target
  swept by a construction that builds no biases."""
  if not methods or len(set(methods)) != len(methods):
    raise ValueError(f"methods must be a non-empty list of distinct methods, got {methods}")
  if any(targets_lib.has_biases(t) for t in kernels):
    plain = [m for m in methods if not construction.takes_biases(m)]
    if plain:
      raise ValueError(f"a target has biases but methods {plain} build none: use 'bias'")
  return {m: _check_grid(widths[m] if isinstance(widths, Mapping) else widths,
                         num_seeds, m, epsilon, max_half) for m in methods}


def sweep_targets(
    targets: Sequence[Sequence[jax.Array]],
    widths: Sequence[int] | Mapping[str, Sequence[int]],
    num_seeds: int,
    methods: Sequence[str] = ("network",),
    *,
    key: chex.PRNGKey,
    epsilon: float = 0.01,
    dataset: tuple[np.ndarray, np.ndarray] | None = None,
    num_points: int = 2048,
    ascent_steps: int = 30,
    max_half: int | None = None,
    distribution: str = "uniform",
    eval_batch: int = 4,
    data_batch: int = 512,
    compiler_options: Mapping[str, int | str | bool] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    target_ids: Sequence[int] | None = None,
) -> list[dict[str, SweepResult]]:
  """Sweeps several targets and constructions over width x seed grids as ONE jitted program.

  Args:
    targets: list of targets, each a list of ``(d_in, d_out)`` kernels (or ``{"kernel",
      "bias"}`` layers: then every method must build biases, ``construction.takes_biases``;
      the biases count as parameters in the error statistics and the bound).
    widths: copies per input (``"direct"``: coefficients per weight), one list for all
      methods or a mapping ``method -> list``.
    num_seeds: seeds ``0 .. num_seeds - 1``.
    methods: registered constructions (``construction.METHODS``).
    key: PRNG key; target ``t`` seed ``s`` uses ``fold_in(fold_in(key, t), s)``.
    epsilon: threshold of ``fraction_within_epsilon`` (per weight), in (0, 1).
    dataset: ``(images, labels)``; accuracy is measured when given (targets must take the
      flattened images and have one output per class).
    num_points, ascent_steps: sup-error estimate (``evaluation.sup_output_error``).
    max_half: ``"network"`` instance size per sign half for every width (default:
      ``default_max_half(width)`` per width, as ``find_ticket``).
    distribution: random network entries, ``"uniform"`` or ``"normal"``.
    eval_batch: grid points evaluated together (memory vs speed).
    data_batch: examples per accuracy batch.
    compiler_options: XLA options for the grid program, e.g.
      ``{"xla_backend_optimization_level": 1}`` (faster compiles, slower solving).
    mesh: a 1-D device mesh (``make_instance_mesh``): every device runs the grid program
      on its block of seeds (the seed count is padded to a multiple of the device count,
      extra seeds are computed and dropped). Same results, float32 grid reductions up to
      the last bit.
    target_ids: each target's index ``t`` in the seed keys (default its position), so a
      subset of a sweep's targets, run alone, reproduces their results in the whole sweep.

  Returns:
    ``results[t][method]``: a ``SweepResult`` per target and method.
  """
  if not targets:
    raise ValueError("no targets")
  kernels = tuple(targets_lib.check_target(t, allow_bias=True) for t in targets)
  sizes = [targets_lib.target_layer_sizes(k) for k in kernels]
  methods = tuple(methods)
  per_method = _check_methods(kernels, methods, widths, num_seeds, epsilon, max_half)
  if distribution not in rn.DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {rn.DISTRIBUTIONS}, got {distribution!r}")
  if num_points < 1 or ascent_steps < 0 or eval_batch < 1 or data_batch < 1:
    raise ValueError("num_points, eval_batch and data_batch must be positive, ascent_steps "
                     "non-negative")
  data = _prepare_data(dataset, sizes)
  key_ids = _key_ids(target_ids, len(kernels))
  specs = tuple(grid_program.grid_spec(t, m, per_method[m], max_half)
                for t in range(len(kernels)) for m in methods)
  opts = tuple(sorted(dict(num_points=int(num_points), ascent_steps=int(ascent_steps),
                           eval_batch=int(eval_batch), data_batch=int(data_batch),
                           distribution=distribution).items()))
  options = tuple(sorted(compiler_options.items())) if compiler_options else None
  raw = grid_program.run_grid(kernels, key, jnp.float32(epsilon), data, specs=specs,
                              num_seeds=int(num_seeds), opts=opts, options=options, mesh=mesh,
                              key_ids=key_ids)
  results = [dict() for _ in kernels]
  for spec, r in zip(specs, raw):
    results[spec.target][spec.method] = _result(spec, kernels[spec.target], r,
                                                int(num_seeds), float(epsilon))
  return results


def _num_random(c, kernels, shapes, width) -> int:
  """The random object's parameters at ``width``: ``num_params``, or ``num_params_of`` an
  abstract draw (nothing computed) where the construction defines it (conv's bias units)."""
  if c.num_params_of is None:
    return c.num_params(shapes, width)
  return c.num_params_of(jax.eval_shape(lambda k: c.sample(jax.random.key(0), k, width),
                                        kernels))


def _result(spec, kernels, r, num_seeds, epsilon) -> SweepResult:
  """One grid's host outputs as a ``SweepResult`` (counts and the bound on the host)."""
  c = constructions.get(spec.method)
  shapes = tuple(tuple(k.shape) for k in targets_lib.split_layers(kernels)[0])
  # every target parameter: the kernels' entries and the biases of biased layers
  target_params = sum(int(np.size(a)) for a in jax.tree.leaves(kernels))
  p_random = np.asarray([_num_random(c, kernels, shapes, w) for w in spec.widths], np.int64)
  return SweepResult(
      method=spec.method, layer_sizes=targets_lib.target_layer_sizes(kernels),
      widths=np.asarray(spec.widths), num_seeds=num_seeds, epsilon=epsilon,
      max_weight_error=np.asarray(r["max_weight_error"]),
      mean_weight_error=np.asarray(r["mean_weight_error"]),
      fraction_within_epsilon=np.asarray(r["fraction_within_epsilon"]),
      sup_error=np.asarray(r["sup_error"]),
      bound=evaluation.analytic_bound(kernels, r["weight_errors"], host=True,
                                      bias_errors=r["bias_errors"]) if c.bounded else None,
      accuracy=None if r["accuracy"] is None else np.asarray(r["accuracy"]),
      target_accuracy=None if r["target_accuracy"] is None else float(r["target_accuracy"]),
      params_random=p_random, params_kept=np.asarray(r["params_kept"]),
      target_params=target_params,
      width_factor=np.asarray([c.width_factor(shapes, w) for w in spec.widths]),
      param_factor=p_random / target_params)


def sweep(
    target: Sequence[jax.Array],
    widths: Sequence[int],
    num_seeds: int,
    method: str = "network",
    **kwargs,
) -> SweepResult:
  """One target, one method: ``sweep_targets([target], widths, num_seeds, (method,),
  **kwargs)[0][method]`` (keyword arguments as ``sweep_targets``)."""
  return sweep_targets([target], widths, num_seeds, (method,), **kwargs)[0][method]


def copies_needed(result: SweepResult, epsilon: float, metric: str = "sup_error") -> np.ndarray:
  """Per seed, the smallest width of the grid from which ``metric <= epsilon`` holds at
  every larger width of the grid (``inf`` if never). ``(S,)`` float."""
  order = np.argsort(result.widths)
  ok = np.asarray(getattr(result, metric))[order] <= epsilon  # (W, S)
  return stats.first_sustained(np.asarray(result.widths)[order], ok)
