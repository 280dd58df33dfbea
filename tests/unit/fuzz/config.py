"""Hypothesis settings of the fuzz tests: derandomized and small in the suite; ``bench/fuzz.py`` sets
``PARKRELAY_FUZZ_EXAMPLES=N`` (more examples) and ``PARKRELAY_FUZZ_RANDOM=1`` (fresh randomness each run)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def fuzz_settings(default_examples: int) -> settings:
    return settings(max_examples=int(os.environ.get("PARKRELAY_FUZZ_EXAMPLES", str(default_examples))),
                    derandomize=os.environ.get("PARKRELAY_FUZZ_RANDOM") != "1", deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])
