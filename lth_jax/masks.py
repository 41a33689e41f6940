"""Masks: applying them, dense layouts, jaxpruner-style export and ``.npz`` files.

A mask pytree has the structure of the params it prunes, with uint8 0/1 leaves; a
``None`` leaf means "not pruned" (jaxpruner's convention), so such masks can be handed
to jaxpruner users unchanged. This module is the library's one implementation of the
jaxpruner layout (``to_jaxpruner`` / ``from_jaxpruner``) and of mask ``.npz`` files
(``save_masks_npz`` / ``load_masks_npz``), for the SubsetSum tickets and the edge-popup
supermasks alike.
"""

from __future__ import annotations

import io
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import random_net as rn
from lth_jax import files as files_lib


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
  """uint8 0/1 leaves (``None`` kept): jaxpruner's mask layout. With ``pack``, each leaf is
  bit-packed as jaxpruner's ``use_packed_masks`` does (``jnp.packbits`` of the flattened
  leaf, shape ``(ceil(size / 8),)``); unpack with ``from_jaxpruner(packed, like)``."""
  def one(m):
    if m is None:
      return None
    m = jnp.asarray(m).astype(jnp.uint8)
    return jnp.packbits(m.reshape(-1)) if pack else m

  return jax.tree.map(one, masks, is_leaf=_is_none)


def from_jaxpruner(packed, like):
  """Inverse of ``to_jaxpruner(..., pack=True)``: ``like`` gives the leaf shapes (arrays
  or ``ShapeDtypeStruct``s; ``None`` where the mask is ``None``)."""
  def one(p, ref):
    if p is None:
      return None
    size = int(np.prod(ref.shape))
    return jnp.unpackbits(jnp.asarray(p, jnp.uint8))[:size].reshape(ref.shape).astype(
        jnp.uint8)

  return jax.tree.map(one, packed, like, is_leaf=_is_none)


# ``.npz`` files: one entry per mask leaf, keyed by its ``/``-joined tree path ("fc1/kernel",
# "u/0"), plus a JSON entry under _NPZ_META_KEY: {"format", "packbits", "leaves": {path:
# shape, or None for a leaf that is not pruned}}, which makes the file self-describing.
# Format 2 packs like ``to_jaxpruner(pack=True)``; format 1 (older edge-popup files) packed
# along the last axis. Files without the JSON entry (older ticket files) are unpacked and
# load only into the structure of a ``like`` tree.
_NPZ_META_KEY = "__lth_jax_masks__"
_NPZ_FORMAT = 2


def _key_name(path) -> str:
  names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
  for name in names:
    if "/" in name:
      raise ValueError(f"mask tree key {name!r} contains '/', the path separator")
  return "/".join(names)


def save_masks_npz(path: str | os.PathLike, masks, pack: bool = False) -> pathlib.Path:
  """Writes the mask pytree (``None`` = not pruned) to ``path`` (``.npz``), atomically;
  leaves bit-packed as ``to_jaxpruner(masks, pack=True)`` if ``pack``. Returns the path."""
  leaves = jax.tree_util.tree_flatten_with_path(masks, is_leaf=_is_none)[0]
  arrays, meta = {}, {"format": _NPZ_FORMAT, "packbits": bool(pack), "leaves": {}}
  for p, m in leaves:
    name = _key_name(p)
    if m is None:
      meta["leaves"][name] = None
      continue
    m = np.asarray(m).astype(np.uint8)
    if m.size and m.max() > 1:
      raise ValueError(f"mask {name!r} has values other than 0 and 1")
    meta["leaves"][name] = list(m.shape)
    arrays[name] = np.packbits(m.reshape(-1)) if pack else m
  arrays[_NPZ_META_KEY] = np.array(json.dumps(meta))
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  return files_lib.atomic_write_bytes(path, buffer.getvalue())


def _read_leaf(data, meta, name: str, shape) -> np.ndarray:
  arr = data[name]
  if meta is not None and meta["packbits"]:
    if meta.get("format", 1) == 1:  # packed along the last axis
      arr = np.unpackbits(arr, axis=-1, count=shape[-1])
    else:
      arr = np.unpackbits(arr.reshape(-1), count=int(np.prod(shape, dtype=np.int64)))
    arr = arr.reshape(shape)
  return arr.astype(np.uint8)


def load_masks_npz(path: str | os.PathLike, like=None):
  """Reads masks saved by ``save_masks_npz`` (unpacking packed files).

  With ``like``: the structure of ``like`` (``None`` leaves stay ``None``), jax uint8
  arrays whose shapes must match ``like``'s. Without: a nested dict rebuilt from the file
  (paths split at ``/``), numpy uint8 arrays and ``None`` for unpruned leaves.
  """
  with np.load(path, allow_pickle=False) as data:
    meta = json.loads(str(data[_NPZ_META_KEY])) if _NPZ_META_KEY in data.files else None
    if like is None:
      if meta is None:
        raise ValueError(f"{path}: no {_NPZ_META_KEY} entry; pass `like` to give the structure")
      tree: dict = {}
      for name, shape in meta["leaves"].items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
          node = node.setdefault(p, {})
        node[leaf] = None if shape is None else _read_leaf(data, meta, name, shape)
      return tree
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like, is_leaf=_is_none)
    out = []
    for p, ref in leaves:
      name = _key_name(p)
      if ref is None:
        out.append(None)
        continue
      if name not in data.files:
        names = sorted(f for f in data.files if f != _NPZ_META_KEY)
        raise ValueError(f"{path}: no mask named {name!r} (has {names})")
      shape = tuple(meta["leaves"][name]) if meta is not None else data[name].shape
      if shape != tuple(ref.shape):
        raise ValueError(f"{path}: mask {name!r} has shape {shape}, expected {ref.shape}")
      out.append(jnp.asarray(_read_leaf(data, meta, name, shape)))
  return jax.tree_util.tree_unflatten(treedef, out)
