"""The sweep's grid program: every (target, construction) width x seed grid as ONE XLA program.

Driven by the construction registry (``lth_jax.constructions``); nothing here knows a
construction by name. No Python loop over widths or seeds around jitted calls:

* Nested draws: per target, seed and construction ``stream``, the random object is sampled
  once at the widest width of the grid (``Construction.sample`` is nested in the width),
  from ``fold_in(seed_key, stream)``; constructions sharing a stream share the draw (the
  ``"network"`` and ``"single"`` networks are the same).
* Instances: ``Construction.instances`` at every (width, seed), vmapped, with the width and
  the per-width cap traced and the instance size the grid's common size ``m`` (zero
  coefficients pad narrower widths: they never change a subset sum, so each width keeps its
  optimum).
* All SubsetSum instances of one size (every target, construction, width and seed) go to
  ONE ``solve_subset_sum`` call (``objectives.solve_grouped``); constructions with a
  ``choose`` pick instead. Then ``Construction.assemble``, vmapped.
* Evaluation (sup error, accuracy) is a ``lax.map`` over the grid points of a target whose
  constructions share an ``effective_forward``, inside the same program, so memory stays
  that of a few grid points.

Seeds: target ``t``, seed ``s`` uses ``fold_in(fold_in(key, t), s)``; evaluation points come
from its ``fold_in(., base.EVAL_STREAM)``, the same for every construction, so constructions
are compared on identical randomness.
"""

from __future__ import annotations

import collections
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from lth_jax import constructions
from lth_jax import sharding
from lth_jax import evaluation
from lth_jax import objectives
from lth_jax import subset_sum
from lth_jax.constructions import base
from lth_jax.targets import forward, has_biases, split_layers

# Traces of the grid program (one per distinct static configuration); tests read it.
TRACE_COUNTS: collections.Counter = collections.Counter()


class GridSpec(NamedTuple):
  """One (target, construction) grid (static, hashable).

  Attributes:
    target: index into the targets. method: the construction's name.
    widths: ``(W,)`` widths. caps: per width, the instance cap (``instance_size(w, cap)``).
    size: the common instance size ``m`` (``instance_size(max(widths), cap)``).
  """

  target: int
  method: str
  widths: tuple
  caps: tuple
  size: int


def grid_spec(target: int, method: str, widths: Sequence[int],
              max_half: int | None) -> GridSpec:
  """The static description of one grid (``max_half``: the user's cap, or None)."""
  c = constructions.get(method)
  widths = tuple(int(w) for w in widths)
  return GridSpec(target, method, widths, tuple(c.instance_size(w, max_half) for w in widths),
                  c.instance_size(max(widths), max_half))


def seed_keys(key, target_index: int, num_seeds: int) -> jax.Array:
  """``(num_seeds,)`` keys of target ``target_index``: seed ``s`` is
  ``fold_in(fold_in(key, target_index), s)``."""
  root = jax.random.fold_in(key, target_index)
  return jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.arange(num_seeds))


def _flat(a):
  """``(W, S, ...)`` -> ``(W * S, ...)``."""
  return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


def _grid_vmap(fn, in_axes_seed):
  """``fn`` over (width, seed): ``in_axes_seed`` maps the per-seed axis of each argument."""
  return jax.vmap(jax.vmap(fn, in_axes=in_axes_seed))


def _draws(targets, keys, specs, distribution):
  """Per ``(target, stream)`` the random objects of every seed, at the widest width that
  any spec of that stream needs (leaves ``(S, ...)``)."""
  widest = {}
  for spec in specs:
    c = constructions.get(spec.method)
    slot = (spec.target, c.stream)
    widest[slot] = (c, max(widest.get(slot, (c, 0))[1], max(spec.widths)))
  draws = {}
  for (t, stream), (c, width) in widest.items():
    sample = lambda k, c=c, t=t, w=width, s=stream: c.sample(
        jax.random.fold_in(k, s), targets[t], w, distribution=distribution)
    draws[(t, stream)] = jax.vmap(sample)(keys[t])
  return draws


def _instances(c, obj, kernels, spec):
  """``Instances`` with leading ``(W, S)``: ``obj`` has leading ``S``; width and cap are
  traced per width."""
  sizes = (spec.size,) * len(kernels)
  point = lambda o, w, cap: c.instances(o, kernels, w, cap, sizes=sizes)
  over_seeds = jax.vmap(point, in_axes=(0, None, None))
  return jax.vmap(over_seeds, in_axes=(None, 0, 0))(
      obj, jnp.asarray(spec.widths, jnp.int32), jnp.asarray(spec.caps, jnp.int32))


