"""Sparsest SubsetSum within a tolerance: the fewest terms whose sum is within epsilon.

Solve stage: the fewest-terms objective, built on ``mitm``/``mitm_keys`` and
``subset_sum.solve_chunk`` (tier 2).

Problem: for each instance (target ``t``, coefficients ``c`` of length ``n``, tolerance
``eps > 0``), among all ``2^n`` subsets with ``|t - sum(c[mask])| <= eps`` return one with
the fewest elements, ties broken by the smaller error, then by a deterministic rule. If no
subset is within ``eps`` the instance is *infeasible* and the answer is exactly the one
``solve_subset_sum`` returns (the minimum-error subset, same mask), with
``feasible = False``. Sparser tickets: at ``n = 21`` and ``eps = 0.01`` the minimum-error
subset uses about ``n / 2`` terms, the sparsest about 2.

Algorithm (three tiers; sorting networks, slices and elementwise selects, batch minor):

1. *Enumeration of small subsets*, for every instance (in chunks of 8 instances, which
   keeps the lists in cache). Every subset of at most ``K0`` terms (default 3, see
   ``default_enumerated_terms``) is summed exactly, level by level in colexicographic
   order (a level is static slices of the previous one plus one coefficient). If an
   instance has a subset within ``eps`` of at most ``K0`` terms, the first such level holds
   its optimum, since every smaller subset was checked. At ``n = 21``, ``eps = 0.01`` this
   settles essentially every random instance.
   The unresolved instances are then moved to the front (a stable argsort of one flag per
   instance), and tiers 2-3 run chunk by chunk under ``lax.cond``: chunks without an
   unresolved instance cost nothing.
2. *Minimum error.* ``solve_subset_sum``'s own chunk solver gives the minimum error, hence
   feasibility, and the answer for infeasible instances (bit for bit its answer).
3. *Popcount-layered meet in the middle* (only if some feasible instance of the chunk needs
   more than ``K0`` terms). Each half's ``2^a`` subset sums (``a = ceil(n / 2)``) are
   generated sorted by (number of terms, value): the usual merge-based generation with a
   comparator that first compares the popcounts of the keys' index bits, so layer ``p`` is
   a static slice. For a pair of layers ``(p_a, p_b)`` the closest sum to the target is
   the closest adjacent pair of different origin in the bitonic merge of ``A_{p_a}`` with
   ``t - B_{p_b}`` (padded with sentinels to a power of two; pairs of equal padded size
   share one network). Levels ``k = p_a + p_b > K0`` are processed in increasing order, in
   stages of 1, 1, 1, 2, 4, ... levels, each only while some instance is unresolved: the
   first level with a pair within ``eps`` is the minimum count, its closest pair the
   minimum error.

Merges here use Stone's shuffle-exchange form of the bitonic merge (all stages identical,
one ``fori_loop`` body), which keeps the compiled program small.

Cost per instance: tier 1 is ``sum_{k <= K0} C(n, k)`` key additions and compares (1,562
subsets at ``n = 21``); tier 2 is ``solve_subset_sum`` (``O(a^2 2^a)`` compare-exchanges);
tier 3 is one more generation (with the popcount compare) plus, per level ``k``,
``sum_{p} (C(a, p) + C(a, k - p))`` keys merged in ``O(a)`` stages (at most about two
full meet-in-the-middle merges per level; all levels together about ``(a + 1) 2^(a+1)``
keys). Memory is bounded by chunking (``chunk_keys``).

Exactness and the epsilon rule: values live on the instance's grid ``2^-s`` (the same grid
as ``solve_subset_sum``); errors are exact integers ``e`` on that grid and ``eps`` becomes
``floor(eps * 2^s)`` (an exact power-of-two scaling, then rounding *down*). An instance is
feasible iff some grid error ``e <= floor(eps * 2^s)``, which is exactly ``e * 2^-s <= eps``
because ``e`` is an integer. When every input lies on the grid (every float32 input of
magnitude ``>= 2^(24-s)``, e.g. all ``>= 2^-21`` at ``n = 21`` with ``|c| <= 1``), grid
errors are the true errors, so feasibility, counts and errors are exact; otherwise they
are exact for the inputs rounded to the grid.

Ties (several subsets with the minimum count *and* the same grid error, e.g. with repeated
or zero coefficients) are broken deterministically: in tier 1 the first subset in colex
order, in tier 3 the smallest code ``index_A * 2^a + index_B`` among the adjacent pairs
examined. The choice is independent of the batch, the chunking and the key format, but
may change with ``max_enumerated_terms``. (Different tied subsets may have ``value`` on
either side of the target; ``count`` and ``error`` never depend on the tie rule.)

Key formats: results are bit-identical, including ``value`` and ``error`` of feasible
instances (keys are converted to float32 with a single correct rounding in both formats).
Infeasible instances return ``solve_subset_sum``'s values, whose ``int32x2`` conversion
may differ from ``int64`` in the last bit.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import _checks
from lth_jax import mitm
from lth_jax import mitm_keys
from lth_jax import subset_sum
from lth_jax.mitm_keys import KEY_FORMATS, reduce_min, select, take_rows, tmap

MAX_N = 30  # the subset code (index_A, index_B) is one int32 below 2^30
_KEY_MAX = (1 << 63) - 1
_NONE = 1 << 30  # "no candidate" count / code
_TIER1_CHUNK = 8  # instances per tier-1 chunk (measured: 2x faster than 64 at n = 21)


class FewestTermsResult(NamedTuple):
  """Sparsest subsets within epsilon for a batch of instances.

  Attributes:
    mask: bool ``batch + (n,)``: the chosen subset.
    value: float32 ``batch``: its sum (exact on the grid, rounded once).
    error: float32 ``batch``: ``|target - value|`` (exact on the grid, rounded once).
    count: int32 ``batch``: number of chosen terms (``mask.sum(-1)``).
    feasible: bool ``batch``: some subset is within epsilon. If False the subset is the
      minimum-error one (exactly ``solve_subset_sum``'s answer).
  """

  mask: jax.Array
  value: jax.Array
  error: jax.Array
  count: jax.Array
  feasible: jax.Array


def default_enumerated_terms(n: int) -> int:
  """Tier-1 depth: 3 (``sum_{k<=3} C(n, k)`` subsets: 1,562 at n = 21, 4,526 at n = 30).

  Measured on random instances (eps = 0.01): at n = 21 almost every optimum has <= 3
  terms, so tier 1 alone settles the batch; at n = 16, depth 4 costs more than the tier-3
  chunks it avoids.
  """
  return min(3, n)


# --------------------------------------------------------------------------------------
# Helpers on key pytrees (both formats).
# --------------------------------------------------------------------------------------


def _best(ops, gap, code, valid):
  """Lexicographic min of (gap, code) over axis 0 among ``valid`` rows.

  Returns (found bool, gap key, code int32); gap/code are garbage where not found.
  """
  found = jnp.any(valid, axis=0)
  best_gap = reduce_min(ops, select(valid, gap, ops.full(valid.shape, _KEY_MAX)))
  valid = valid & mitm_keys.keys_equal(gap, tmap(lambda v: v[None], best_gap))
  best_code = jnp.min(jnp.where(valid, code, _NONE), axis=0)
  return found, best_gap, best_code


def _update(state, found, gap, code, count):
  """Takes (count, gap, code) where an instance is still unresolved and ``found``."""
  old_count, old_gap, old_code = state
  take = found & (old_count == _NONE)
  return (jnp.where(take, count, old_count), select(take, gap, old_gap),
          jnp.where(take, code, old_code))


def _subset_code(subset, half):
  code = 0
  for i in subset:
    code |= (1 << (i + half)) if i < half else (1 << (i - half))
  return code


def _enumerate(ops, q_keys, qt_key, eps_key, n_real, half, depth, state):
  """Tier 1: every subset of at most ``depth`` of the first ``n_real`` coefficients.

  Level ``k`` lists the ``k``-subsets in colexicographic order: for each largest element
  ``j``, the ``(k-1)``-subsets of ``{0..j-1}`` (a prefix of level ``k-1``) plus ``j``, so a
  level is built with static slices and adds. The best feasible subset of a level is one
  min-reduction of ``error << b | position`` (the first in colex order on ties).
  """
  c = jax.tree.leaves(qt_key)[0].shape[0]
  sums, subsets = ops.full((1, c), 0), [()]
  for k in range(depth + 1):
    if k > 0:
      parts, new = [], []
      for j in range(k - 1, n_real):
        m = math.comb(j, k - 1)
        parts.append(ops.add(tmap(lambda v: v[:m], sums), tmap(lambda v: v[j:j + 1], q_keys)))
        new += [x + (j,) for x in subsets[:m]]
      # Materialised once (the barrier stops XLA re-deriving each prefix slice of it).
      sums = jax.lax.optimization_barrier(tmap(lambda *v: jnp.concatenate(v, 0), *parts))
      subsets = new
    err = mitm_keys.key_abs(ops, ops.sub(tmap(lambda v: v[None], qt_key), sums))  # < 2^(61 - half)
    feasible = ~ops.less(tmap(lambda v: v[None], eps_key), err)
    codes = np.asarray([_subset_code(x, half) for x in subsets], np.int32)
    bits = max(1, (len(subsets) - 1).bit_length())
    if bits <= half + 2:  # (error, position) fits in one key below 2^63 - 1
      pos = jnp.broadcast_to(jnp.arange(len(subsets), dtype=jnp.int32)[:, None], feasible.shape)
      packed = ops.or_low(ops.shl_low(err, bits), pos)
      best = reduce_min(ops, select(feasible, packed, ops.full(feasible.shape, _KEY_MAX)))
      found = ops.less(best, ops.full((c,), _KEY_MAX))
      gap, code = ops.shr(best, bits), jnp.asarray(codes)[ops.low(best, bits)]
    else:
      code = jnp.broadcast_to(jnp.asarray(codes)[:, None], feasible.shape)
      found, gap, code = _best(ops, err, code, feasible)
    state = _update(state, found, gap, code, k)
  return state


def _layered(ops, steps, t_key, eps_key, half, shift, first_level, feasible, state):
  """Tier 3: popcount-layered meet in the middle for levels ``first_level..2 half``."""
  layered = mitm.layered_subset_sums(ops, steps)  # leaves (2^half, 2, C)
  sizes = [math.comb(half, p) for p in range(half + 1)]
  offsets = np.cumsum([0] + sizes)
  sums_a = tmap(lambda v: v[:, 0], layered)
  sums_b = tmap(lambda v: v[:, 1], layered)
  # t - B, each layer descending, with origin bit and B's index in the low bits.
  others = mitm.target_side(ops, t_key, sums_b, half, 1 << half)
  sentinel = ops.full((1,) + mitm_keys.leading_shape(sums_b)[1:], _KEY_MAX)
  # Rows: A layers (2^half), t - B layers (2^half), one sentinel row.
  table = tmap(lambda a, b, z: jnp.concatenate([a, b, z], 0), sums_a, others, sentinel)
  blank = 2 * offsets[-1]
  eps = tmap(lambda v: v[None], eps_key)

  def stage(levels, state):
    pairs = [(p, k - p) for k in levels for p in range(half + 1) if 0 <= k - p <= half]
    by_size = {}
    for pa, pb in pairs:
      by_size.setdefault(1 << (sizes[pa] + sizes[pb] - 1).bit_length(), []).append((pa, pb))
    blocks, counts, inner = [], [], []
    for size, members in sorted(by_size.items()):
      rows = np.full((size, len(members)), blank, np.int32)
      for j, (pa, pb) in enumerate(members):  # A ascending ++ sentinels ++ (t - B) descending
        rows[:sizes[pa], j] = np.arange(offsets[pa], offsets[pa + 1])
        rows[size - sizes[pb]:, j] = offsets[-1] + np.arange(offsets[pb], offsets[pb + 1])
        counts.append(np.full(size, pa + pb, np.int32))
        inner.append(np.arange(size) < size - 1)  # (row, row + 1) inside this merge
      merged = mitm.shuffle_merge(ops, take_rows(table, rows), size)  # leaves (size, members, C)
      blocks.append(tmap(lambda v: jnp.swapaxes(v, 0, 1).reshape((-1, v.shape[-1])), merged))
    # All merges of the stage one after another: one pass finds the closest pairs.
    merged = tmap(lambda *v: jnp.concatenate(v, 0), *blocks)
    lower, upper, lo_origin, cross, gap = mitm.adjacent_pairs(ops, merged, shift, half)
    cross = cross & np.concatenate(inner)[:-1, None]  # gaps to sentinels: > eps
    idx_lo, idx_hi = ops.low(lower, half), ops.low(upper, half)
    code = jnp.where(lo_origin == 0, (idx_lo << half) | idx_hi, (idx_hi << half) | idx_lo)
    valid = cross & ~ops.less(eps, gap)
    count = jnp.where(valid, np.concatenate(counts)[:-1, None], _NONE)
    best_count = jnp.min(count, axis=0)
    _, gap, code = _best(ops, gap, code, valid & (count == best_count[None]))
    return _update(state, best_count < _NONE, gap, code, best_count)

  start = first_level
  for end in _stage_ends(first_level, 2 * half):
    if start > end:
      break
    todo = jnp.any(feasible & (state[0] == _NONE))
    state = jax.lax.cond(todo, functools.partial(stage, range(start, end + 1)),
                         lambda s: s, state)
    start = end + 1
  return state


def _stage_ends(first, top):
  """Last level of each tier-3 stage: one level, one level, then doubling widths."""
  ends, width, end = [], 1, first
  while end < top:
    ends.append(end)
    end += width
    width *= 2 if len(ends) > 1 else 1
  if len(ends) > 1 and top - ends[-1] < ends[-1] - ends[-2]:
    ends.pop()  # a short tail joins the last stage
  return ends + [top]


def _grid_keys(ops, targets, coefficients, epsilon):
  """Per-instance grid exponent, grid values (float and keys) and epsilon on the grid."""
  half = coefficients.shape[0] // 2
  s, q, qt = mitm.on_grid(targets, coefficients, half)  # the same grid as solve_subset_sum
  # Every |value| on the grid is <= 2^(60 - half) (grid choice), so gaps < 2^(61 - half).
  eps_q = jnp.minimum(jnp.floor(jnp.ldexp(epsilon, s)), float(2 ** (61 - half)))
  keys = (ops.from_float(q), ops.from_float(qt), ops.from_float(eps_q))
  # Materialise the grid values once; otherwise XLA re-derives them inside every fusion.
  return (s, q, qt) + jax.lax.optimization_barrier(keys)


def _assemble(ops, s, q_keys, gap, code):
  """Mask, value and error (float32, rounded once) of the subsets with these codes."""
  half = jax.tree.leaves(q_keys)[0].shape[0] // 2
  bits = jnp.arange(half, dtype=jnp.int32)[:, None]
  mask = jnp.concatenate([(code[None] >> (bits + half)) & 1, (code[None] >> bits) & 1], 0)
  mask = mask == 1
  value_q = _masked_sum(ops, mask, q_keys)
  return mask, jnp.ldexp(ops.to_float(value_q), -s), jnp.ldexp(ops.to_float(gap), -s)


def _masked_sum(ops, mask, q_keys):
  """Key ``(C,)``: the sum of the keys ``(n, C)`` where ``mask`` (exact)."""
  chosen = select(mask, q_keys, ops.full(mask.shape, 0))
  return functools.reduce(ops.add, [tmap(lambda v: v[i], chosen) for i in range(mask.shape[0])])


def _none(ops, c):
  return (jnp.full((c,), _NONE, jnp.int32), ops.full((c,), _KEY_MAX),
          jnp.full((c,), _NONE, jnp.int32))


def _tier1_chunk(targets, coefficients, epsilon, key_format, n_real, depth):
  """Tier 1 on one chunk: (mask (n, C), value, error, resolved) for resolved instances."""
  ops = KEY_FORMATS[key_format]
  c = targets.shape[0]
  s, _, _, q_keys, qt_key, eps_key = _grid_keys(ops, targets, coefficients, epsilon)
  half = coefficients.shape[0] // 2
  count, gap, code = _enumerate(ops, q_keys, qt_key, eps_key, n_real, half, depth,
                                _none(ops, c))
  return _assemble(ops, s, q_keys, gap, code) + (count != _NONE,)


def _general_chunk(targets, coefficients, epsilon, pending, key_format, n_real, depth):
  """Tiers 2 and 3 on one chunk; tier 3 only serves the ``pending`` instances."""
  ops = KEY_FORMATS[key_format]
  n, c = coefficients.shape
  half = n // 2
  shift = half + 1
  s, q, qt, q_keys, qt_key, eps_key = _grid_keys(ops, targets, coefficients, epsilon)
  # Unpadded, so infeasible instances get solve_subset_sum's answer bit for bit.
  mask2, value2, error2 = subset_sum.solve_chunk(targets, coefficients[:n_real], key_format)
  mask2 = jnp.pad(mask2, ((0, n - n_real), (0, 0)))
  sum2 = _masked_sum(ops, mask2, q_keys)
  feasible = ~ops.less(eps_key, mitm_keys.key_abs(ops, ops.sub(qt_key, sum2)))
  steps = mitm.index_steps(ops, q, shift, (half, half))
  steps = tmap(lambda v: jnp.stack([v[:half], v[half:]], 1), steps)  # (half, 2, C)
  t_key = ops.from_float(qt * float(2**shift))
  wanted = feasible & pending  # no subset of <= depth terms is within eps (tier 1)
  _, gap, code = jax.lax.cond(
      jnp.any(wanted),
      lambda st: _layered(ops, steps, t_key, eps_key, half, shift, depth + 1, wanted, st),
      lambda st: st, _none(ops, c))
  mask, value, error = _assemble(ops, s, q_keys, gap, code)
  return (jnp.where(feasible[None], mask, mask2), jnp.where(feasible, value, value2),
          jnp.where(feasible, error, error2), feasible)


# --------------------------------------------------------------------------------------
# Public entry point.
# --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("key_format", "chunk", "depth"))
def _solve_flat(targets, coefficients, epsilon, key_format, chunk, depth):
  """Tier 1 on the whole batch; tiers 2 and 3 only on chunks of unresolved instances."""
  b, n = coefficients.shape
  n_even = n + (n % 2)
  small = min(chunk, _TIER1_CHUNK)
  total = -(-b // chunk) * chunk
  coef = jnp.pad(coefficients, ((0, total - b), (0, n_even - n))).T  # batch minor
  tgt = jnp.pad(targets, (0, total - b))
  eps = jnp.pad(epsilon, (0, total - b), constant_values=1.0)

  def chunked(size, fn, *args):
    """lax.map of ``fn`` over chunks of ``size`` instances (last axis), results joined."""
    split = lambda v: jnp.moveaxis(v.reshape(v.shape[:-1] + (total // size, size)), -2, 0)
    join = lambda v: jnp.moveaxis(v, 0, -2).reshape(v.shape[1:-1] + (total,))

    def body(a):
      with jax.enable_x64(key_format == "int64"):
        return fn(*a)

    return [join(v) for v in jax.lax.map(body, [split(a) for a in args])]

  # Tier 1 in chunks of a few instances: its subset lists then stay in cache.
  mask, value, error, resolved = chunked(
      small, functools.partial(_tier1_chunk, key_format=key_format, n_real=n, depth=depth),
      tgt, coef, eps)
  # Unresolved instances first (stable), so only the leading chunks run tiers 2 and 3.
  order = jnp.argsort(resolved.astype(jnp.int32), stable=True)
  inverse = jnp.argsort(order)
  todo = ~resolved[order]

  def general(t, c, e, pending):
    skip = lambda *_: (jnp.zeros(c.shape, bool), jnp.zeros(t.shape, jnp.float32),
                       jnp.zeros(t.shape, jnp.float32), jnp.zeros(t.shape, bool))
    run = functools.partial(_general_chunk, key_format=key_format, n_real=n,
                            depth=depth)
    return jax.lax.cond(jnp.any(pending), run, skip, t, c, e, pending)

  mask2, value2, error2, feasible2 = (
      v[..., inverse] for v in chunked(chunk, general, tgt[order], coef[:, order], eps[order],
                                       todo))
  mask = jnp.where(resolved, mask, mask2).T[:b, :n]
  value, error = jnp.where(resolved, value, value2), jnp.where(resolved, error, error2)
  feasible = resolved | feasible2
  return mask, value[:b], error[:b], feasible[:b]


def solve_fewest_terms(
    targets: chex.Array,
    coefficients: chex.Array,
    epsilon: chex.Numeric,
    *,
    key_format: str | None = None,
    chunk_keys: int = 1 << 18,
    max_enumerated_terms: int | None = None,
) -> FewestTermsResult:
  """Exactly finds, per instance, the fewest coefficients whose sum is within epsilon.

  Args:
    targets: float ``batch`` (any shape, including scalar).
    coefficients: float ``batch + (n,)``, or any shape broadcastable to it (e.g. ``(n,)``
      shared by every target). ``1 <= n <= MAX_N`` (30). Zero coefficients are allowed and
      never chosen by a feasible answer.
    epsilon: float ``> 0``, scalar or broadcastable to ``batch``: the tolerance on
      ``|target - sum|`` (decided exactly on the instance's grid, see the module doc).
    key_format: ``"int64"`` or ``"int32x2"``; default per backend. Identical results
      (see the module doc for infeasible instances' last bit).
    chunk_keys: memory bound of tiers 2-3, as in ``solve_subset_sum`` (instances per
      chunk about ``chunk_keys / 2^(ceil(n/2) + 1)``); tier 3's last stage holds up to
      about ``(ceil(n/2) + 1) / 2`` times more keys. Tier 1 works on 8 instances at a time.
    max_enumerated_terms: tier-1 depth ``K0`` (subsets of at most this many terms are
      enumerated directly); default ``default_enumerated_terms(n)``. Only speed and
      exact-tie choices depend on it.

  Returns:
    ``FewestTermsResult(mask, value, error, count, feasible)``.

  Raises:
    ValueError: empty inputs, ``n`` out of range, shapes that do not broadcast, a bad
      ``key_format`` or ``max_enumerated_terms``, or (when called outside a trace) NaN/Inf
      inputs or an ``epsilon`` that is not finite and positive. Inside ``jit`` these
      checks cannot raise; such instances return ``error = value = nan``, an empty mask,
      ``count = 0`` and ``feasible = False``.
  """
  epsilon = jnp.asarray(epsilon, jnp.float32)
  targets, coefficients, batch, key_format = mitm.validate_batch(
      targets, coefficients, key_format, max_n=MAX_N, others=(("epsilon", epsilon),),
      why=lambda n: (f"solve_fewest_terms does meet in the middle over 2^{(n + 1) // 2} sums "
                     "per half with subset codes in 31 bits"))
  n = coefficients.shape[-1]
  size = int(np.prod(batch)) if batch else 1
  depth = default_enumerated_terms(n) if max_enumerated_terms is None else max_enumerated_terms
  if not isinstance(depth, (int, np.integer)) or depth < 0:
    raise ValueError(f"max_enumerated_terms must be an int >= 0, got {depth!r}")
  depth = min(int(depth), n)
  if _checks.is_concrete(epsilon):
    e = np.asarray(epsilon)
    if not np.all(np.isfinite(e) & (e > 0)):
      raise ValueError(
          f"epsilon must be finite and > 0: got {int(np.sum(~np.isfinite(e)))} NaN/Inf and "
          f"{int(np.sum(e <= 0))} value(s) <= 0")
  flat_t = jnp.broadcast_to(targets, batch).reshape(-1)
  flat_c = jnp.broadcast_to(coefficients, batch + (n,)).reshape(-1, n)
  flat_e = jnp.broadcast_to(epsilon, batch).reshape(-1)
  chunk = mitm.instances_per_chunk(n + n % 2, size, chunk_keys)
  mask, value, error, feasible = _solve_flat(flat_t, flat_c, flat_e, key_format=key_format,
                                             chunk=chunk, depth=depth)
  ok = (mitm.valid_instances(targets, coefficients, flat_t, flat_c)
        & jnp.isfinite(flat_e) & (flat_e > 0))
  error = jnp.where(ok, error, jnp.nan)
  value = jnp.where(ok, value, jnp.nan)
  mask = mask & ok[:, None]
  feasible = feasible & ok
  count = jnp.sum(mask, axis=-1, dtype=jnp.int32)
  return FewestTermsResult(mask.reshape(batch + (n,)), value.reshape(batch),
                           error.reshape(batch), count.reshape(batch), feasible.reshape(batch))
