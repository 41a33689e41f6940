"""Integer keys of the exact meet in the middle (solve stage): two formats, one interface.

A key is a subset sum on the instance's fixed-point grid, shifted up, with the subset's
index (and origin bits) in its low bits, so sorting keys sorts sums and carries the
subsets along. ``Int64Keys``: one int64 word (CPU/GPU; 64-bit types only inside the
caller's ``jax.enable_x64``). ``Int32x2Keys``: a signed high and an unsigned low int32
word compared lexicographically (TPU, which has no native 64-bit integers). Both give
bit-identical results. Plus small helpers on key pytrees shared by ``mitm``,
``subset_sum`` and ``fewest_terms``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_TWO32 = 4294967296.0


# --------------------------------------------------------------------------------------
# Key arithmetic. A key is a pytree of arrays; two implementations share one interface.
# --------------------------------------------------------------------------------------


class Int64Keys:
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


class Int32x2Keys:
  """Keys as (hi: int32, lo: uint32) pairs, i.e. ``hi * 2^32 + lo``."""

  @staticmethod
  def from_float(v):
    a = jnp.abs(v)
    hi = jnp.floor(a * (1.0 / _TWO32))
    lo = a - hi * _TWO32  # exact: the low bits of a 24-bit mantissa, in [0, 2^32)
    pos = hi.astype(jnp.int32), lo.astype(jnp.uint32)
    neg = Int32x2Keys.sub((jnp.zeros_like(pos[0]), jnp.zeros_like(pos[1])), pos)
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
    swap = Int32x2Keys.less(y, x)
    lo = (jnp.where(swap, y[0], x[0]), jnp.where(swap, y[1], x[1]))
    hi = (jnp.where(swap, x[0], y[0]), jnp.where(swap, x[1], y[1]))
    return lo, hi

  @staticmethod
  def to_float(x):
    """Correctly rounded, like int64 -> float32 (``hi * 2^32 + lo`` would round twice and,
    for negative keys, cancel: -1 is (-1, 2^32 - 1) and ``f32(2^32 - 1) = 2^32``)."""
    negative = x[0] < 0
    neg = Int32x2Keys.sub((jnp.zeros_like(x[0]), jnp.zeros_like(x[1])), x)
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


KEY_FORMATS = {"int64": Int64Keys, "int32x2": Int32x2Keys}


def default_key_format(backend: str | None = None) -> str:
  """``"int32x2"`` on TPU (no native 64-bit integers), ``"int64"`` elsewhere."""
  backend = backend or jax.default_backend()
  return "int32x2" if backend == "tpu" else "int64"

# --------------------------------------------------------------------------------------
# Helpers on key pytrees (both formats).
# --------------------------------------------------------------------------------------


def tmap(f, *xs):
  return jax.tree.map(f, *xs)


def leading_shape(x):
  """The shape of a key pytree (of its first leaf)."""
  return jax.tree.leaves(x)[0].shape


def select(cond, x, y):
  """``where(cond, x, y)`` on key pytrees."""
  return tmap(lambda u, v: jnp.where(cond, u, v), x, y)


def keys_equal(x, y):
  return functools.reduce(jnp.logical_and, jax.tree.leaves(tmap(jnp.equal, x, y)))


def take_rows(x, idx):
  """Rows ``idx`` (static int array) of every leaf."""
  return tmap(lambda v: jnp.take(v, idx, axis=0), x)


def key_abs(ops, x):
  if ops is Int64Keys:
    return jnp.abs(x)
  negative = jax.tree.leaves(x)[0] < 0
  return select(negative, ops.sub(ops.full(negative.shape, 0), x), x)


def reduce_min(ops, x):
  """Minimum key over the leading axis."""
  if ops is Int64Keys:
    return jnp.min(x, axis=0)
  # Lexicographic min of (hi, lo): min hi first, then min lo among rows with that hi.
  hi, lo = x
  best_hi = jnp.min(hi, axis=0)
  lo_masked = jnp.where(hi == best_hi[None], lo, jnp.uint32(0xFFFFFFFF))
  return best_hi, jnp.min(lo_masked, axis=0)
