"""Shared test settings: hypothesis profile tuned for jit-heavy tests on a small CPU."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "lth",
    deadline=None,  # first calls compile XLA programs
    # Fixed example sequence so CI is reproducible; LTH_HYPOTHESIS_RANDOM=1 explores anew.
    derandomize=os.environ.get("LTH_HYPOTHESIS_RANDOM", "0") != "1",
    max_examples=int(os.environ.get("LTH_HYPOTHESIS_EXAMPLES", "25")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("lth")
