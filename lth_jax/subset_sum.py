"""Exact SubsetSum for batches of small instances, as one vmapped XLA program (solve stage).

The minimum-error objective: the chunk kernel ``solve_chunk`` and ``solve_subset_sum``,
built on the shared meet-in-the-middle pieces of ``mitm`` and ``mitm_keys``.

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
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import mitm
from lth_jax import mitm_keys
from lth_jax.mitm_keys import default_key_format  # public path: lth_jax.subset_sum.default_key_format
from lth_jax.mitm_keys import tmap

MAX_N = 36  # 2^(ceil(36/2)+1) = 2^19 keys per instance (4 MiB): beyond this, say so.


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
# The solver on one chunk: targets (C,), coefficients (n, C), batch minor.
# --------------------------------------------------------------------------------------


def _half_sums(ops, q, ha, hb, shift):
  """Both halves' first ``ha`` elements' sorted subset sums, generated side by side.

  Returns:
    ``(sums_a, sums_b)``: key leaves ``(2^ha, C)``, ascending, B's index in the low bits.
  """
  steps = mitm.index_steps(ops, q, shift, (ha, hb))
  joint = tmap(lambda v: jnp.stack([v[:ha], v[ha:2 * ha]], 1), steps)  # batch axes (2, C)
  sums = mitm.sorted_subset_sums(ops, joint)  # leaves (2^ha, 2, C)
  return tmap(lambda v: v[:, 0], sums), tmap(lambda v: v[:, 1], sums)


def _b_side(ops, q, qt, sums_b, ha, hb, shift):
  """The B-side keys ``(qt - v_b) << shift | origin | idx_b`` (descending), one list per
  case of B's extra element (odd ``n``: out, then in)."""
  t_key = ops.from_float(qt * float(2**shift))
  other = [mitm.target_side(ops, t_key, sums_b, ha, 1 << hb)]
  if hb > ha:
    # Odd n: B's extra element is in or out. Each case is an even-sized problem with
    # target t or t - c_extra: two merges of 2^(ha+1) keys instead of padding n to even
    # (one merge of 2^(ha+2) keys after generating lists twice as long): ~35% less work.
    extra = ops.from_float(q[2 * ha] * float(2**shift))
    other.append(mitm.target_side(ops, ops.sub(t_key, extra), sums_b, ha,
                                  (1 << ha) | (1 << hb)))
  return other


def _merge_blocks(ops, sums_a, other):
  """Block ``j`` merges A (ascending) with B-side keys of case ``j`` (descending): bitonic.
  The blocks sit side by side on the batch axis, ``(size, blocks * C)``, like more
  instances."""
  blocks = len(other)
  other = tmap(lambda *vs: jnp.concatenate(vs, 1), *other)  # leaves (m, blocks * C)
  a_rep = tmap(lambda v: jnp.concatenate([v] * blocks, 1), sums_a)
  merged = tmap(lambda x, y: jnp.concatenate([x, y], 0), a_rep, other)
  return mitm.bitonic_merge(ops, merged, mitm_keys.leading_shape(merged)[0])


def _closest_pair(ops, merged, shift, hb, blocks, c):
  """The closest adjacent pair of different origin within each block, as one packed key
  ``gap << shift | (block * size + position)`` per instance (leaves ``(C,)``)."""
  size = mitm_keys.leading_shape(merged)[0]
  _, _, _, cross, gap = mitm.adjacent_pairs(ops, merged, shift, hb)  # gap < 2^(62 - shift)
  # Pack (gap, block * size + position) into one key: a single min finds the best pair.
  pos = (jnp.arange(size - 1, dtype=jnp.int32)[:, None]
         + size * jnp.repeat(jnp.arange(blocks, dtype=jnp.int32), c)[None, :])  # < 2^shift
  packed = ops.or_low(ops.shl_low(gap, shift), pos)
  big = ops.full(cross.shape, (1 << 62) - 1)
  packed = tmap(lambda p, b: jnp.where(cross, p, b), packed, big)
  return mitm_keys.reduce_min(ops, tmap(
      lambda v: v.reshape(size - 1, blocks, c).transpose(1, 0, 2).reshape(-1, c), packed))


