"""Exact SubsetSum for batches of small instances, as one vmapped XLA program.

Problem: for each instance, given a target ``t`` and ``n`` coefficients ``c``, find
``mask in {0,1}^n`` minimising ``|t - sum(c[mask])|`` over all ``2^n`` subsets.

Algorithm (meet in the middle, sorting networks only):

* The coefficients are split into half A (the first ``h = floor(n / 2)``) and half B (the
  other ``a = ceil(n / 2)``). For odd ``n``, B's last coefficient ``c_x`` is either in the
  subset or not: A is merged against B's first ``h`` coefficients twice, once for target
  ``t`` and once for ``t - c_x`` (two blocks side by side on the batch axis), which is
  cheaper than padding ``n`` to even with a zero.
* Every value is rounded to a per-instance fixed-point grid ``2^-s`` chosen so that all
  partial sums fit in 64-bit integer *keys*; the low ``a + 1`` key bits carry the subset's
  index and an origin bit, so sorting keys sorts sums and carries the subsets along.
* Each half's ``2^h`` subset sums are generated already sorted: the sorted list ``L`` of
  the first ``k`` coefficients and ``L + c_k`` are two sorted lists, merged by a bitonic
  network (compare-exchange only: no sort, no gather).
* The sums of half A (ascending) and ``t - sums`` of half B (descending) form a bitonic
  sequence; one more bitonic merge sorts it, and the optimum is the closest adjacent pair
  of different origin (over both blocks for odd ``n``).

The batch is the minor (SIMD) axis and every step is an elementwise min/max, so XLA
vectorises it on CPU and it maps directly onto GPU/TPU vector units.

Key formats: ``"int64"`` (one signed 64-bit word; used on CPU and GPU, with 64-bit types
enabled only inside this module's trace, never globally) and ``"int32x2"`` (a signed high
word and an unsigned low word, compared lexicographically; used on TPU, which has no
native 64-bit integers). Both give bit-identical results.

Exactness: with ``S = |t| + sum|c|`` (summed in float32) and ``2^(e - 1) <= S < 2^e``, the
grid is ``2^-s`` with ``s = 59 - a - e``, so every key is below ``2^(s + a + 3) S < 2^62``.
A float32 ``x`` with ``|x| >= 2^(24 - s)`` is a multiple of ``2^-s`` (``2^(23 - s)`` would
do; one bit of slack), so **whenever every nonzero input (target and coefficients) has
magnitude at least** ``2^(24 - s)``, the optimum over all ``2^n`` subsets is found in exact
integer arithmetic and ``value``/``error`` are that optimum's, each rounded once to
float32. (For ``n <= 21`` and ``|t|, |c_i| <= 1``: ``S <= 22``, ``s >= 43``, grid step
``<= 2^-43 ~ 1.1e-13``, exact whenever every nonzero input is at least ``2^-19 ~ 1.9e-6``
in magnitude.) Smaller inputs are rounded to the grid, each by at most ``2^-(s + 1)``; the
rounded instance is solved exactly, so with ``D`` the total rounding (``<= (n + 1)
2^-(s + 1)``), the returned ``error`` (the rounded instance's) is within ``D`` of the true
optimum and the mask's true error within ``2 D <= (n + 1) 2^-s`` of it.

Totals ``S`` beyond the float32 maximum (finite inputs such as ``[3e38, 3e38]``) are
rejected: a ``ValueError`` for concrete inputs, ``nan`` inside ``jit`` (like non-finite
inputs). Subnormal float32 inputs (``|x| < 1.18e-38``) count as zero, as in all XLA
arithmetic (flush-to-zero on CPU, GPU and TPU), so ``value`` and ``error`` may differ from
a float64 re-evaluation by at most that much per term.
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

MAX_N = 36  # 2^(ceil(36/2)+1) = 2^19 keys per instance (4 MiB): beyond this, say so.
_TWO32 = 4294967296.0


class SubsetSumResult(NamedTuple):
  """Solution of a batch of SubsetSum instances.

  Attributes:
    mask: bool ``batch + (n,)``: the chosen subset of each instance.
    value: float32 ``batch``: the chosen subset's sum (exact sum, rounded once).
    error: float32 ``batch``: ``|target - value|`` (exact, rounded once).
  """

  mask: jax.Array
  value: jax.Array
  error: jax.Array


# --------------------------------------------------------------------------------------
# Key arithmetic. A key is a pytree of arrays; two implementations share one interface.
# --------------------------------------------------------------------------------------


class _Int64Keys:
  """Keys as int64 (requires the x64 scope opened by the caller)."""

  @staticmethod
  def from_float(v):
    """float32 integer-valued array with |v| < 2^62 -> key."""
    return v.astype(jnp.float64).astype(jnp.int64)

  @staticmethod
  def add(x, y):
    return x + y

  @staticmethod
  def sub(x, y):
    return x - y

  @staticmethod
  def or_low(x, low):
    """x | low for int32 ``low`` < 2^31 (x's low bits must be zero)."""
    return x | low.astype(jnp.int64)

  @staticmethod
  def low(x, bits):
    """The low ``bits`` (<= 31) bits as int32."""
    return (x & ((1 << bits) - 1)).astype(jnp.int32)

  @staticmethod
  def shr(x, bits):
    return x >> bits

  @staticmethod
  def shl_low(x, bits):
    """Shift left by ``bits``; caller guarantees no overflow."""
    return x << bits

  @staticmethod
  def minmax(x, y):
    return jnp.minimum(x, y), jnp.maximum(x, y)

  @staticmethod
  def less(x, y):
    return x < y

  @staticmethod
  def to_float(x):
    return x.astype(jnp.float32)

  @staticmethod
  def full(shape, value):
    return jnp.full(shape, value, jnp.int64)


class _Int32x2Keys:
  """Keys as (hi: int32, lo: uint32) pairs, i.e. ``hi * 2^32 + lo``."""

  @staticmethod
  def from_float(v):
    a = jnp.abs(v)
    hi = jnp.floor(a * (1.0 / _TWO32))
    lo = a - hi * _TWO32  # exact: the low bits of a 24-bit mantissa, in [0, 2^32)
    pos = hi.astype(jnp.int32), lo.astype(jnp.uint32)
    neg = _Int32x2Keys.sub((jnp.zeros_like(pos[0]), jnp.zeros_like(pos[1])), pos)
    return (jnp.where(v < 0, neg[0], pos[0]), jnp.where(v < 0, neg[1], pos[1]))

  @staticmethod
  def add(x, y):
    lo = x[1] + y[1]
    carry = (lo < x[1]).astype(jnp.int32)
    return x[0] + y[0] + carry, lo

  @staticmethod
  def sub(x, y):
    lo = x[1] - y[1]
    borrow = (x[1] < y[1]).astype(jnp.int32)
    return x[0] - y[0] - borrow, lo

  @staticmethod
  def or_low(x, low):
    return x[0], x[1] | low.astype(jnp.uint32)

  @staticmethod
  def low(x, bits):
    return (x[1] & jnp.uint32((1 << bits) - 1)).astype(jnp.int32)

  @staticmethod
  def shr(x, bits):
    hi, lo = x
    new_lo = (lo >> bits) | (hi.astype(jnp.uint32) << (32 - bits))
    return hi >> bits, new_lo

  @staticmethod
  def shl_low(x, bits):
    hi, lo = x
    new_hi = (hi << bits) | (lo >> (32 - bits)).astype(jnp.int32)
    return new_hi, lo << bits

  @staticmethod
  def less(x, y):
    return (x[0] < y[0]) | ((x[0] == y[0]) & (x[1] < y[1]))

  @staticmethod
  def minmax(x, y):
    swap = _Int32x2Keys.less(y, x)
    lo = (jnp.where(swap, y[0], x[0]), jnp.where(swap, y[1], x[1]))
    hi = (jnp.where(swap, x[0], y[0]), jnp.where(swap, x[1], y[1]))
    return lo, hi

  @staticmethod
  def to_float(x):
    """Correctly rounded, like int64 -> float32 (``hi * 2^32 + lo`` would round twice and,
    for negative keys, cancel: -1 is (-1, 2^32 - 1) and ``f32(2^32 - 1) = 2^32``)."""
    negative = x[0] < 0
    neg = _Int32x2Keys.sub((jnp.zeros_like(x[0]), jnp.zeros_like(x[1])), x)
    hi = jnp.where(negative, neg[0], x[0]).astype(jnp.uint32)  # |x| < 2^63 (or 2^63)
    lo = jnp.where(negative, neg[1], x[1])
    # Normalise the magnitude's top 32 bits into one word, with a sticky bit for the rest,
    # so the single uint32 -> float32 conversion rounds as the exact value would.
    nlz = jax.lax.clz(hi)  # 32 when hi == 0
    sh = jnp.minimum(nlz, 31)
    top = jnp.where(nlz == 0, hi, (hi << sh) | (lo >> (32 - sh)))
    sticky = jnp.where(nlz == 0, lo, lo << sh) != 0
    big = jnp.ldexp((top | sticky.astype(jnp.uint32)).astype(jnp.float32),
                    (32 - nlz).astype(jnp.int32))
    mag = jnp.where(hi == 0, lo.astype(jnp.float32), big)
    return jnp.where(negative, -mag, mag)

  @staticmethod
  def full(shape, value):
    return (jnp.full(shape, value >> 32, jnp.int32),
            jnp.full(shape, value & 0xFFFFFFFF, jnp.uint32))


_KEYS = {"int64": _Int64Keys, "int32x2": _Int32x2Keys}


def default_key_format(backend: str | None = None) -> str:
  """``"int32x2"`` on TPU (no native 64-bit integers), ``"int64"`` elsewhere."""
  backend = backend or jax.default_backend()
  return "int32x2" if backend == "tpu" else "int64"


# --------------------------------------------------------------------------------------
# Bitonic network pieces (leading axis = list position, trailing axes = batch).
# --------------------------------------------------------------------------------------


def _tmap(f, *xs):
  return jax.tree.map(f, *xs)


def _shape(x):
  return jax.tree.leaves(x)[0].shape


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
  y = _tmap(lambda v: v.reshape(shape), x)
  parts = []
  for idx in range(2 ** levels):
    bits = tuple((idx >> (levels - 1 - b)) & 1 for b in range(levels))
    parts.append(_tmap(lambda v: v[(slice(None),) + bits], y))
  for level in range(levels):
    bit = 1 << (levels - 1 - level)
    for idx in range(2 ** levels):
      if not idx & bit:
        parts[idx], parts[idx | bit] = ops.minmax(parts[idx], parts[idx | bit])
  out = _tmap(lambda *ps: jnp.stack(ps, 1), *parts)
  return _tmap(lambda v: v.reshape((n,) + rest), out)


def _merge_stages(ops, x, stride):
  """Bitonic stages with strides ``stride, stride/2, ..., 1``, ``_FUSE`` per pass."""
  while stride >= 1:
    levels = min(_FUSE, int(math.log2(stride)) + 1)
    x = _half_clean(ops, x, stride, levels)
    stride >>= levels
  return x


def _bitonic_merge(ops, x, size):
  """Sorts every bitonic block of length ``size`` (a power of two) ascending."""
  return _merge_stages(ops, x, size // 2)


def _sorted_subset_sums(ops, steps, lst=None):
  """All ``2^k`` subset sums, ascending, for ``k = steps`` leading rows of constants.

  Args:
    ops: key arithmetic.
    steps: key pytree, leaves ``(k,) + batch``: the constant added when element ``i``
      joins a subset (its fixed-point value shifted up, plus its index bit).
    lst: optional sorted sums ``(2^j,) + batch`` of earlier elements to extend.

  Returns:
    key pytree, leaves ``(2^k,) + batch`` (``(2^(j + k),) + batch`` when extending
    ``lst``), sorted ascending.
  """
  k = jax.tree.leaves(steps)[0].shape[0]
  batch = jax.tree.leaves(steps)[0].shape[1:]
  if lst is None:
    lst = ops.full((1,) + batch, 0)
  for i in range(k):
    step = _tmap(lambda v: v[i], steps)
    shifted_rev = _tmap(lambda v: v[::-1], ops.add(lst, step))  # descending
    lo, hi = ops.minmax(lst, shifted_rev)  # first stage of merging lst ++ rev(lst + c)
    lst = _tmap(lambda l, h: jnp.concatenate([l, h], 0), lo, hi)
    lst = _merge_stages(ops, lst, _shape(lst)[0] // 4)
  return lst


# --------------------------------------------------------------------------------------
# The solver on one chunk: targets (C,), coefficients (n, C), batch minor.
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


def _grid_exponent(targets, coefficients, half):
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


def _quantise(x, s):
  """round(x * 2^s) as an integer-valued float32 (exact power-of-two scaling)."""
  return jnp.round(jnp.ldexp(x, s))


def _solve_chunk(targets, coefficients, key_format):
  """Exact SubsetSum on one chunk.

  The ``n`` coefficients split into halves A (``n // 2``) and B (the rest). For odd ``n``
  B's extra element is handled by merging A against B's first ``n // 2`` elements twice,
  once for target ``t`` and once for ``t - c_extra`` (two "blocks").

  Args:
    targets: float32 ``(C,)``.
    coefficients: float32 ``(n, C)``.
    key_format: ``"int64"`` or ``"int32x2"``.

  Returns:
    (mask bool ``(n, C)``, value float32 ``(C,)``, error float32 ``(C,)``).
  """
  ops = _KEYS[key_format]
  n, c = coefficients.shape
  ha = n // 2
  hb = n - ha
  shift = hb + 1  # low bits: subset index (hb bits) + origin bit
  s = _grid_exponent(targets, coefficients, hb)
  q = _quantise(coefficients, s[None, :])  # (n, C)
  qt = _quantise(targets, s)

  # Constant added when coefficient i joins: (q_i << shift) + its index bit in its half.
  steps = ops.from_float(q * float(2**shift))
  bit = jnp.asarray([1 << i for i in range(ha)] + [1 << i for i in range(hb)],
                    jnp.int32)[:, None]
  steps = ops.or_low(steps, jnp.broadcast_to(bit, (n, c)))
  # Both halves' first ha elements at once: batch axes (2, C).
  joint = _tmap(lambda v: jnp.stack([v[:ha], v[ha:2 * ha]], 1), steps)
  sums = _sorted_subset_sums(ops, joint)  # leaves (2^ha, 2, C)
  sums_a = _tmap(lambda v: v[:, 0], sums)
  sums_b = _tmap(lambda v: v[:, 1], sums)

  # Other side: (qt - v_b) << shift | origin bit | idx_b, descending.
  idx_b = ops.low(sums_b, ha)
  t_key = ops.from_float(qt * float(2**shift))
  t_key = _tmap(lambda v: jnp.broadcast_to(v, _shape(sums_b)), t_key)
  cleared_b = ops.sub(sums_b, ops.from_float(idx_b.astype(jnp.float32)))
  other = [ops.or_low(ops.sub(t_key, cleared_b), idx_b | (1 << hb))]
  if hb > ha:
    # Odd n: B's extra element is in or out. Each case is an even-sized problem with
    # target t or t - c_extra: two merges of 2^(ha+1) keys instead of padding n to even
    # (one merge of 2^(ha+2) keys after generating lists twice as long): ~35% less work.
    extra = ops.from_float(q[2 * ha] * float(2**shift))
    extra = _tmap(lambda v: jnp.broadcast_to(v, _shape(sums_b)), extra)
    other.append(ops.or_low(ops.sub(ops.sub(t_key, extra), cleared_b),
                            idx_b | (1 << ha) | (1 << hb)))

  m = 2**ha
  blocks = len(other)
  # Block j merges A (ascending) with B-side keys of case j (descending): bitonic. The
  # blocks sit side by side on the batch axis, (size, blocks * C), like more instances.
  other = _tmap(lambda *vs: jnp.concatenate(vs, 1), *other)  # leaves (m, blocks * C)
  a_rep = _tmap(lambda v: jnp.concatenate([v] * blocks, 1), sums_a)
  merged = _tmap(lambda x, y: jnp.concatenate([x, y], 0), a_rep, other)
  size = 2 * m
  merged = _bitonic_merge(ops, merged, size)  # leaves (size, blocks * C)

  # Closest adjacent pair of different origin within each block.
  lower = _tmap(lambda v: v[:-1], merged)
  upper = _tmap(lambda v: v[1:], merged)
  origin_lo = ops.low(lower, shift) >> hb
  origin_hi = ops.low(upper, shift) >> hb
  cross = origin_lo != origin_hi
  gap = ops.sub(ops.shr(upper, shift), ops.shr(lower, shift))  # >= 0, < 2^(62 - shift)
  # Pack (gap, block * size + position) into one key: a single min finds the best pair.
  pos = (jnp.arange(size - 1, dtype=jnp.int32)[:, None]
         + size * jnp.repeat(jnp.arange(blocks, dtype=jnp.int32), c)[None, :])  # < 2^shift
  packed = ops.or_low(ops.shl_low(gap, shift), pos)
  big = ops.full(cross.shape, (1 << 62) - 1)
  packed = _tmap(lambda p, b: jnp.where(cross, p, b), packed, big)
  best = _reduce_min(ops, _tmap(lambda v: v.reshape(size - 1, blocks, c).transpose(1, 0, 2)
                                .reshape(-1, c), packed))  # leaves (C,)
  best_pos = ops.low(best, shift)
  gap_q = ops.to_float(ops.shr(best, shift))

  # The pair's keys: gather the row, then pick the block's column.
  col = (best_pos // size) * c + jnp.arange(c, dtype=jnp.int32)
  row = best_pos % size

  def take(v, r):
    return v[r, col]

  k_lo = _tmap(lambda v: take(v, row), merged)
  k_hi = _tmap(lambda v: take(v, row + 1), merged)
  lo_is_a = (ops.low(k_lo, shift) >> hb) == 0
  idx_lo = ops.low(k_lo, hb)
  idx_hi = ops.low(k_hi, hb)
  idx_a = jnp.where(lo_is_a, idx_lo, idx_hi)
  idx_b = jnp.where(lo_is_a, idx_hi, idx_lo)
  bits_a = jnp.arange(ha, dtype=jnp.int32)[:, None]
  bits_b = jnp.arange(hb, dtype=jnp.int32)[:, None]
  mask = jnp.concatenate([(idx_a[None] >> bits_a) & 1, (idx_b[None] >> bits_b) & 1], 0) == 1

  # lower key is A: sum_a <= t - sum_b, i.e. the subset sum undershoots by `gap`.
  error = jnp.ldexp(gap_q, -s)
  # value = t -+ gap, summed exactly in integers and rounded once to float32
  gap = ops.shr(best, shift)
  qt_key = ops.from_float(qt)
  value_q = _tmap(lambda x, y: jnp.where(lo_is_a, x, y), ops.sub(qt_key, gap), ops.add(qt_key, gap))
  value = jnp.ldexp(ops.to_float(value_q), -s)
  return mask, value, error


def _reduce_min(ops, x):
  """Minimum over the leading axis."""
  if ops is _Int64Keys:
    return jnp.min(x, axis=0)
  # Lexicographic min of (hi, lo): min hi first, then min lo among rows with that hi.
  hi, lo = x
  best_hi = jnp.min(hi, axis=0)
  lo_masked = jnp.where(hi == best_hi[None], lo, jnp.uint32(0xFFFFFFFF))
  return best_hi, jnp.min(lo_masked, axis=0)


# --------------------------------------------------------------------------------------
# Public entry points.
# --------------------------------------------------------------------------------------


def _chunk_size(n_even: int, batch: int, chunk_keys: int) -> int:
  """Instances per chunk: about ``chunk_keys`` keys per merged list, a power of two."""
  per_instance = 2 ** (n_even // 2 + 1)
  size = max(8, chunk_keys // per_instance)
  size = 1 << int(math.floor(math.log2(size)))
  # Do not pad a small batch up to a large chunk.
  return max(1, min(size, 1 << max(0, math.ceil(math.log2(max(batch, 1))))))


@functools.partial(jax.jit, static_argnames=("key_format", "chunk"))
def _solve_flat(targets, coefficients, key_format, chunk):
  """targets (B,), coefficients (B, n): padded, chunked and mapped."""
  b, n = coefficients.shape
  num_chunks = -(-b // chunk)
  pad_b = num_chunks * chunk - b
  coef = jnp.pad(coefficients, ((0, pad_b), (0, 0)))
  tgt = jnp.pad(targets, (0, pad_b))
  coef = coef.reshape(num_chunks, chunk, n).transpose(0, 2, 1)  # batch minor
  tgt = tgt.reshape(num_chunks, chunk)

  def one(args):
    t, c = args
    with jax.enable_x64(key_format == "int64"):
      return _solve_chunk(t, c, key_format)

  mask, value, error = jax.lax.map(one, (tgt, coef))
  mask = mask.transpose(0, 2, 1).reshape(num_chunks * chunk, n)[:b]
  return mask, value.reshape(-1)[:b], error.reshape(-1)[:b]


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

  Args:
    targets, coefficients: as in ``solve_subset_sum``.
    key_format: ``None`` (per backend) or a name in ``_KEYS``.
    max_n: the solver's largest ``n``.
    why: ``n -> str``, the reason quoted when ``n > max_n``.
    others: further ``(name, array)`` pairs whose shapes join the batch broadcast.

  Returns:
    ``(targets f32, coefficients f32, batch shape, key_format)``.

  Raises:
    ValueError: empty inputs, ``n`` out of range, shapes that do not broadcast, an unknown
      key format, or (outside a trace) NaN/Inf targets or coefficients, or a total
      ``|t| + sum|c|`` beyond the float32 maximum (checked in float64).
  """
  targets = jnp.asarray(targets, jnp.float32)
  coefficients = jnp.asarray(coefficients, jnp.float32)
  if coefficients.ndim == 0:
    raise ValueError("coefficients must have at least one axis (the subset axis, last)")
  n = coefficients.shape[-1]
  if n == 0:
    raise ValueError("coefficients has an empty last axis: need at least 1 coefficient")
  if n > max_n:
    raise ValueError(f"n = {n} coefficients per instance is beyond the supported maximum "
                     f"{max_n}: {why(n)}")
  shapes = [targets.shape, coefficients.shape[:-1]] + [jnp.shape(v) for _, v in others]
  try:
    batch = jnp.broadcast_shapes(*shapes)
  except ValueError as e:
    extra = "".join(f", {name} shape {jnp.shape(v)}" for name, v in others)
    raise ValueError(
        f"targets shape {targets.shape} does not broadcast with coefficients batch shape "
        f"{coefficients.shape[:-1]} (coefficients are batch + (n,)){extra}") from e
  if (int(np.prod(batch)) if batch else 1) == 0:
    raise ValueError(f"empty batch: targets shape {targets.shape}, coefficients shape "
                     f"{coefficients.shape}")
  key_format = key_format or default_key_format()
  if key_format not in _KEYS:
    raise ValueError(f"key_format must be one of {sorted(_KEYS)}, got {key_format!r}")
  if _checks.is_concrete(targets) and _checks.is_concrete(coefficients):
    bad_t = ~np.isfinite(np.asarray(targets))
    bad_c = ~np.isfinite(np.asarray(coefficients))
    if bad_t.any() or bad_c.any():
      raise ValueError(
          f"non-finite input: {int(bad_t.sum())} NaN/Inf target(s), {int(bad_c.sum())} "
          "NaN/Inf coefficient(s)")
    # Float64 cannot overflow here (37 terms < 2^6 times the float32 maximum).
    total = (np.abs(np.asarray(targets), dtype=np.float64)
             + np.sum(np.abs(np.asarray(coefficients)), axis=-1, dtype=np.float64))
    big = total > _F32_MAX
    if big.any():
      raise ValueError(
          f"total magnitude overflows float32: {int(big.sum())} instance(s) have "
          f"|target| + sum|coefficients| up to {total.max():.4g} > {_F32_MAX:.4g}; rescale "
          "the targets and coefficients, e.g. by a power of two (errors scale with them)")
  return targets, coefficients, batch, key_format


def solve_subset_sum(
    targets: chex.Array,
    coefficients: chex.Array,
    *,
    key_format: str | None = None,
    chunk_keys: int = 1 << 18,
) -> SubsetSumResult:
  """Exactly solves ``min over masks |target - sum(coefficients[mask])|`` for a batch.

  Args:
    targets: float ``batch`` (any shape, including scalar).
    coefficients: float ``batch + (n,)``; or ``(n,)`` shared by every target; or any
      shape broadcastable to ``batch + (n,)``. ``1 <= n <= MAX_N``. Zero coefficients are
      allowed (padding) and never change the optimum.
    key_format: ``"int64"`` or ``"int32x2"``; default: per backend (see
      ``default_key_format``). Both give identical results.
    chunk_keys: memory bound: keys per chunk of instances processed together (peak
      memory is a small multiple of ``8 * chunk_keys`` bytes plus the inputs/outputs).

  Guarantee: per instance, with ``2^-s`` its fixed-point grid (module doc: ``s = 59 -
  ceil(n / 2) - e``, ``2^(e - 1) <= |t| + sum|c| < 2^e``), the mask is a global optimum over
  all ``2^n`` subsets in exact arithmetic on the float32 inputs whenever every nonzero input
  has magnitude at least ``2^(24 - s)`` (for ``n <= 21`` and ``|t|, |c_i| <= 1``: every
  nonzero input at least ``2^-19``), and ``value``/``error`` are its exact sum and error,
  each rounded once. Smaller inputs are rounded to the grid: then ``error`` is within
  ``(n + 1) 2^-(s + 1)`` of the true optimum and the mask's true error within
  ``(n + 1) 2^-s`` of it.

  Returns:
    ``SubsetSumResult(mask bool batch+(n,), value float32 batch, error float32 batch)``.
    Ties go to a fixed pair (first by merge block, then by sorted position): deterministic.

  Raises:
    ValueError: empty inputs, ``n`` out of range, shapes that do not broadcast, or
      (when called outside a trace) NaN/Inf inputs or a total ``|t| + sum|c|`` beyond
      the float32 maximum (rescale such instances). Inside ``jit`` these checks cannot
      raise; such instances then return ``error = value = nan`` and an empty mask (the
      in-``jit`` overflow test is float32 and also flags totals within a relative
      ``2^-18`` below the maximum).
  """
  targets, coefficients, batch, key_format = validate_batch(
      targets, coefficients, key_format, max_n=MAX_N,
      why=lambda n: f"meet-in-the-middle needs 2^{(n + 1) // 2 + 1} keys (x8 bytes) per instance")
  n = coefficients.shape[-1]
  size = int(np.prod(batch)) if batch else 1
  flat_t = jnp.broadcast_to(targets, batch).reshape(-1)
  flat_c = jnp.broadcast_to(coefficients, batch + (n,)).reshape(-1, n)
  chunk = _chunk_size(n + n % 2, size, chunk_keys)
  mask, value, error = _solve_flat(flat_t, flat_c, key_format=key_format, chunk=chunk)
  finite = valid_instances(targets, coefficients, flat_t, flat_c)
  error = jnp.where(finite, error, jnp.nan)
  value = jnp.where(finite, value, jnp.nan)
  mask = mask & finite[:, None]
  return SubsetSumResult(mask.reshape(batch + (n,)), value.reshape(batch),
                         error.reshape(batch))
