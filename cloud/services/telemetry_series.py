"""Telemetry over time: a cohort's (or the fleet's) buckets from the rollups, a device's own windows.

The cohort series reads ``CohortRollup``, which the rollup job keeps per cohort, model version and
time bucket, so a chart over a day of a large fleet reads a few hundred rows, not every window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from cloud.errors import InvalidInputError
from cloud.models import TelemetryWindow
from cloud.services.devices import check_instant
from cloud.telemetry.tables import CohortRollup

__all__ = ["Bucket", "Series", "cohort_series", "device_windows"]

# A day of 5-minute buckets for a few versions; a caller wanting more narrows the time range.
MAX_BUCKETS = 5000


@dataclass(frozen=True, slots=True)
class Bucket:
    bucket_start: datetime
    bucket_s: int
    devices: int
    windows: int
    requests: int
    errors: int
    p95_ms: float | None
    cpu_percent: float | None
    rss_bytes: int | None


@dataclass(slots=True)
class Series:
    model: str
    version: str
    buckets: list[Bucket] = field(default_factory=list)


def _check_range(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            check_instant(name, value)
    if since is not None and until is not None and since >= until:
        raise InvalidInputError(
            f"since {since.isoformat()} is not before until {until.isoformat()}: expected a time range"
        )


def cohort_series(
    session: Session,
    *,
    fleet: str,
    cohort_id: int,
    since: datetime,
    until: datetime | None = None,
    model: str | None = None,
    version: str | None = None,
) -> list[Series]:
    """A series per model version, oldest bucket first, of buckets starting in [since, until)."""
    _check_range(since, until)
    query = select(CohortRollup).where(
        CohortRollup.fleet == fleet,
        CohortRollup.cohort_id == cohort_id,
        col(CohortRollup.bucket_start) >= since,
    )
    if until is not None:
        query = query.where(col(CohortRollup.bucket_start) < until)
    if model is not None:
        query = query.where(CohortRollup.model_name == model)
    if version is not None:
        query = query.where(CohortRollup.model_version == version)
    query = query.order_by(
        col(CohortRollup.model_name), col(CohortRollup.model_version), col(CohortRollup.bucket_start)
    )
    rows = session.exec(query.limit(MAX_BUCKETS + 1)).all()
    if len(rows) > MAX_BUCKETS:
        raise InvalidInputError(
            f"the time range holds more than {MAX_BUCKETS} buckets: expected a shorter range, or one model"
        )
    found: dict[tuple[str, str], Series] = {}
    for r in rows:
        series = found.setdefault((r.model_name, r.model_version), Series(r.model_name, r.model_version))
        series.buckets.append(
            Bucket(
                bucket_start=r.bucket_start,
                bucket_s=r.bucket_s,
                devices=r.devices,
                windows=r.windows,
                requests=r.requests,
                errors=r.errors,
                p95_ms=r.p95_ms,
                cpu_percent=r.cpu_percent,
                rss_bytes=r.rss_bytes,
            )
        )
    return list(found.values())


def device_windows(
    session: Session,
    device_id: str,
    *,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[TelemetryWindow]:
    """A device's windows ending in [since, until), newest first, at most ``limit``."""
    _check_range(since, until)
    query = select(TelemetryWindow).where(TelemetryWindow.device_id == device_id)
    if since is not None:
        query = query.where(col(TelemetryWindow.window_end) >= since)
    if until is not None:
        query = query.where(col(TelemetryWindow.window_end) < until)
    return list(session.exec(query.order_by(col(TelemetryWindow.seq).desc()).limit(limit)).all())
