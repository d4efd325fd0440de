"""Back-off: grows by the multiplier, stops at the cap, jitters within [d/2, d], resets on success."""

from __future__ import annotations

import random
from typing import Any

import pytest

from edge_agent.backoff import Backoff
from edge_agent.errors import ConfigError


def test_delays_grow_then_cap_and_stay_within_the_jitter_band() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, multiplier=2.0, rng=random.Random(7))
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for ceiling in ceilings:
        assert backoff.ceiling() == ceiling
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(initial_s=0.5, max_s=10.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    assert backoff.attempt == 5
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() <= 0.5


def test_a_long_outage_does_not_overflow() -> None:
    backoff = Backoff(initial_s=1.0, max_s=60.0, multiplier=10.0, rng=random.Random(3))
    for _ in range(5000):
        delay = backoff.next_delay()
    assert 30.0 <= delay <= 60.0


def test_jitter_spreads_a_fleet() -> None:
    delays = {Backoff(initial_s=4.0, rng=random.Random(seed)).next_delay() for seed in range(50)}
    assert len(delays) == 50
    assert min(delays) >= 2.0 and max(delays) <= 4.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_s": 0}, "initial_s must be > 0"),
        ({"initial_s": 2, "max_s": 1}, "max_s must be >= initial_s"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Backoff(**kwargs)
