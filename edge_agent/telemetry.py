"""Serving statistics per window: requests, errors, latency percentiles and the process's usage.

Latency samples go into a bounded reservoir, so a busy window costs the same
memory as a quiet one while every request still has the same chance to be in
the sample; count, mean and max are exact. Once the reservoir is full, Li's
algorithm L draws how many requests to skip before the next replacement, so a
request costs a comparison rather than a random draw (this runs on every
prediction). Each closed window also carries the CPU and memory the agent
process used over it (:mod:`edge_agent.usage`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from edge_agent.clock import Clock
from edge_agent.usage import UsageMeter
from edgefleet_proto.v1 import common_pb2, telemetry_pb2

__all__ = ["TelemetryRecorder", "percentile"]


def percentile(sorted_samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending list; 0.0 when empty."""
    if not sorted_samples:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


class TelemetryRecorder:
    """Counts one window at a time; :meth:`close_window` hands it over and starts the next."""

    def __init__(
        self,
        *,
        clock: Clock,
        next_seq: Callable[[], int],
        max_samples: int = 1024,
        rng: random.Random | None = None,
        usage: UsageMeter | None = None,
    ) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self._clock = clock
        self._next_seq = next_seq
        self._max_samples = max_samples
        self._rng = rng if rng is not None else random.Random()
        self._usage = usage if usage is not None else UsageMeter()
        # Since the agent started, across windows (the metrics endpoint's counters).
        self.total_requests = 0
        self.total_errors = 0
        self._reset(clock.wall_ms())

    def _reset(self, start_ms: int) -> None:
        self._start_ms = start_ms
        self._requests = 0
        self._errors = 0
        self._latency_sum = 0.0
        self._latency_max = 0.0
        self._samples: list[float] = []
        # Algorithm L: the served-request number of the next reservoir replacement, and its weight.
        self._next_replace = 0
        self._weight = 1.0

    @property
    def requests(self) -> int:
        """Requests recorded in the open window."""
        return self._requests

    @property
    def errors(self) -> int:
        return self._errors

    @property
    def samples_held(self) -> int:
        """Latency samples kept for the open window (at most ``max_samples``)."""
        return len(self._samples)

    def record(self, latency_ms: float, *, error: bool = False) -> None:
        """Count one request. Failed requests count as errors and add no latency sample."""
        self._requests += 1
        self.total_requests += 1
        if error:
            self._errors += 1
            self.total_errors += 1
            return
        self._latency_sum += latency_ms
        self._latency_max = max(self._latency_max, latency_ms)
        served = self._requests - self._errors
        if served == self._next_replace:
            self._samples[self._rng.randrange(self._max_samples)] = latency_ms
            self._draw_next(served, self._weight * self._uniform_root())
        elif served <= self._max_samples:
            self._samples.append(latency_ms)
            if served == self._max_samples:
                self._draw_next(served, self._uniform_root())

    def _uniform_root(self) -> float:
        # u ** (1/k) for u uniform in (0, 1].
        return math.exp(math.log(1.0 - self._rng.random()) / self._max_samples)

    def _draw_next(self, served: int, weight: float) -> None:
        # Skips are geometric with success probability `weight`; see Li (1994), algorithm L.
        self._weight = weight
        skip = math.floor(math.log(1.0 - self._rng.random()) / math.log1p(-weight)) if weight < 1 else 0
        self._next_replace = served + skip + 1

    def restart(self, now_ms: int | None = None) -> None:
        """Drop the open window without numbering it; counting starts again now."""
        self._reset(self._clock.wall_ms() if now_ms is None else now_ms)
        self._usage.reset()

    def close_window(
        self, now_ms: int | None = None, model: common_pb2.ModelRef | None = None
    ) -> telemetry_pb2.TelemetryWindow:
        """The window from the last close to now, numbered; the next window starts now.

        ``model`` is the model that served the window (the agent closes a window
        whenever it swaps models, so that one window never mixes two).
        """
        if now_ms is None:
            now_ms = self._clock.wall_ms()
        ordered = sorted(self._samples)
        served = self._requests - self._errors
        window = telemetry_pb2.TelemetryWindow(
            seq=self._next_seq(),
            window_start_ms=self._start_ms,
            window_end_ms=now_ms,
            model_name=model.name if model is not None else "",
            model_version=model.version if model is not None else "",
            requests=self._requests,
            errors=self._errors,
            latency=telemetry_pb2.LatencySummary(
                p50_ms=percentile(ordered, 50),
                p95_ms=percentile(ordered, 95),
                p99_ms=percentile(ordered, 99),
                mean_ms=self._latency_sum / served if served else 0.0,
                max_ms=self._latency_max,
            ),
            resources=self._usage.sample(),
        )
        self._reset(now_ms)
        return window