def _solutions(specs, grids):
  """Per spec the ``(mask, error)`` of every problem: solving constructions' instances of
  one size in ONE solver call for the whole grid, the others by ``choose``."""
  problems, owners = [], []
  for j, spec in enumerate(specs):
    if constructions.get(spec.method).solves:
      problems += grids[j].problems
      owners += [j] * len(grids[j].problems)
  out = collections.defaultdict(list)
  # (looked up here, not at import: tests count the calls)
  solved = objectives.solve_grouped(problems, subset_sum.solve_subset_sum, size_multiple=2)
  for j, sol in zip(owners, solved):
    out[j].append(sol)
  for j, spec in enumerate(specs):
    c = constructions.get(spec.method)
    if not c.solves:
      out[j] = jax.vmap(jax.vmap(c.choose))(grids[j].problems, grids[j].aux)
  return out


def _weight_stats(errors, epsilon):
  """Per-layer kernel-shaped errors ``(W, S, d_in, d_out)`` -> max, mean, fraction <= eps.

  Reduced in ``(d_out, d_in)`` order, the order the sweep's published means were summed in
  (a float32 mean depends on it)."""
  flat = jnp.concatenate([jnp.swapaxes(e, -1, -2).reshape(e.shape[:2] + (-1,))
                          for e in errors], axis=-1)
  return (jnp.max(flat, -1), jnp.mean(flat, -1),
          jnp.mean((flat <= epsilon).astype(jnp.float32), -1))


def _evaluate(kernels, effective_forward, effective, seeds, keys, data, opts):
  """sup error (and accuracy) of every grid point, one ``lax.map`` over the points.

  Args:
    kernels: the target. effective: the points' compact forms, leading axis ``G``.
    seeds: ``(G,)`` seed of each point (its evaluation key). data: ``(images, labels)``.
  Returns:
    sup ``(G,)``, accuracy ``(G,)`` (NaN without data).
  """
  f = lambda x: forward(kernels, x)
  num = seeds.shape[0]
  batch = opts["eval_batch"]
  pad = (-num) % batch  # no remainder: lax.map would compile its body twice
  pad_fn = lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, 0)]) if pad else a
  effective, seeds = jax.tree.map(pad_fn, (effective, seeds))

  def one(args):
    point, seed = args
    g = lambda x: effective_forward(point, x)
    key = jax.random.fold_in(keys[seed], base.EVAL_STREAM)
    sup, _ = evaluation.sup_output_error(f, g, split_layers(kernels)[0][0].shape[0], key,
                                         opts["num_points"], opts["ascent_steps"])
    acc = (jnp.float32(jnp.nan) if data is None
           else evaluation.accuracy(g, *data, opts["data_batch"]))
    return sup, acc

  sup, acc = jax.lax.map(one, (effective, seeds), batch_size=batch)
  return sup[:num], acc[:num]


def grid_body(targets, epsilon, data, keys, *, specs, opts):
  """The grid program (unjitted) for the given seed keys.

  Args:
    targets: tuple of targets (lists of ``(d_in, d_out)`` kernels, or ``{"kernel",
      "bias"}`` layers for constructions that build biases: then the biases' errors count
      in the error statistics).
    epsilon: float32 scalar. data: ``(images, labels)`` or None.
    keys: per target ``(S,)`` typed keys (a list, or a ``(T, S)`` array): the seeds of the
      grid, e.g. one device's block of them (the sharded runner).
    specs: tuple of ``GridSpec``; opts: hashable tuple of ``(name, value)`` pairs
      (num_points, ascent_steps, eval_batch, data_batch, distribution).
  Returns:
    per spec a dict of ``(W, S, ...)`` grids (kernel-shaped per-weight errors and the
    per-bias errors or None included, so the host can compute the analytic bound) and the
    per-target ``target_accuracy``.
  """
  opts = dict(opts)
  num_seeds = keys[0].shape[0]
  draws = _draws(targets, keys, specs, opts["distribution"])
  cons = [constructions.get(spec.method) for spec in specs]
  grids = [_instances(c, draws[(spec.target, c.stream)], targets[spec.target], spec)
           for c, spec in zip(cons, specs)]
  solutions = _solutions(specs, grids)
  out = [None] * len(specs)
  pending = collections.defaultdict(list)  # (target, effective_forward) -> [(spec, ...)]
  for j, (c, spec) in enumerate(zip(cons, specs)):
    assemble = lambda inst, sol, c=c, k=targets[spec.target]: c.assemble(k, inst, sol)
    done = jax.vmap(jax.vmap(assemble))(grids[j], solutions[j])
    errors = done.weight_errors
    if has_biases(targets[spec.target]):  # a biased target: its biases count as parameters
      errors = errors + [b[..., None, :] for b in done.bias_errors]
    max_e, mean_e, frac = _weight_stats(errors, epsilon)
    out[j] = dict(max_weight_error=max_e, mean_weight_error=mean_e,
                  fraction_within_epsilon=frac, params_kept=done.kept,
                  weight_errors=done.weight_errors, bias_errors=done.bias_errors)
    seeds = jnp.tile(jnp.arange(num_seeds), len(spec.widths))
    pending[(spec.target, c.effective_forward)].append(
        (j, jax.tree.map(_flat, done.effective), seeds, len(spec.widths)))

  # Evaluation: the grid points of a target sharing a forward in one lax.map.
  target_acc = {}
  for (t, effective_forward), items in pending.items():
    effective = jax.tree.map(lambda *a: jnp.concatenate(a), *[it[1] for it in items])
    seeds = jnp.concatenate([it[2] for it in items])
    sup, acc = _evaluate(targets[t], effective_forward, effective, seeds, keys[t], data, opts)
    if t not in target_acc:
      target_acc[t] = None if data is None else evaluation.accuracy(
          lambda x, k=targets[t]: forward(k, x), *data, opts["data_batch"])
    start = 0
    for j, _, _, num_w in items:
      count = num_w * num_seeds
      out[j]["sup_error"] = sup[start:start + count].reshape(num_w, num_seeds)
      out[j]["accuracy"] = (None if data is None
                            else acc[start:start + count].reshape(num_w, num_seeds))
      out[j]["target_accuracy"] = target_acc[t]
      start += count
  return out


