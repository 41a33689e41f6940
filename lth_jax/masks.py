"""Masks: applying them, dense layouts, jaxpruner-style export and ``.npz`` files.

A mask pytree has the structure of the params it prunes, with uint8 0/1 leaves; a
``None`` leaf means "not pruned" (jaxpruner's convention), so such masks can be handed
to jaxpruner users unchanged.
"""

from __future__ import annotations

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import random_net as rn


def _is_none(x):
  return x is None


def apply_masks(params, masks):
  """``params * masks`` leafwise; ``None`` mask leaves leave the param unchanged.

  Pruning only zeroes entries: every kept entry is bit-identical to the original.
  """
  def one(m, p):
    if m is None:
      return p
    if m.shape != p.shape:
      raise ValueError(f"mask shape {m.shape} does not match param shape {p.shape}")
    return jnp.where(m.astype(bool), p, jnp.zeros_like(p))

  return jax.tree.map(one, masks, params, is_leaf=_is_none)


def dense_masks(net: rn.RandomNetwork, masks: dict) -> list[jax.Array]:
  """Structured masks ``{"u", "v"}`` -> masks of the ``2l`` dense kernels
  (shapes of ``random_net.dense_params(net)``): the ``M1`` entries outside the
  block-diagonal positions are always pruned."""
  out = []
  for mu, mv in zip(masks["u"], masks["v"]):
    d_in, n = mu.shape
    d_out = mv.shape[0]
    eye = jnp.eye(d_in, dtype=jnp.uint8)[:, :, None]
    out.append((eye * mu[None]).reshape(d_in, d_in * n))
    out.append(jnp.transpose(mv, (1, 2, 0)).reshape(d_in * n, d_out))
  return out


def count_kept(masks) -> int:
  """Number of kept (nonzero) entries; ``None`` leaves are not counted."""
  return int(sum(int(jnp.sum(m != 0)) for m in jax.tree.leaves(masks)))


def to_jaxpruner(masks, pack: bool = False):
  """uint8 0/1 leaves (``None`` kept), optionally bit-packed along the flattened leaf
  with ``jnp.packbits`` (unpack with ``from_jaxpruner(packed, shapes)``)."""
  def one(m):
    if m is None:
      return None
    m = jnp.asarray(m).astype(jnp.uint8)
    return jnp.packbits(m.reshape(-1)) if pack else m

  return jax.tree.map(one, masks, is_leaf=_is_none)


def from_jaxpruner(packed, like):
  """Inverse of ``to_jaxpruner(..., pack=True)``: ``like`` gives the leaf shapes."""
  def one(p, ref):
    if p is None:
      return None
    size = int(np.prod(ref.shape))
    return jnp.unpackbits(p)[:size].reshape(ref.shape).astype(jnp.uint8)

  return jax.tree.map(one, packed, like, is_leaf=_is_none)


def _key_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


def save_masks_npz(path: str, masks) -> None:
  """Writes the mask pytree to ``.npz`` (keys = ``/``-joined tree paths), atomically."""
  leaves = jax.tree_util.tree_flatten_with_path(masks, is_leaf=_is_none)[0]
  arrays = {_key_name(p): np.asarray(m, np.uint8) for p, m in leaves if m is not None}
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_masks_npz(path: str, like):
  """Reads masks saved by ``save_masks_npz`` into the structure of ``like``."""
  with np.load(path) as data:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like, is_leaf=_is_none)
    out = []
    for p, ref in leaves:
      name = _key_name(p)
      if ref is None:
        out.append(None)
        continue
      if name not in data:
        raise ValueError(f"{path}: no mask named {name!r} (has {sorted(data.files)})")
      arr = data[name]
      if arr.shape != tuple(ref.shape):
        raise ValueError(f"{path}: mask {name!r} has shape {arr.shape}, expected {ref.shape}")
      out.append(jnp.asarray(arr, jnp.uint8))
  return jax.tree_util.tree_unflatten(treedef, out)
