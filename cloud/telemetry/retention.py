"""Retention: raw telemetry and sketch rows expire after ``raw_retention_s``, rollups and cohort
metrics after ``rollup_retention_days``.

Rows go in chunks of ``CHUNK`` rows, a transaction each, so that a first run over months of rows
never holds SQLite's write lock (and with it the ingest) for long, nor builds one huge
transaction on PostgreSQL. Deleting is idempotent: two replicas expiring at once delete each row
once between them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select

from cloud.db import SessionFactory, transaction
from cloud.drift.tables import CohortMetric
from cloud.models import TelemetryWindow
from cloud.telemetry.tables import CohortRollup, SketchRecord

__all__ = ["CHUNK", "expire"]

log = logging.getLogger(__name__)

CHUNK = 5_000


def expire(
    sessions: SessionFactory,
    *,
    now: datetime,
    raw_retention_s: int,
    rollup_retention_days: int,
    chunk: int = CHUNK,
) -> dict[str, int]:
    """Delete what is past its retention; returns rows deleted per table."""
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now.isoformat()}")
    if raw_retention_s <= 0 or rollup_retention_days <= 0 or chunk <= 0:
        raise ValueError(
            "expected positive retentions and chunk size, got "
            f"raw_retention_s={raw_retention_s}, rollup_retention_days={rollup_retention_days}, chunk={chunk}"
        )
    raw_cutoff = now - timedelta(seconds=raw_retention_s)
    rollup_cutoff = now - timedelta(days=rollup_retention_days)
    plan: list[tuple[Any, str, datetime]] = [
        (TelemetryWindow.__table__, "window_end", raw_cutoff),  # type: ignore[attr-defined]
        (SketchRecord.__table__, "window_end", raw_cutoff),  # type: ignore[attr-defined]
        (CohortRollup.__table__, "bucket_start", rollup_cutoff),  # type: ignore[attr-defined]
        (CohortMetric.__table__, "bucket_start", rollup_cutoff),  # type: ignore[attr-defined]
    ]
    deleted: dict[str, int] = {}
    for table, column, cutoff in plan:
        deleted[table.name] = _delete_before(sessions, table, column, cutoff, chunk)
    if any(deleted.values()):
        log.info("expired %s", ", ".join(f"{n} {name} rows" for name, n in deleted.items() if n))
    return deleted


def _delete_before(sessions: SessionFactory, table: Any, column: str, cutoff: datetime, chunk: int) -> int:
    """DELETE ... WHERE id IN (the first ``chunk`` ids past the cutoff), until none are left."""
    total = 0
    while True:
        ids = select(table.c.id).where(table.c[column] < cutoff).limit(chunk).scalar_subquery()
        with transaction(sessions) as session:
            result = cast(CursorResult[Any], session.execute(delete(table).where(table.c.id.in_(ids))))
            count = int(result.rowcount)
        total += count
        if count < chunk:
            return total