def _decode(ops, merged, best, s, qt, ha, hb, shift):
  """The best pair's mask ``(n, C)``, value and error (float32, each rounded once)."""
  size, c = mitm_keys.leading_shape(merged)[0], mitm_keys.leading_shape(best)[0]
  best_pos = ops.low(best, shift)
  # The pair's keys: gather the row, then pick the block's column.
  col = (best_pos // size) * c + jnp.arange(c, dtype=jnp.int32)
  row = best_pos % size
  k_lo = tmap(lambda v: v[row, col], merged)
  k_hi = tmap(lambda v: v[row + 1, col], merged)
  lo_is_a = (ops.low(k_lo, shift) >> hb) == 0
  idx_lo = ops.low(k_lo, hb)
  idx_hi = ops.low(k_hi, hb)
  idx_a = jnp.where(lo_is_a, idx_lo, idx_hi)
  idx_b = jnp.where(lo_is_a, idx_hi, idx_lo)
  bits_a = jnp.arange(ha, dtype=jnp.int32)[:, None]
  bits_b = jnp.arange(hb, dtype=jnp.int32)[:, None]
  mask = jnp.concatenate([(idx_a[None] >> bits_a) & 1, (idx_b[None] >> bits_b) & 1], 0) == 1
  # lower key is A: sum_a <= t - sum_b, i.e. the subset sum undershoots by `gap`.
  gap = ops.shr(best, shift)
  error = jnp.ldexp(ops.to_float(gap), -s)
  # value = t -+ gap, summed exactly in integers and rounded once to float32
  qt_key = ops.from_float(qt)
  value_q = mitm_keys.select(lo_is_a, ops.sub(qt_key, gap), ops.add(qt_key, gap))
  value = jnp.ldexp(ops.to_float(value_q), -s)
  return mask, value, error


def solve_chunk(targets, coefficients, key_format):
  """Exact SubsetSum on one chunk (inside ``jax.enable_x64`` for ``"int64"`` keys).

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
  ops = mitm_keys.KEY_FORMATS[key_format]
  n, c = coefficients.shape
  ha = n // 2
  hb = n - ha
  shift = hb + 1  # low bits: subset index (hb bits) + origin bit
  s, q, qt = mitm.on_grid(targets, coefficients, hb)
  sums_a, sums_b = _half_sums(ops, q, ha, hb, shift)
  other = _b_side(ops, q, qt, sums_b, ha, hb, shift)
  merged = _merge_blocks(ops, sums_a, other)  # leaves (2^(ha+1), blocks * C)
  best = _closest_pair(ops, merged, shift, hb, len(other), c)
  return _decode(ops, merged, best, s, qt, ha, hb, shift)


# --------------------------------------------------------------------------------------
# Public entry point.
# --------------------------------------------------------------------------------------


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
      return solve_chunk(t, c, key_format)

  mask, value, error = jax.lax.map(one, (tgt, coef))
  mask = mask.transpose(0, 2, 1).reshape(num_chunks * chunk, n)[:b]
  return mask, value.reshape(-1)[:b], error.reshape(-1)[:b]


def _why_max_n(n: int) -> str:
  return f"meet-in-the-middle needs 2^{(n + 1) // 2 + 1} keys (x8 bytes) per instance"


def check_inputs(targets, coefficients, key_format: str | None = None):
  """``solve_subset_sum``'s argument checks (same errors), without converting or moving
  the inputs (host, device or multi-host global arrays; only shapes when traced).

  Returns:
    ``(batch shape, n, key_format)``.
  """
  return mitm.check_batch(targets, coefficients, key_format, max_n=MAX_N, why=_why_max_n)


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
  targets, coefficients, batch, key_format = mitm.validate_batch(
      targets, coefficients, key_format, max_n=MAX_N, why=_why_max_n)
  n = coefficients.shape[-1]
  size = int(np.prod(batch)) if batch else 1
  flat_t = jnp.broadcast_to(targets, batch).reshape(-1)
  flat_c = jnp.broadcast_to(coefficients, batch + (n,)).reshape(-1, n)
  chunk = mitm.instances_per_chunk(n + n % 2, size, chunk_keys)
  mask, value, error = _solve_flat(flat_t, flat_c, key_format=key_format, chunk=chunk)
  finite = mitm.valid_instances(targets, coefficients, flat_t, flat_c)
  error = jnp.where(finite, error, jnp.nan)
  value = jnp.where(finite, value, jnp.nan)
  mask = mask & finite[:, None]
  return SubsetSumResult(mask.reshape(batch + (n,)), value.reshape(batch),
                         error.reshape(batch))
