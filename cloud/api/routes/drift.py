"""Drift and labelled accuracy per cohort and model version: the newest scores, and series over time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import ContextDep, SessionDep, ViewerDep
from cloud.api.schemas.drift import DriftReportPublic, SeriesListPublic
from cloud.drift import view

router = APIRouter(prefix="/drift", tags=["drift"])

CohortQuery = Annotated[
    str | None, Query(description="a cohort's name, or '@fleet' for the whole fleet; omitted: every scope")
]


@router.get("", responses={404: {"description": "no such cohort"}})
def drift_report(
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    cohort: CohortQuery = None,
    model: Annotated[str | None, Query(description="only this model")] = None,
) -> DriftReportPublic:
    """The newest bucket's scores of every cohort and model version: data drift against the bundle's
    baseline and the previous bucket, prediction drift, and accuracy on labels that apps posted."""
    fleet = ctx.settings.fleet
    scope = view.resolve_scope(session, fleet, cohort)
    rows = view.drift_report(session, fleet=fleet, model=model, cohort_id=scope)
    return DriftReportPublic(data=rows, count=len(rows))


@router.get("/series", responses={404: {"description": "no such cohort"}})
def drift_series(
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    *,
    metric: Annotated[str, Query(description="a metric name, e.g. drift_score, drift_ks, accuracy")],
    model: Annotated[str, Query(description="the model")],
    cohort: Annotated[str, Query(description="a cohort's name, or '@fleet'")] = view.FLEET_KEYWORD,
    version: Annotated[str | None, Query(description="only this version")] = None,
    feature: Annotated[str | None, Query(description="only this feature (or class, for recall)")] = None,
    reference: Annotated[str | None, Query(description="'baseline' or 'previous'")] = None,
    hours: Annotated[float, Query(gt=0, le=24 * 400, description="how far back")] = 24.0,
) -> SeriesListPublic:
    """One metric bucket after bucket, a series per version, feature and reference."""
    fleet = ctx.settings.fleet
    scope = view.resolve_scope(session, fleet, cohort)
    assert scope is not None
    since: datetime = ctx.clock() - timedelta(hours=hours)
    found = view.series(
        session,
        fleet=fleet,
        metric=metric,
        cohort_id=scope,
        model=model,
        since=since,
        version=version,
        feature=feature,
        reference=reference,
    )
    return SeriesListPublic(data=found, count=len(found))
