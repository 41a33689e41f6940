"""Small helpers shared by several test files (importable: pytest puts tests/ on sys.path)."""

import contextlib
import io
import os
import runpy
import sys

import jax
import numpy as np
import pytest
from absl import app, flags

from lth_jax import edge_popup as ep
from lth_jax import evaluation
from lth_jax.constructions import conv
from lth_jax.run import flags as run_flags  # defines --debug: part of the baseline below


def pruned_entries(full, pruned) -> int:
  """Pruning only: every nonzero entry of the pruned pytree ``pruned`` is, bit for bit, the
  entry of the unpruned ``full`` at the same place. Returns how many entries are kept."""
  kept = 0
  for f, p in zip(jax.tree.leaves(full), jax.tree.leaves(pruned), strict=True):
    f, p = np.asarray(f), np.asarray(p)
    nz = p != 0
    np.testing.assert_array_equal(p[nz].view(np.uint32), f[nz].view(np.uint32))
    kept += int(nz.sum())
  return kept


def assert_conv_forwards_agree(obj, ticket, x, out_shape):
  """The conv construction's structured, compact and dense masked forwards agree, and
  ``evaluation.dense_check`` says so too. Returns the structured output."""
  structured = conv.structured_forward(obj, ticket.masks, x)
  fast = conv.effective_forward(ticket.effective_kernels, x)
  dense = conv.dense_forward(conv.dense_params(obj, ticket.masks), x)
  assert structured.shape == out_shape
  np.testing.assert_allclose(fast, structured, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dense, structured, rtol=1e-5, atol=1e-5)
  assert evaluation.dense_check(obj, ticket, x) < 1e-5
  return structured


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


# ------------------------------------------------------------ entry points in this process

FLAGS = flags.FLAGS
app.define_help_flags()  # defined once per process by app.run: part of the baseline
_BASELINE = frozenset(FLAGS)


def invoke(module: str, *args: str) -> tuple[int, str]:
  """Runs ``python -m module *args`` in this process (``runpy``, as the interpreter would):
  ``(exit status, stderr)``. The module's flags are defined afresh on absl's FLAGS and
  removed afterwards, so one interpreter start serves many runs (a fresh ``python -m``
  pays the JAX import each time)."""
  err = io.StringIO()
  argv, sys.argv = sys.argv, [module, *args]
  code = 0
  try:
    with contextlib.redirect_stderr(err):
      runpy.run_module(module, run_name="__main__", alter_sys=False)
  except SystemExit as e:
    code = e.code or 0
  finally:
    sys.argv = argv
    for name in set(FLAGS) - _BASELINE:  # the next case defines its module's flags again
      delattr(FLAGS, name)
    FLAGS.unparse_flags()
  return code, err.getvalue()


def assert_one_error_line(code: int, err: str, *expected: str) -> str:
  """The failure contract of ``lth_jax/run/flags.py``: exit status 2, exactly one
  ``error: ...`` line (containing every ``expected`` text), no traceback."""
  assert code == run_flags.BAD_INPUT, err[-2000:]
  assert "Traceback" not in err, err[-2000:]
  errors = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, err[-2000:]
  for text in expected:
    assert text in errors[0], (text, errors[0])
  return errors[0]
