"""The agent process's CPU and memory, per telemetry window, from os.times, /proc and getrusage."""

from __future__ import annotations

import itertools
import os
import random
import sys

import pytest

from edge_agent.telemetry import TelemetryRecorder
from edge_agent.usage import UsageMeter, peak_rss_bytes, process_cpu_seconds, rss_bytes
from tests.unit.agent.fakes import FakeClock

GiB = 1 << 30


class FakeSources:
    """CPU seconds, wall seconds and memory figures that a test moves by hand."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 7.0
        self.rss = 50 << 20
        self.peak = 60 << 20

    def meter(self) -> UsageMeter:
        return UsageMeter(
            monotonic=lambda: self.wall,
            cpu_seconds=lambda: self.cpu,
            rss=lambda: self.rss,
            peak_rss=lambda: self.peak,
        )


def test_cpu_is_the_share_of_one_core_over_the_window() -> None:
    src = FakeSources()
    meter = src.meter()
    src.wall += 10.0
    src.cpu += 2.5
    first = meter.sample()
    assert first.cpu_percent == pytest.approx(25.0)
    assert (first.rss_bytes, first.peak_rss_bytes) == (50 << 20, 60 << 20)
    src.wall += 4.0
    src.cpu += 6.0  # two threads busy: more than one core
    assert meter.sample().cpu_percent == pytest.approx(150.0)
    src.rss = 70 << 20  # the peak lags behind what is resident now: never report it lower
    assert meter.sample().peak_rss_bytes == 70 << 20


def test_reset_starts_the_cpu_window_again_and_no_time_means_no_share() -> None:
    src = FakeSources()
    meter = src.meter()
    src.wall += 10.0
    src.cpu += 5.0
    meter.reset()
    src.wall += 10.0
    src.cpu += 1.0
    assert meter.sample().cpu_percent == pytest.approx(10.0)
    assert meter.sample().cpu_percent == 0.0  # no wall time passed


def test_each_telemetry_window_carries_the_usage_over_it() -> None:
    src = FakeSources()
    counter = itertools.count(1)
    rec = TelemetryRecorder(
        clock=FakeClock(), next_seq=lambda: next(counter), rng=random.Random(0), usage=src.meter()
    )
    src.wall += 10.0
    src.cpu += 1.0
    window = rec.close_window()
    assert window.resources.cpu_percent == pytest.approx(10.0)
    assert window.resources.rss_bytes == 50 << 20
    src.wall += 5.0
    src.cpu += 5.0
    rec.restart()  # a dropped window drops its CPU too
    src.wall += 10.0
    src.cpu += 2.0
    assert rec.close_window().resources.cpu_percent == pytest.approx(20.0)


def test_the_real_figures_are_sane() -> None:
    meter = UsageMeter()
    start = process_cpu_seconds()
    spins = 0
    while process_cpu_seconds() - start < 0.05:  # some CPU work to measure
        spins += sum(range(1000))
    usage = meter.sample()
    assert 0 < usage.cpu_percent <= 100.0 * (os.cpu_count() or 1) + 5
    assert 1 << 20 < usage.rss_bytes < 64 * GiB
    assert usage.rss_bytes <= usage.peak_rss_bytes < 64 * GiB
    if sys.platform == "linux":
        assert rss_bytes() > 1 << 20 and peak_rss_bytes() > 1 << 20
