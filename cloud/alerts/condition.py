"""Judging one alert series: which event its latest buckets post to the alert's state machine.

A series is one rule's metric on one cohort and model version, one value per time bucket (the
worst over the features or references the rule takes). Pure: no I/O and no clock of its own, so
the rules of judgement are tested bucket by bucket:

- the latest bucket that started by ``now`` is judged; none, or one that ended more than
  ``stale_after_s`` before ``now`` (two buckets by default), is NO_DATA;
- it does not breach: CLEAR;
- it breaches: walk back over the buckets that touch it end to start and breach too (a gap in the
  data ends the run: nothing is known to have held there). The run has held from the start of its
  first bucket until ``now`` (or the end of the latest bucket, if that came first): HELD once that
  reaches the rule's duration, BREACH until then.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cloud.alerts.machine import AlertEvent
from cloud.alerts.spec import Comparison

__all__ = ["STALE_BUCKETS", "Bucket", "Judgement", "judge", "worst"]

# A series whose latest bucket ended more than this many bucket lengths ago has no data.
STALE_BUCKETS = 2


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket's value; ``feature`` and ``reference`` say which row it came from."""

    start: datetime
    span_s: int
    value: float
    feature: str = ""
    reference: str = ""

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.span_s)


@dataclass(frozen=True, slots=True)
class Judgement:
    event: AlertEvent
    latest: Bucket | None = None  # the bucket judged (None: no data at all)
    since: datetime | None = None  # start of the run of breaching buckets
    held_s: float = 0.0  # how long the run has held, as far as the data says

    @property
    def value(self) -> float | None:
        return None if self.latest is None else self.latest.value


def worst(rows: Iterable[Bucket], comparison: Comparison) -> list[Bucket]:
    """One bucket per start time: the value that breaches most (the highest for '>', lowest for '<').

    Non-finite values are dropped first: they breach nothing and must not hide one that does.
    """
    chosen: dict[datetime, Bucket] = {}
    for row in rows:
        if not math.isfinite(row.value):
            continue
        held = chosen.get(row.start)
        if held is None or comparison.breached(row.value, held.value):
            chosen[row.start] = row
    return [chosen[start] for start in sorted(chosen)]


def judge(
    buckets: Sequence[Bucket],
    *,
    comparison: Comparison,
    threshold: float,
    for_s: int,
    now: datetime,
    stale_after_s: float | None = None,
) -> Judgement:
    """The event the series posts at ``now``; ``buckets`` hold one value per start time, any order."""
    series = sorted((b for b in buckets if b.start <= now), key=lambda b: b.start)
    if not series:
        return Judgement(AlertEvent.NO_DATA)
    latest = series[-1]
    stale = stale_after_s if stale_after_s is not None else STALE_BUCKETS * latest.span_s
    if latest.end < now - timedelta(seconds=stale):
        return Judgement(AlertEvent.NO_DATA, latest)
    if not comparison.breached(latest.value, threshold):
        return Judgement(AlertEvent.CLEAR, latest)
    first = latest
    for bucket in reversed(series[:-1]):
        if bucket.end != first.start or not comparison.breached(bucket.value, threshold):
            break
        first = bucket
    held_s = (min(now, latest.end) - first.start).total_seconds()
    event = AlertEvent.HELD if held_s >= for_s else AlertEvent.BREACH
    return Judgement(event, latest, since=first.start, held_s=held_s)
