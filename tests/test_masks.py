"""Mask helpers: application, jaxpruner layout, bit packing and .npz round trips."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lth_jax as L


def test_apply_masks_with_none_leaves():
  params = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(4)}
  masks = {"a": jnp.array([[1, 0, 1], [0, 1, 0]], jnp.uint8), "b": None}
  out = L.apply_masks(params, masks)
  np.testing.assert_array_equal(np.asarray(out["a"]), [[0, 0, 2], [0, 4, 0]])
  np.testing.assert_array_equal(np.asarray(out["b"]), np.ones(4))
  with pytest.raises(ValueError, match="shape"):
    L.apply_masks(params, {"a": jnp.ones((3, 2), jnp.uint8), "b": None})


def test_jaxpruner_pack_round_trip_and_npz(tmp_path):
  rng = np.random.default_rng(0)
  masks = {"u": [jnp.asarray(rng.integers(0, 2, (5, 3)), jnp.uint8)],
           "v": [jnp.asarray(rng.integers(0, 2, (4, 5, 3)), jnp.uint8)], "frozen": None}
  exported = L.to_jaxpruner(masks)
  assert exported["frozen"] is None and exported["u"][0].dtype == jnp.uint8
  packed = L.to_jaxpruner(masks, pack=True)
  assert packed["v"][0].size == -(-60 // 8)
  back = L.from_jaxpruner(packed, masks)
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  path = str(tmp_path / "m.npz")
  L.save_masks_npz(path, masks)
  loaded = L.load_masks_npz(path, masks)
  assert loaded["frozen"] is None
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert L.count_kept(masks) == int(sum(np.asarray(m).sum() for m in jax.tree.leaves(masks)))
  with pytest.raises(ValueError, match="shape"):
    L.load_masks_npz(path, {"u": [jnp.ones((2, 2))], "v": [jnp.ones((4, 5, 3))], "frozen": None})


def test_dense_masks_shapes_match_dense_params():
  net = L.sample_random_network(jax.random.key(0), (3, 4, 2), 2)
  masks = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.uint8), net.params)
  dm = L.dense_masks(net, masks)
  assert [m.shape for m in dm] == [k.shape for k in L.dense_params(net)]
  # an all-ones structured mask keeps exactly the block-diagonal M1 entries and all of M2
  assert int(dm[0].sum()) == 3 * 2 and int(dm[1].sum()) == dm[1].size


@pytest.mark.parametrize("pack", [False, True])
def test_npz_is_self_describing_and_packs_like_jaxpruner(tmp_path, pack):
  rng = np.random.default_rng(1)
  masks = {"fc1": {"kernel": rng.integers(0, 2, (7, 5)).astype(bool)},
           "u": [jnp.asarray(rng.integers(0, 2, (3, 4, 2)), jnp.uint8)], "conv": None}
  path = L.save_masks_npz(tmp_path / "sub" / "m.npz", masks, pack=pack)
  with np.load(path) as data:
    assert sorted(data.files) == ["__lth_jax_masks__", "fc1/kernel", "u/0"]
    if pack:  # the stored bytes are exactly jaxpruner's packed masks
      np.testing.assert_array_equal(data["fc1/kernel"],
                                    L.to_jaxpruner(masks, pack=True)["fc1"]["kernel"])
  rebuilt = L.load_masks_npz(path)  # no `like`: nested dicts from the file's JSON entry
  assert rebuilt["conv"] is None and set(rebuilt["u"]) == {"0"}
  np.testing.assert_array_equal(rebuilt["fc1"]["kernel"], masks["fc1"]["kernel"])
  assert rebuilt["u"]["0"].dtype == np.uint8 and rebuilt["u"]["0"].shape == (3, 4, 2)
  shaped = L.load_masks_npz(path, masks)
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(shaped)):
    np.testing.assert_array_equal(np.asarray(a, np.uint8), np.asarray(b))
  with pytest.raises(ValueError, match="0 and 1"):
    L.save_masks_npz(tmp_path / "bad.npz", {"a": np.array([0, 2])})
  with pytest.raises(ValueError, match="'/'"):
    L.save_masks_npz(tmp_path / "bad.npz", {"a/b": np.array([0, 1])})


def test_npz_reads_older_files(tmp_path):
  m = np.random.default_rng(2).integers(0, 2, (3, 11)).astype(np.uint8)
  # Format 1 (edge-popup masks before lth_jax.masks wrote them): packed along the last axis.
  meta = {"format": 1, "packbits": True, "leaves": {"fc1/kernel": [3, 11], "conv": None}}
  np.savez(tmp_path / "v1.npz", **{"fc1/kernel": np.packbits(m, axis=-1),
                                   "__lth_jax_masks__": np.array(json.dumps(meta))})
  old = L.load_masks_npz(tmp_path / "v1.npz")
  assert old["conv"] is None
  np.testing.assert_array_equal(old["fc1"]["kernel"], m)
  # Ticket files without the JSON entry load into the structure of `like` only.
  np.savez(tmp_path / "plain.npz", **{"u/0": m})
  np.testing.assert_array_equal(L.load_masks_npz(tmp_path / "plain.npz", {"u": [m]})["u"][0], m)
  with pytest.raises(ValueError, match="like"):
    L.load_masks_npz(tmp_path / "plain.npz")
