"""Small helpers shared by several test files (importable: pytest puts tests/ on sys.path)."""

import contextlib
import os

import jax
import pytest

from lth_jax import edge_popup as ep


def tiny_target(sizes=(6, 5, 3), scale=0.3, seed=0):
  """A small random MLP target: kernels ``(d_in, d_out)`` of N(0, scale^2) entries."""
  keys = jax.random.split(jax.random.PRNGKey(seed), len(sizes) - 1)
  return [scale * jax.random.normal(k, (a, b)) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def tiny_edge_popup_net(variant, arch="fc2"):
  """An edge-popup network small enough to train in a test."""
  return ep.EdgePopupNet(arch, variant, hidden=8, redundancy=2)


@contextlib.contextmanager
def read_only_dir(path):
  """``path`` created read-only for the block; skips the test where the user (root) can
  write to it anyway."""
  path.mkdir()
  path.chmod(0o500)
  try:
    if os.access(path, os.W_OK):  # root ignores permission bits
      pytest.skip("running as a user who can write to read-only directories")
    yield path
  finally:
    path.chmod(0o700)
