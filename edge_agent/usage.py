"""What the agent process uses: CPU over a window and resident memory, from the OS, without psutil.

CPU is the process's user + system time (``os.times``) over the wall time between two
samples, in percent of one core (a process busy on two cores reads 200). Resident memory
is read from ``/proc/self/statm`` (Linux; 0 where it does not exist), the peak from
``getrusage``'s ``ru_maxrss``. A simulator runs many agents in one process: each then
reports the whole process.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgefleet_proto.v1 import telemetry_pb2

__all__ = ["UsageMeter", "peak_rss_bytes", "process_cpu_seconds", "rss_bytes"]

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# ru_maxrss is in KiB on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def process_cpu_seconds() -> float:
    """User plus system CPU seconds this process has used so far (all threads)."""
    t = os.times()
    return t.user + t.system


def rss_bytes() -> int:
    """Resident set size now, from ``/proc/self/statm``; 0 where the file does not exist."""
    try:
        fields = _STATM.read_bytes().split()
    except OSError:
        return 0
    return int(fields[1]) * _PAGE if len(fields) > 1 else 0


def peak_rss_bytes() -> int:
    """The largest resident set size this process has had."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_UNIT


class UsageMeter:
    """CPU since the last sample (or reset), and memory now; the sources are parameters for tests."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        cpu_seconds: Callable[[], float] = process_cpu_seconds,
        rss: Callable[[], int] = rss_bytes,
        peak_rss: Callable[[], int] = peak_rss_bytes,
    ) -> None:
        self._monotonic = monotonic
        self._cpu_seconds = cpu_seconds
        self._rss = rss
        self._peak_rss = peak_rss
        self.reset()

    def reset(self) -> None:
        """Measure CPU from now on."""
        self._since = self._monotonic()
        self._cpu_since = self._cpu_seconds()

    def sample(self) -> telemetry_pb2.ResourceUsage:
        """Usage since the last sample; the next one measures from here."""
        now, cpu = self._monotonic(), self._cpu_seconds()
        wall = now - self._since
        used = max(cpu - self._cpu_since, 0.0)
        self._since, self._cpu_since = now, cpu
        rss = self._rss()
        # The peak is never below what is resident now (ru_maxrss lags on some kernels).
        peak = max(self._peak_rss(), rss)
        return telemetry_pb2.ResourceUsage(
            cpu_percent=100.0 * used / wall if wall > 0 else 0.0, rss_bytes=rss, peak_rss_bytes=peak
        )
