"""Shared test settings: hypothesis profile tuned for jit-heavy tests on a small CPU."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "lth",
    deadline=None,  # first calls compile XLA programs
    max_examples=int(os.environ.get("LTH_HYPOTHESIS_EXAMPLES", "25")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("lth")
