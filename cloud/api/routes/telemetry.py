"""Telemetry series: a cohort's (or the whole fleet's) requests, errors and latency, bucket after bucket."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import ContextDep, SessionDep, ViewerDep
from cloud.api.schemas.base import IsoDateTime
from cloud.api.schemas.telemetry import BucketPublic, TelemetrySeriesListPublic, TelemetrySeriesPublic
from cloud.drift import view
from cloud.services import telemetry_series

router = APIRouter(prefix="/telemetry", tags=["telemetry"])


@router.get(
    "/series",
    responses={
        404: {"description": "no such cohort"},
        422: {"description": "a bad time range, or one that holds too many buckets"},
    },
)
def telemetry_series_route(
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    *,
    cohort: Annotated[str, Query(description="a cohort's name, or '@fleet' for the whole fleet")] = (
        view.FLEET_KEYWORD
    ),
    model: Annotated[str | None, Query(description="only this model")] = None,
    version: Annotated[str | None, Query(description="only this version")] = None,
    since: Annotated[
        IsoDateTime | None,
        Query(description="buckets from this instant (ISO 8601 with offset); default: `hours` ago"),
    ] = None,
    until: Annotated[
        IsoDateTime | None, Query(description="buckets before this instant; default: now")
    ] = None,
    hours: Annotated[
        float, Query(gt=0, le=24 * 400, description="how far back, when `since` is not given")
    ] = 24.0,
) -> TelemetrySeriesListPublic:
    """A series per model version of the cohort's rolled-up telemetry, oldest bucket first."""
    fleet = ctx.settings.fleet
    scope = view.resolve_scope(session, fleet, cohort)
    assert scope is not None  # a name or '@fleet' always names a scope
    start = since if since is not None else ctx.clock() - timedelta(hours=hours)
    found = telemetry_series.cohort_series(
        session, fleet=fleet, cohort_id=scope, since=start, until=until, model=model, version=version
    )
    name = None if cohort == view.FLEET_KEYWORD else cohort
    data = [
        TelemetrySeriesPublic(
            cohort=name,
            model=s.model,
            version=s.version,
            buckets=[BucketPublic.model_validate(b) for b in s.buckets],
        )
        for s in found
    ]
    return TelemetrySeriesListPublic(data=data, count=len(data))
