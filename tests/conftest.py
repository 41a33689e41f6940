"""Shared test settings (a hypothesis profile tuned for jit-heavy tests on a small CPU) and
fixtures."""

import os

import pytest
from hypothesis import HealthCheck, settings

from lth_jax import data

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
