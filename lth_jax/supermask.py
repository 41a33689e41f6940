"""Supermasks: exact top-k masks of |score| and the straight-through estimator.

Meaning of the fraction. Everywhere in lth_jax the argument is `keep_fraction`: the fraction
of a tensor's entries that are KEPT (1.0 = dense, 0.01 = 99% removed). Beware when comparing
with the reference code: the official code of Pensia et al. passes the REMOVED fraction as
`--sparsity`, while allenai/hidden-networks passes the KEPT fraction as `sparsity` /
`prune_rate`. Convert a removed fraction with `keep = 1 - removed`.

Kept count. A tensor of `size` entries keeps exactly `kept_count(size, keep_fraction)`
= clip(round(keep_fraction * size), 1, size) entries (round half to even, computed in float32,
identically on the host and under jit): the count nearest the requested fraction, never 0.
This deviates from both reference codes, which REMOVE int(removed_fraction * size) entries
(truncated, in float64), i.e. keep about ceil(keep_fraction * size): on the paper's grid we
keep the same count or one entry fewer per tensor (e.g. 39 instead of 40 of 3,920 weights at
keep_fraction 0.01). The kept entries are those of largest |score|; equal magnitudes are
ranked by flat (row-major) index, lower index first, so the count is exact even with ties and
the mask is a deterministic function of (scores, keep_fraction). This is the order of
`jax.lax.top_k`.

Straight-through estimator. The forward pass uses `weight * mask`; the backward pass treats
the mask as if it were |score| (as both reference implementations do: they apply the
straight-through function to `scores.abs()`), so

    d loss / d score = d loss / d(weight * mask) * weight * sign(score).

Export. The masks are boolean pytrees; `lth_jax.masks` converts them to
google-research/jaxpruner's layout (`to_jaxpruner` / `from_jaxpruner`: uint8 0/1 leaves,
`None` for leaves that are never pruned such as frozen convolutions, optionally bit-packed)
and writes and reads them as `.npz` files (`save_masks_npz` / `load_masks_npz`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TOPK_METHODS = ("bisect", "sort")


# ----------------------------------------------------------------------------- counts


def kept_count(size: int, keep_fraction) -> jax.Array:
  """Number of entries kept in a tensor of `size` entries: clip(round(f * size), 1, size),
  round half to even (module doc: the reference codes truncate the removed count instead).

  `keep_fraction` may be a Python float or a traced scalar (e.g. inside `jax.vmap`). The
  product is formed in float32 so that host-side counts equal the ones used under jit.
  """
  f = jnp.asarray(keep_fraction, jnp.float32)
  k = jnp.round(f * jnp.float32(size)).astype(jnp.int32)
  return jnp.clip(k, 1, size)


def kept_count_host(size: int, keep_fraction: float) -> int:
  """`kept_count` as a Python int, computed with numpy float32 (no device round trip)."""
  k = int(np.round(np.float32(keep_fraction) * np.float32(size)))
  return min(max(k, 1), int(size))


# ----------------------------------------------------------------------------- top-k masks


def _magnitude_bits(scores: jax.Array) -> jax.Array:
  """|scores| as int32 bit patterns: for non-negative floats the integer order is the float
  order, so a threshold search over integers is exact (NaN sorts above +inf)."""
  a = jnp.abs(scores.astype(jnp.float32))
  return jax.lax.bitcast_convert_type(a, jnp.int32)


def _thresholds(bits: list[jax.Array], k: list[jax.Array]
                ) -> tuple[list[jax.Array], list[jax.Array]]:
  """Per row m of each (M, P) int32 array: the largest t with count(bits[m] >= t) >= k[m],
  and that count (> k[m] exactly when entries tie at t beyond the k-th).

  Built one bit at a time from bit 30 down: 31 counting passes, O(31 P), no sort. All
  tensors share one loop (one small XLA while loop, whatever the number of tensors).
  """
  def body(i, carry):
    bit = jax.lax.shift_left(jnp.int32(1), jnp.int32(30) - i)
    out = []
    for b, kk, (t, c) in zip(bits, k, carry):
      candidate = t | bit
      count = jnp.sum(b >= candidate[:, None], axis=1, dtype=jnp.int32)
      ok = count >= kk
      out.append((jnp.where(ok, candidate, t), jnp.where(ok, count, c)))
    return tuple(out)
  init = tuple((jnp.zeros(b.shape[0], jnp.int32), jnp.full(b.shape[0], b.shape[1], jnp.int32))
               for b in bits)
  result = jax.lax.fori_loop(0, 31, body, init)
  return [t for t, _ in result], [c for _, c in result]


_TIE_BLOCK = 1024


def _last_tied_index(equal: jax.Array, need: jax.Array) -> jax.Array:
  """Per row of (M, P) bool `equal`: the flat index of its need-th True entry (need >= 1).

  Two-level prefix count: True entries per block of 1024 (one pass), a prefix sum over the
  blocks to find the block holding the need-th one, then a prefix sum inside that block.
  """
  m, p = equal.shape
  block = min(_TIE_BLOCK, p)
  n_blocks = -(-p // block)
  padded = jnp.pad(equal, ((0, 0), (0, n_blocks * block - p))).reshape(m, n_blocks, block)
  per_block = jnp.sum(padded, axis=2, dtype=jnp.int32)                   # (M, n_blocks)
  cumulative = jnp.cumsum(per_block, axis=1)
  b = jnp.sum(cumulative < need[:, None], axis=1, dtype=jnp.int32)        # block index
  b = jnp.minimum(b, n_blocks - 1)
  before = jnp.take_along_axis(cumulative - per_block, b[:, None], axis=1)[:, 0]
  inside = jnp.take_along_axis(padded, b[:, None, None], axis=1)[:, 0]    # (M, block)
  position = jnp.sum(jnp.cumsum(inside, axis=1, dtype=jnp.int32) < (need - before)[:, None],
                     axis=1, dtype=jnp.int32)
  return b * block + position


def _masks_bisect(bits: list[jax.Array], k: list[jax.Array]) -> list[jax.Array]:
  """bits: (M, P) int32 arrays, k: (M,) int32 -> (M, P) bool, exactly k[m] True per row.

  Entries above the k-th largest value t are kept; of those equal to t (float32 scores do
  tie: 2M Gaussian float32 values hold ~10^5 duplicates) the lowest-index ones fill the rest.
  """
  ts, counts = _thresholds(bits, k)
  masks = []
  for b, t, count_ge, kk in zip(bits, ts, counts, k):
    equal = b == t[:, None]
    n_equal = jnp.sum(equal, axis=1, dtype=jnp.int32)
    need = kk - (count_ge - n_equal)                                    # 1 <= need <= n_equal
    last = _last_tied_index(equal, need)
    iota = jnp.arange(b.shape[1], dtype=jnp.int32)
    masks.append((b > t[:, None]) | (equal & (iota <= last[:, None])))
  return masks


def _masks_sort(bits: list[jax.Array], k: list[jax.Array]) -> list[jax.Array]:
  """Reference: rank by a stable descending argsort (ties -> lower index first)."""
  return [_mask_sort(b, kk) for b, kk in zip(bits, k)]


def _mask_sort(bits: jax.Array, k: jax.Array) -> jax.Array:
  order = jnp.argsort(-bits, axis=1, stable=True)
  positions = jnp.arange(bits.shape[1], dtype=jnp.int32)
  rank = jnp.zeros_like(bits).at[jnp.arange(bits.shape[0])[:, None], order].set(
      jnp.broadcast_to(positions, bits.shape))
  return rank < k[:, None]


def topk_mask(scores: jax.Array, keep_fraction, *, batch_dims: int = 0,
              method: str = "bisect") -> jax.Array:
  """Boolean mask keeping exactly `kept_count(size, keep_fraction)` entries of largest |score|.

  scores: any shape. The first `batch_dims` axes index independent tensors (one mask and one
    count per index), the remaining axes are ranked together (one tensor = one top-k).
  keep_fraction: fraction KEPT (see module doc); a float or (traced) array of shape
    `scores.shape[:batch_dims]` (or broadcastable to it).
  method: "bisect" (default; exact threshold search on float bit patterns, O(31 P), then an
    index tie-break) or "sort" (stable argsort, O(P log P); slower on CPU, kept as reference).
  Ties in |score| keep the lower flat index first. Differentiating through the mask gives zero:
  use `straight_through` / `masked_weight` for the edge-popup gradient.
  """
  return topk_masks([scores], keep_fraction, batch_dims=batch_dims, method=method)[0]


def topk_masks(scores: Any, keep_fraction, *, batch_dims: int = 0,
               method: str = "bisect") -> Any:
  """`topk_mask` on every leaf of a pytree of scores (one top-k per leaf, i.e. per tensor),
  computed together (one threshold search for all leaves)."""
  if method not in TOPK_METHODS:
    raise ValueError(f"unknown top-k method {method!r}; expected one of {TOPK_METHODS}")
  leaves, treedef = jax.tree_util.tree_flatten(scores)
  rows, ks = [], []
  for s in leaves:
    s = jax.lax.stop_gradient(jnp.asarray(s))
    batch_shape = s.shape[:batch_dims]
    size = int(np.prod(s.shape[batch_dims:], dtype=np.int64))
    if size == 0:
      raise ValueError("topk_mask needs non-empty tensors")
    if size >= 2**30:
      raise ValueError(f"tensor of {size} entries is too large for int32 index search")
    rows.append(s.reshape((-1, size)))
    ks.append(jnp.broadcast_to(kept_count(size, keep_fraction), batch_shape).reshape(-1))
  masks = _topk_mask_rows(rows, ks, method)
  return treedef.unflatten([m.reshape(s.shape) for m, s in zip(masks, leaves)])


@functools.partial(jax.jit, static_argnums=2)
def _topk_mask_rows(scores: list[jax.Array], k: list[jax.Array], method: str) -> list[jax.Array]:
  # jit: eager calls reuse one compiled program per shape (inlined under an outer jit).
  bits = [_magnitude_bits(s) for s in scores]
  return (_masks_bisect if method == "bisect" else _masks_sort)(bits, k)


# ----------------------------------------------------------------------------- straight-through


@jax.custom_vjp
def _pass_through(mask: jax.Array, magnitude: jax.Array) -> jax.Array:
  del magnitude
  return mask


def _pass_through_fwd(mask, magnitude):
  del magnitude
  return mask, None


def _pass_through_bwd(_, g):
  return jnp.zeros_like(g), g


_pass_through.defvjp(_pass_through_fwd, _pass_through_bwd)


def straight_through(mask: jax.Array, score: jax.Array) -> jax.Array:
  """Returns `mask` (as score's dtype) in the forward pass; in the backward pass the cotangent
  goes to |score| unchanged, hence to `score` multiplied by sign(score)."""
  return _pass_through(mask.astype(score.dtype), jnp.abs(score))


def masked_weight(weight: jax.Array, score: jax.Array, mask: jax.Array) -> jax.Array:
  """weight * mask, with d/d score = (d/d(weight * mask)) * weight * sign(score)."""
  return weight * straight_through(mask, score).astype(weight.dtype)
