"""Reading scores back: the latest value of every metric, and one metric's series over time.

What the API and the CLI show of ``CohortMetric`` rows. Read-only; each function takes a session
and returns frozen dataclasses, so callers never hold a database row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from cloud.drift.tables import CohortMetric

__all__ = ["MetricPoint", "Point", "Series", "latest", "series"]


@dataclass(frozen=True)
class MetricPoint:
    """One value of one metric for one cohort, model version and time bucket."""

    cohort_id: int
    model_name: str
    model_version: str
    bucket_start: datetime
    bucket_s: int
    metric: str
    feature: str
    reference: str
    value: float
    threshold: float | None
    drifted: bool
    n: int
    computed_at: datetime

    @classmethod
    def from_row(cls, row: CohortMetric) -> MetricPoint:
        return cls(
            cohort_id=row.cohort_id,
            model_name=row.model_name,
            model_version=row.model_version,
            bucket_start=row.bucket_start,
            bucket_s=row.bucket_s,
            metric=row.metric,
            feature=row.feature,
            reference=row.reference,
            value=row.value,
            threshold=row.threshold,
            drifted=row.drifted,
            n=row.n,
            computed_at=row.computed_at,
        )


@dataclass(frozen=True)
class Point:
    bucket_start: datetime
    value: float
    threshold: float | None
    drifted: bool
    n: int


@dataclass(frozen=True)
class Series:
    """One line of a chart: a metric of one version, feature and reference, bucket after bucket."""

    cohort_id: int
    model_name: str
    model_version: str
    metric: str
    feature: str
    reference: str
    points: tuple[Point, ...]


# What makes one series: every column of the unique key except the fleet and the bucket.
_SERIES = ("cohort_id", "model_name", "model_version", "metric", "feature", "reference")
_TABLE = CohortMetric.__table__  # type: ignore[attr-defined]


def latest(
    session: Session, *, fleet: str, model_name: str | None = None, cohort_id: int | None = None
) -> list[MetricPoint]:
    """The newest bucket's value of every series (a metric that skipped the last bucket keeps its last).

    Sorted by cohort, model, version, metric, feature and reference.
    """
    where: list[ColumnElement[bool]] = [_TABLE.c.fleet == fleet]
    if model_name is not None:
        where.append(_TABLE.c.model_name == model_name)
    if cohort_id is not None:
        where.append(_TABLE.c.cohort_id == cohort_id)
    series_columns = [_TABLE.c[name] for name in _SERIES]
    newest = (
        sa_select(*series_columns, func.max(_TABLE.c.bucket_start).label("newest"))
        .where(*where)
        .group_by(*series_columns)
        .subquery("newest")
    )
    match = and_(
        *(_TABLE.c[name] == newest.c[name] for name in _SERIES),
        _TABLE.c.bucket_start == newest.c.newest,
    )
    rows = session.exec(
        select(CohortMetric).join(newest, match).where(*where).order_by(*series_columns)
    ).all()
    return [MetricPoint.from_row(row) for row in rows]


def series(
    session: Session,
    *,
    fleet: str,
    metric: str,
    cohort_id: int,
    model_name: str,
    since: datetime,
    until: datetime | None = None,
    model_version: str | None = None,
    feature: str | None = None,
    reference: str | None = None,
) -> list[Series]:
    """``metric``'s values from ``since`` (inclusive) to ``until`` (exclusive), one series per
    version, feature and reference, each in time order."""
    query = select(CohortMetric).where(
        CohortMetric.fleet == fleet,
        CohortMetric.metric == metric,
        CohortMetric.cohort_id == cohort_id,
        CohortMetric.model_name == model_name,
        col(CohortMetric.bucket_start) >= since,
    )
    if until is not None:
        query = query.where(col(CohortMetric.bucket_start) < until)
    for column, wanted in (
        (CohortMetric.model_version, model_version),
        (CohortMetric.feature, feature),
        (CohortMetric.reference, reference),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    rows = session.exec(query.order_by(*(_TABLE.c[name] for name in _SERIES), _TABLE.c.bucket_start)).all()
    grouped: dict[tuple[str, str, str], list[CohortMetric]] = {}
    for row in rows:
        grouped.setdefault((row.model_version, row.feature, row.reference), []).append(row)
    return [
        Series(
            cohort_id=cohort_id,
            model_name=model_name,
            model_version=version,
            metric=metric,
            feature=name,
            reference=ref,
            points=_points(found),
        )
        for (version, name, ref), found in grouped.items()
    ]


def _points(rows: Sequence[CohortMetric]) -> tuple[Point, ...]:
    return tuple(Point(r.bucket_start, r.value, r.threshold, r.drifted, r.n) for r in rows)
