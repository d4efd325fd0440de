"""Stage figures that one device cannot sway: per-device figures, then a trimmed, capped mean.

Gates read what devices report, and a device (compromised, or simply broken) can report
anything: a million requests without an error, a latency a thousand times the others'. Pooling
every window (sum of errors over sum of requests) would let that one report outvote the cohort.
So each figure is computed per device first, and the devices' figures are then combined by
:func:`robust_mean`:

1. with three or more devices, the ``TRIM`` share of devices with the highest figures and the
   same share with the lowest ones are dropped (at least one device at each end);
2. the rest are averaged, each weighted by its requests but never more than the median device's
   (a busy device counts more than an idle one, up to the typical device, no further).

The result always lies between the lowest and the highest figure of the other devices: one
device can neither pass a stage that the rest of the cohort fails nor fail one that it passes.
A regression across the cohort moves every device's figure, and the combined figure with them.
With one or two devices no statistic can tell a liar from the truth: each device counts equally.

Counts of devices (updated, failed, rolled back, offline) need none of this: each device counts
once, however many events it sends. Pure: the per-device figures are read in ``figures.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["TRIM", "DeviceFigures", "robust_error_rate", "robust_mean", "robust_p95"]

# Share of devices dropped at each end before averaging (at least one each with three devices or more).
TRIM: Final = 0.1


@dataclass(frozen=True, slots=True)
class DeviceFigures:
    """What one device's telemetry windows add up to."""

    device_id: str
    requests: int
    errors: int
    p95_ms: float | None  # request-weighted over the device's windows; None without requests

    @property
    def error_rate(self) -> float | None:
        if self.requests <= 0:
            return None
        # More errors than requests is no figure a device can honestly send: count it as all failed.
        return min(max(self.errors, 0) / self.requests, 1.0)


def _lower_median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def robust_mean(samples: Sequence[tuple[float, float]]) -> float | None:
    """The trimmed, capped-weight mean of ``(value, weight)`` pairs (one per device); None when empty.

    Weights are capped at the lower median weight, so with two devices both count equally.
    """
    usable = [(v, w) for v, w in samples if math.isfinite(v) and math.isfinite(w) and w > 0]
    if not usable:
        return None
    cap = _lower_median([w for _, w in usable])
    ordered = sorted(usable, key=lambda s: s[0])
    n = len(ordered)
    trim = max(1, math.floor(n * TRIM)) if n >= 3 else 0
    kept = ordered[trim : n - trim]
    total = sum(min(w, cap) for _, w in kept)
    return sum(v * min(w, cap) for v, w in kept) / total


def robust_error_rate(devices: Sequence[DeviceFigures]) -> float | None:
    """Errors per request across devices (see the module doc); None when no device served a request."""
    return robust_mean([(rate, float(d.requests)) for d in devices if (rate := d.error_rate) is not None])


def robust_p95(devices: Sequence[DeviceFigures]) -> float | None:
    """The p95 latency across devices (see the module doc); None when no device reported one."""
    return robust_mean(
        [(d.p95_ms, float(d.requests)) for d in devices if d.p95_ms is not None and d.requests > 0]
    )