def _key_ids(key_ids, targets):
  """Each target's key index (``fold_in(key, index)``): its position unless given (traced
  when given, so targets of equal shapes share one compiled program)."""
  return tuple(range(len(targets))) if key_ids is None else list(key_ids)


_STATIC = ("specs", "num_seeds", "opts")


@functools.partial(jax.jit, static_argnames=_STATIC)
def grid_program(targets, key, epsilon, data, *, specs, num_seeds, opts, key_ids=None):
  """Every spec's whole width x seed grid, one XLA program: the seeds
  ``0 .. num_seeds - 1`` of every target through ``grid_body``. ``key_ids``: each target's
  key index (default its position), so a target run in a smaller program (a resumed sweep)
  draws exactly what it draws among all the targets."""
  TRACE_COUNTS["grid_program"] += 1
  keys = [seed_keys(key, t, num_seeds) for t in _key_ids(key_ids, targets)]
  return grid_body(targets, epsilon, data, keys, specs=specs, opts=opts)


@functools.lru_cache(maxsize=None)
def program_with_options(options):
  """``grid_program`` compiled with XLA ``compiler_options`` (own trace cache)."""
  return jax.jit(grid_program.__wrapped__, static_argnames=_STATIC,
                 compiler_options=dict(options))


def _sharded_grid(mesh, targets, key, epsilon, data, *, specs, num_seeds, opts, options,
                  key_ids=None):
  """``grid_program``'s outputs with the seeds split over ``mesh``: the padded seed
  count's keys (the same keys for the first ``num_seeds``) go to
  ``sharding.sharded_grid_program``, which runs ``grid_body`` per device."""
  padded = sharding.padded_size(num_seeds, mesh)
  keys = jnp.stack([seed_keys(key, t, padded) for t in _key_ids(key_ids, targets)])
  out = sharding.sharded_grid_program(grid_body, mesh, targets, epsilon, data, keys,
                                         specs=specs, opts=opts, compiler_options=options)
  if padded != num_seeds:
    out = jax.tree.map(lambda a: a[:, :num_seeds] if a.ndim >= 2 else a, out)
  return out


def run_grid(targets, key, epsilon, data, *, specs, num_seeds, opts, options=None, mesh=None,
             key_ids=None):
  """The grid's outputs on the host (numpy), on one device or split over ``mesh``.

  Args as ``grid_program``; ``options``: hashable XLA compiler options or None.
  """
  if mesh is not None:
    raw = _sharded_grid(mesh, targets, key, epsilon, data, specs=specs, num_seeds=num_seeds,
                        opts=opts, options=options, key_ids=key_ids)
  else:
    program = program_with_options(options) if options else grid_program
    raw = program(targets, key, epsilon, data, specs=specs, num_seeds=num_seeds, opts=opts,
                  key_ids=None if key_ids is None else jnp.asarray(key_ids, jnp.int32))
  # Multi-host: outputs sharded over other processes' devices are not addressable here,
  # so gather them to every process (numpy) instead of jax.device_get.
  return jax.tree.map(sharding.to_host, raw)
