"""txgeerpc's tests.

Hypothesis profiles, chosen with ``HYPOTHESIS_PROFILE``: ``quick`` (the
default, for a developer's run) and ``thorough`` (what ``scripts/test``
selects for the pytest run in CI).  Property tests take their number of
examples from the profile (``examples(n)`` scales a test's own share).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("quick", max_examples=40, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("thorough", max_examples=300, **_COMMON)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


def examples(fraction: float = 1.0) -> settings:
    """Settings for a property test: ``fraction`` of the profile's examples."""
    return settings(max_examples=max(10, int(settings.default.max_examples * fraction)))
