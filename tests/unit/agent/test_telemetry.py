"""Telemetry windows: exact counts, nearest-rank percentiles, a bounded reservoir, numbered windows."""

from __future__ import annotations

import itertools
import random

import pytest

from edge_agent.telemetry import TelemetryRecorder, percentile
from tests.unit.agent.fakes import FakeClock, ref_for


def recorder(clock: FakeClock, max_samples: int = 1024) -> TelemetryRecorder:
    counter = itertools.count(10)
    return TelemetryRecorder(
        clock=clock, next_seq=lambda: next(counter), max_samples=max_samples, rng=random.Random(0)
    )


def test_a_window_counts_requests_errors_and_latency() -> None:
    clock = FakeClock(wall_ms=1000)
    rec = recorder(clock)
    for ms in range(1, 101):
        rec.record(float(ms))
    rec.record(0.0, error=True)
    clock.advance(10)
    model = ref_for(b"m", version="3")
    window = rec.close_window(model=model)
    assert (window.seq, window.window_start_ms, window.window_end_ms) == (10, 1000, 11000)
    assert (window.requests, window.errors) == (101, 1)
    assert (window.model_name, window.model_version) == ("linear", "3")
    lat = window.latency
    assert (lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.max_ms) == (50.0, 95.0, 99.0, 100.0)
    assert lat.mean_ms == pytest.approx(50.5)


def test_the_next_window_starts_where_the_last_ended_and_is_numbered_next() -> None:
    clock = FakeClock(wall_ms=0)
    rec = recorder(clock)
    rec.record(1.0)
    clock.advance(5)
    first = rec.close_window()
    clock.advance(5)
    second = rec.close_window()
    assert second.seq == first.seq + 1
    assert second.window_start_ms == first.window_end_ms == 5000
    assert (second.requests, second.latency.max_ms) == (0, 0.0)


def test_the_reservoir_stays_bounded_while_count_mean_and_max_stay_exact() -> None:
    clock = FakeClock()
    rec = recorder(clock, max_samples=16)
    for ms in range(10_000):
        rec.record(float(ms))
    assert rec.samples_held == 16
    window = rec.close_window()
    assert window.requests == 10_000
    assert window.latency.max_ms == 9999.0
    assert window.latency.mean_ms == pytest.approx(4999.5)
    # A uniform sample of 0..9999: the median lands far from either end.
    assert 1000 < window.latency.p50_ms < 9000


def test_restart_drops_the_window_without_using_a_number() -> None:
    clock = FakeClock(wall_ms=0)
    rec = recorder(clock)
    rec.record(1.0)
    clock.advance(3)
    rec.restart()
    assert rec.requests == 0
    window = rec.close_window()
    assert window.seq == 10 and window.window_start_ms == 3000


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [([], 50, 0.0), ([7.0], 99, 7.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0), ([1.0, 2.0, 3.0, 4.0], 100, 4.0)],
)
def test_percentile_is_nearest_rank(samples: list[float], q: float, expected: float) -> None:
    assert percentile(samples, q) == expected
