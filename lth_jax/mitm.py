"""Exact meet-in-the-middle machinery shared by the SubsetSum solvers (solve stage).

Subset sums as integer keys (``mitm_keys``) on a per-instance fixed-point grid, generated
sorted and merged by bitonic networks (compare-exchange only), batch minor. The public
pieces that ``subset_sum`` and ``fewest_terms`` build their objectives from:

* bitonic networks: ``merge_stages`` / ``bitonic_merge`` (fused stages), ``shuffle_merge``
  (Stone's shuffle-exchange form, one loop body); ``sorted_subset_sums`` (by value) and
  ``layered_subset_sums`` (by number of terms, then value; ``PopcountMajor`` order);
* the grid (its exactness is described in ``subset_sum``'s doc): ``grid_exponent``,
  ``quantise``, ``on_grid``, and the keys of the two halves: ``index_steps``,
  ``target_side``, ``adjacent_pairs``;
* batches: ``validate_batch`` / ``check_batch`` (input checks), ``valid_instances`` (which instances get an
  answer inside ``jit``), ``instances_per_chunk`` (memory bound).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import _checks
from lth_jax import sharding
from lth_jax.mitm_keys import KEY_FORMATS, default_key_format, leading_shape, select, tmap


# --------------------------------------------------------------------------------------
# Bitonic network pieces (leading axis = list position, trailing axes = batch).
# --------------------------------------------------------------------------------------


_FUSE = 2  # bitonic stages per XLA fusion: fewer passes over memory, a little more compute


def _half_clean(ops, x, stride, levels=1):
  """``levels`` consecutive bitonic stages (strides ``stride, stride/2, ...``) at once.

  A stage compare-exchanges ``i`` with ``i + stride`` in blocks of ``2 * stride``. Doing
  several in one elementwise expression lets XLA fuse them into a single pass.
  """
  leaf = jax.tree.leaves(x)[0]
  n = leaf.shape[0]
  rest = leaf.shape[1:]
  inner = stride >> (levels - 1)
  shape = (n // (2 * stride),) + (2,) * levels + (inner,) + rest
  y = tmap(lambda v: v.reshape(shape), x)
  parts = []
  for idx in range(2 ** levels):
    bits = tuple((idx >> (levels - 1 - b)) & 1 for b in range(levels))
    parts.append(tmap(lambda v: v[(slice(None),) + bits], y))
  for level in range(levels):
    bit = 1 << (levels - 1 - level)
    for idx in range(2 ** levels):
      if not idx & bit:
        parts[idx], parts[idx | bit] = ops.minmax(parts[idx], parts[idx | bit])
  out = tmap(lambda *ps: jnp.stack(ps, 1), *parts)
  return tmap(lambda v: v.reshape((n,) + rest), out)


def merge_stages(ops, x, stride):
  """Bitonic stages with strides ``stride, stride/2, ..., 1``, ``_FUSE`` per pass."""
  while stride >= 1:
    levels = min(_FUSE, int(math.log2(stride)) + 1)
    x = _half_clean(ops, x, stride, levels)
    stride >>= levels
  return x


def bitonic_merge(ops, x, size):
  """Sorts every bitonic block of length ``size`` (a power of two) ascending."""
  return merge_stages(ops, x, size // 2)


def sorted_subset_sums(ops, steps):
  """All ``2^k`` subset sums, ascending, for ``k = steps`` leading rows of constants.

  Args:
    ops: key arithmetic.
    steps: key pytree, leaves ``(k,) + batch``: the constant added when element ``i``
      joins a subset (its fixed-point value shifted up, plus its index bit).

  Returns:
    key pytree, leaves ``(2^k,) + batch``, sorted ascending.
  """
  k = jax.tree.leaves(steps)[0].shape[0]
  batch = jax.tree.leaves(steps)[0].shape[1:]
  lst = ops.full((1,) + batch, 0)
  for i in range(k):
    step = tmap(lambda v: v[i], steps)
    shifted_rev = tmap(lambda v: v[::-1], ops.add(lst, step))  # descending
    lo, hi = ops.minmax(lst, shifted_rev)  # first stage of merging lst ++ rev(lst + c)
    lst = tmap(lambda l, h: jnp.concatenate([l, h], 0), lo, hi)
    lst = merge_stages(ops, lst, leading_shape(lst)[0] // 4)
  return lst


def shuffle_merge(ops, x, size):
  """Sorts the bitonic leading axis (length ``size``, a power of two) ascending.

  Stone's shuffle-exchange form of the bitonic merge: every stage compare-exchanges the
  two halves and interleaves them (a perfect shuffle), so all ``log2(size)`` stages are
  the same operation: a ``fori_loop`` body compiled once, whatever the size.
  """
  levels = size.bit_length() - 1
  rest = jax.tree.leaves(x)[0].shape[1:]

  def stage(x):
    y = tmap(lambda v: v.reshape((2, size // 2) + rest), x)
    lo, hi = ops.minmax(tmap(lambda v: v[0], y), tmap(lambda v: v[1], y))
    return tmap(lambda l, h: jnp.stack([l, h], 1).reshape((size,) + rest), lo, hi)

  if levels >= 4:
    x = jax.lax.fori_loop(0, levels // 2, lambda _, x: stage(stage(x)), x)
    levels %= 2
  for _ in range(levels):
    x = stage(x)
  return x

class PopcountMajor:
  """Key arithmetic ordering subset keys by (number of terms, key).

  The number of terms is the popcount of the key's index bits, recomputed in each
  compare (measured faster than carrying it as a second key word).
  """

  def __init__(self, base, half):
    self.base, self.half = base, half

  def full(self, shape, value):
    return self.base.full(shape, value)

  def add(self, x, y):
    return self.base.add(x, y)

  def minmax(self, x, y):
    px = jax.lax.population_count(self.base.low(x, self.half))
    py = jax.lax.population_count(self.base.low(y, self.half))
    swap = (py < px) | ((py == px) & self.base.less(y, x))
    return select(swap, y, x), select(swap, x, y)


def layered_subset_sums(ops, steps):
  """All ``2^m`` subset sums sorted by (number of terms, value).

  Args:
    ops: key arithmetic.
    steps: key pytree, leaves ``(m,) + batch``: constant added when element ``i`` joins
      (its grid value shifted up, plus bit ``i`` of the index field).

  Returns:
    key pytree, leaves ``(2^m,) + batch``: layer ``p`` (subsets of ``p`` elements, sorted)
    is rows ``sum_{q<p} C(m, q)`` onwards, ``C(m, p)`` rows.
  """
  m = jax.tree.leaves(steps)[0].shape[0]
  pops = PopcountMajor(ops, m)
  batch = jax.tree.leaves(steps)[0].shape[1:]
  lst = pops.full((1,) + batch, 0)
  for i in range(m):
    joined = tmap(lambda v: v[::-1], pops.add(lst, tmap(lambda v: v[i], steps)))
    lst = shuffle_merge(pops, tmap(lambda x, y: jnp.concatenate([x, y], 0), lst, joined), 2 << i)
  return lst


# --------------------------------------------------------------------------------------
# The fixed-point grid and the keys of the two halves.
# --------------------------------------------------------------------------------------


_SCALE_DOWN = 2.0**-64  # |x| * 2^-64 summed over <= MAX_N + 1 terms cannot overflow
_F32_MAX = float(np.finfo(np.float32).max)


def _scaled_total(targets, coefficients, axis):
  """``(|t| + sum |c|) * 2^-64`` in float32: finite for every finite input.

  Args:
    targets: float32 batch; coefficients: float32 with the subset axis ``axis``.
  Returns:
    float32 batch. Inputs below ``2^-62`` flush to zero here, which is harmless where it
    is used: only totals far above 1 (the ones that overflow unscaled) read it.
  """
  return (jnp.abs(targets) * _SCALE_DOWN
          + jnp.sum(jnp.abs(coefficients) * _SCALE_DOWN, axis=axis))


def grid_exponent(targets, coefficients, half):
  """Per-instance fixed-point exponent ``s = 59 - half - e``, ``2^(e - 1) <= S < 2^e``.

  So ``2^(s + half + 3) * S < 2^62`` (S as in the module doc): every key fits in 63 bits.

  Args:
    targets: float32 ``(C,)``; coefficients: float32 ``(n, C)``; half: the index bits per
      key (the larger half's size).
  Returns:
    int32 ``(C,)``.
  """
  total = jnp.abs(targets) + jnp.sum(jnp.abs(coefficients), axis=0)
  # float32 rounding of `total` is covered by the spare headroom bit. A finite input can
  # still overflow the float32 sum (S > 3.4e38): then S * 2^-64 gives the exponent.
  _, e = jnp.frexp(total)  # total < 2^e
  _, e_big = jnp.frexp(_scaled_total(targets, coefficients, 0))
  e = jnp.where(jnp.isfinite(total), e, e_big + 64)
  s = 60 - (half + 1) - e.astype(jnp.int32)
  return jnp.clip(s, -200, 200)  # normal float32 S: 2^-126 <= S < 37 * 2^128


def _total_may_overflow(targets, coefficients):
  """Instances whose ``S = |t| + sum|c|`` may exceed the float32 maximum (traced inputs).

  A float32 sum of ``k <= 37`` non-negative terms is within a relative ``(k - 1) 2^-24
  < 2^-18`` of the exact one, so this flags every ``S > 3.4e38`` (and, conservatively,
  totals within ``2^-18`` below it). Concrete inputs get the exact float64 check in
  ``validate_batch`` instead.

  Args:
    targets: float32 ``(B,)``; coefficients: float32 ``(B, n)``.
  Returns:
    bool ``(B,)`` (True also for NaN).
  """
  scaled = _scaled_total(targets, coefficients, -1)
  return ~(scaled * (1.0 + 2.0**-18) <= _F32_MAX * _SCALE_DOWN)


def quantise(x, s):
  """round(x * 2^s) as an integer-valued float32 (exact power-of-two scaling)."""
  return jnp.round(jnp.ldexp(x, s))

def on_grid(targets, coefficients, half):
  """``(s, q, qt)``: the grid exponent ``s`` int32 ``(C,)`` and the coefficients ``q``
  ``(n, C)`` and targets ``qt`` ``(C,)`` on the grid ``2^-s`` (integer-valued float32).

  ``half``: the index bits per key (the larger half's size), as in ``grid_exponent``.
  """
  s = grid_exponent(targets, coefficients, half)
  return s, quantise(coefficients, s[None, :]), quantise(targets, s)


def index_steps(ops, q, shift, halves):
  """The key added when coefficient ``i`` joins a subset: its grid value shifted up by
  ``shift`` bits, plus bit ``i`` of its half's index field.

  Args:
    q: float32 ``(n, C)`` on the grid; halves: ``(size of half A, size of half B)``,
      summing to ``n``.
  Returns:
    key pytree, leaves ``(n, C)``.
  """
  steps = ops.from_float(q * float(2**shift))
  bit = jnp.asarray([1 << i for i in range(halves[0])] + [1 << i for i in range(halves[1])],
                    jnp.int32)[:, None]
  return ops.or_low(steps, jnp.broadcast_to(bit, q.shape))


def target_side(ops, t_key, sums_b, index_bits, tag):
  """``(t - sum_B) << shift | tag | index_B``: half B's sums seen from the target.

  Args:
    t_key: key ``(C,)``, the target shifted like the sums; sums_b: keys ``(m, C)`` with
      B's index in their low ``index_bits`` bits (ascending, so the result descends);
    tag: int, origin (and case) bits to set above the index.
  """
  idx = ops.low(sums_b, index_bits)
  cleared = ops.sub(sums_b, ops.from_float(idx.astype(jnp.float32)))
  t_b = tmap(lambda v: jnp.broadcast_to(v, idx.shape), t_key)
  return ops.or_low(ops.sub(t_b, cleared), idx | tag)


def adjacent_pairs(ops, merged, shift, origin):
  """Neighbours of a merged list: ``(lower, upper, lower's origin, cross, gap)``.

  ``cross``: the two keys come from different halves (origin bit ``origin``); ``gap``:
  ``upper - lower`` above the low ``shift`` bits (>= 0 in a sorted list).
  """
  lower = tmap(lambda v: v[:-1], merged)
  upper = tmap(lambda v: v[1:], merged)
  lo_origin = ops.low(lower, shift) >> origin
  cross = lo_origin != (ops.low(upper, shift) >> origin)
  gap = ops.sub(ops.shr(upper, shift), ops.shr(lower, shift))
  return lower, upper, lo_origin, cross, gap

# --------------------------------------------------------------------------------------
# Batches.
# --------------------------------------------------------------------------------------


def instances_per_chunk(n_even: int, batch: int, chunk_keys: int) -> int:
  """Instances per chunk: about ``chunk_keys`` keys per merged list, a power of two."""
  per_instance = 2 ** (n_even // 2 + 1)
  size = max(8, chunk_keys // per_instance)
  size = 1 << int(math.floor(math.log2(size)))
  # Do not pad a small batch up to a large chunk.
  return max(1, min(size, 1 << max(0, math.ceil(math.log2(max(batch, 1))))))


def valid_instances(targets, coefficients, flat_t, flat_c):
  """bool ``(B,)``: the instances a solver may answer (the others get NaN).

  Finite inputs and, when ``validate_batch`` could not check ``|t| + sum|c| <=`` the
  float32 maximum exactly (traced ``targets``/``coefficients``), no possible overflow.

  Args:
    targets, coefficients: the validated inputs (to tell traced from concrete).
    flat_t: float32 ``(B,)``; flat_c: float32 ``(B, n)``: the flattened batch.
  """
  ok = jnp.isfinite(flat_t) & jnp.all(jnp.isfinite(flat_c), axis=-1)
  if not (_checks.is_concrete(targets) and _checks.is_concrete(coefficients)):
    ok = ok & ~_total_may_overflow(flat_t, flat_c)
  return ok


def validate_batch(targets, coefficients, key_format, *, max_n, why, others=()):
  """Shared input checks of the exact solvers; returns float32 inputs and the batch shape.

  Args and checks: as ``check_batch``.

  Returns:
    ``(targets f32, coefficients f32, batch shape, key_format)``.
  """
  targets = jnp.asarray(targets, jnp.float32)
  coefficients = jnp.asarray(coefficients, jnp.float32)
  batch, _, key_format = check_batch(targets, coefficients, key_format, max_n=max_n, why=why,
                                     others=others)
  return targets, coefficients, batch, key_format


def check_batch(targets, coefficients, key_format, *, max_n, why, others=()):
  """The exact solvers' input checks, without moving the inputs (host arrays, device or
  multi-host global arrays, or tracers: then only shapes are checked).

  Args:
    targets, coefficients: as in ``solve_subset_sum``.
    key_format: ``None`` (per backend) or a name in ``KEY_FORMATS``.
    max_n: the solver's largest ``n``.
    why: ``n -> str``, the reason quoted when ``n > max_n``.
    others: further ``(name, array)`` pairs whose shapes join the batch broadcast.

  Returns:
    ``(batch shape, n, key_format)``.

  Raises:
    ValueError: empty inputs, ``n`` out of range, shapes that do not broadcast, an unknown
      key format, or (outside a trace) NaN/Inf targets or coefficients (as float32), or a
      total ``|t| + sum|c|`` beyond the float32 maximum (checked in float64).
  """
  t_shape, c_shape = np.shape(targets), np.shape(coefficients)
  if not c_shape:
    raise ValueError("coefficients must have at least one axis (the subset axis, last)")
  n = c_shape[-1]
  if n == 0:
    raise ValueError("coefficients has an empty last axis: need at least 1 coefficient")
  if n > max_n:
    raise ValueError(f"n = {n} coefficients per instance is beyond the supported maximum "
                     f"{max_n}: {why(n)}")
  shapes = [t_shape, c_shape[:-1]] + [np.shape(v) for _, v in others]
  try:
    batch = jnp.broadcast_shapes(*shapes)
  except ValueError as e:
    extra = "".join(f", {name} shape {np.shape(v)}" for name, v in others)
    raise ValueError(
        f"targets shape {t_shape} does not broadcast with coefficients batch shape "
        f"{c_shape[:-1]} (coefficients are batch + (n,)){extra}") from e
  if (int(np.prod(batch)) if batch else 1) == 0:
    raise ValueError(f"empty batch: targets shape {t_shape}, coefficients shape {c_shape}")
  key_format = key_format or default_key_format()
  if key_format not in KEY_FORMATS:
    raise ValueError(f"key_format must be one of {sorted(KEY_FORMATS)}, got {key_format!r}")
  if _checks.is_concrete(targets) and _checks.is_concrete(coefficients):
    _check_values(np.asarray(sharding.to_host(targets), np.float32),
                  np.asarray(sharding.to_host(coefficients), np.float32))
  return batch, n, key_format


def _check_values(targets, coefficients):
  """ValueError for NaN/Inf inputs or totals beyond the float32 maximum (numpy float32)."""
  bad_t, bad_c = ~np.isfinite(targets), ~np.isfinite(coefficients)
  if bad_t.any() or bad_c.any():
    raise ValueError(
        f"non-finite input: {int(bad_t.sum())} NaN/Inf target(s), {int(bad_c.sum())} "
        "NaN/Inf coefficient(s)")
  # Float64 cannot overflow here (37 terms < 2^6 times the float32 maximum).
  total = (np.abs(targets, dtype=np.float64)
           + np.sum(np.abs(coefficients), axis=-1, dtype=np.float64))
  big = total > _F32_MAX
  if big.any():
    raise ValueError(
        f"total magnitude overflows float32: {int(big.sum())} instance(s) have "
        f"|target| + sum|coefficients| up to {total.max():.4g} > {_F32_MAX:.4g}; rescale "
        "the targets and coefficients, e.g. by a power of two (errors scale with them)")
