"""Shared test settings (a hypothesis profile tuned for jit-heavy tests on a small CPU) and
fixtures."""

import os

# The tests check values, not speed, and most of their time is XLA compiling: with the CPU
# backend's optimisation off compiles take about half as long (measured on test_conv_bias +
# test_bias: 150 s -> 95 s). Set before jax starts (subprocesses inherit it);
# LTH_TEST_XLA_OPT=1 keeps XLA's default.
if (os.environ.get("LTH_TEST_XLA_OPT") != "1"
    and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import pytest  # noqa: E402  (after XLA_FLAGS)
from hypothesis import HealthCheck, settings  # noqa: E402

from lth_jax import data  # noqa: E402

settings.register_profile(
    "lth",
    deadline=None,  # first calls compile XLA programs
    # Fixed example sequence so CI is reproducible; LTH_HYPOTHESIS_RANDOM=1 explores anew.
    derandomize=os.environ.get("LTH_HYPOTHESIS_RANDOM", "0") != "1",
    max_examples=int(os.environ.get("LTH_HYPOTHESIS_EXAMPLES", "25")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("lth")


@pytest.fixture(scope="module")
def synthetic():
  """A small synthetic classification split: (train images, labels, test images, labels)."""
  tr = data.load_dataset("synthetic", "train", normalize=True, limit=256)
  te = data.load_dataset("synthetic", "test", normalize=True, limit=128)
  return tr.images, tr.labels, te.images, te.labels
