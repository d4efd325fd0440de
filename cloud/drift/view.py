"""What the API and the CLI show of the scores: one summary per cohort and model version.

``cloud.drift.report`` reads rows; this module names cohorts and picks the headline figures
(the drift score, the drifted features, prediction PSI, labelled accuracy and recall).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlmodel import Session, select

from cloud.api.schemas.drift import CohortDriftPublic, MetricPublic, PointPublic, SeriesPublic
from cloud.drift import report
from cloud.models import Cohort
from cloud.services import cohorts
from cloud.telemetry.tables import FLEET_SCOPE

__all__ = ["cohort_names", "drift_report", "resolve_scope", "series"]

# What `?cohort=` takes for the rollup over every device of the fleet.
FLEET_KEYWORD = "@fleet"


def cohort_names(session: Session, fleet: str) -> dict[int, str]:
    rows = session.exec(select(Cohort.id, Cohort.name).where(Cohort.fleet == fleet)).all()
    return {int(i): n for i, n in rows if i is not None}


def resolve_scope(session: Session, fleet: str, cohort: str | None) -> int | None:
    """A cohort's id from its name (``@fleet``: the whole fleet; None: every scope); NotFound otherwise."""
    if cohort is None:
        return None
    if cohort == FLEET_KEYWORD:
        return FLEET_SCOPE
    row = cohorts.get_cohort(session, fleet, cohort)
    assert row.id is not None
    return row.id


def _name(names: Mapping[int, str], cohort_id: int) -> str | None:
    return None if cohort_id == FLEET_SCOPE else names.get(cohort_id, f"#{cohort_id}")


def _metric(names: Mapping[int, str], p: report.MetricPoint) -> MetricPublic:
    return MetricPublic(
        cohort=_name(names, p.cohort_id),
        model=p.model_name,
        version=p.model_version,
        bucket_start=p.bucket_start,
        bucket_s=p.bucket_s,
        metric=p.metric,
        feature=p.feature,
        reference=p.reference,
        value=p.value,
        threshold=p.threshold,
        drifted=p.drifted,
        n=p.n,
    )


def _summary(names: Mapping[int, str], points: list[report.MetricPoint]) -> CohortDriftPublic:
    first = points[0]

    def one(metric: str, reference: str = "") -> report.MetricPoint | None:
        return next(
            (p for p in points if p.metric == metric and p.reference == reference and not p.feature), None
        )

    score = one("drift_score", "baseline")
    psi = one("prediction_psi", "baseline")
    accuracy = one("accuracy")
    requests = one("requests")
    error_rate = one("error_rate")
    return CohortDriftPublic(
        cohort=_name(names, first.cohort_id),
        model=first.model_name,
        version=first.model_version,
        bucket_start=max(p.bucket_start for p in points),
        drift_score=score.value if score else None,
        drifted_features=sorted(
            p.feature for p in points if p.metric == "drift_ks" and p.reference == "baseline" and p.drifted
        ),
        prediction_psi=psi.value if psi else None,
        accuracy=accuracy.value if accuracy else None,
        labelled=accuracy.n if accuracy else 0,
        recall={p.feature: p.value for p in points if p.metric == "recall"},
        requests=int(requests.value) if requests else None,
        error_rate=error_rate.value if error_rate else None,
        metrics=[_metric(names, p) for p in points],
    )


def drift_report(
    session: Session, *, fleet: str, model: str | None = None, cohort_id: int | None = None
) -> list[CohortDriftPublic]:
    """The newest scores, one summary per cohort (the fleet first) and model version."""
    names = cohort_names(session, fleet)
    grouped: dict[tuple[int, str, str], list[report.MetricPoint]] = {}
    for p in report.latest(session, fleet=fleet, model_name=model, cohort_id=cohort_id):
        grouped.setdefault((p.cohort_id, p.model_name, p.model_version), []).append(p)
    ordered = sorted(grouped, key=lambda k: (k[0] != FLEET_SCOPE, names.get(k[0], ""), k[1], k[2]))
    return [_summary(names, grouped[k]) for k in ordered]


def series(
    session: Session,
    *,
    fleet: str,
    metric: str,
    cohort_id: int,
    model: str,
    since: datetime,
    version: str | None = None,
    feature: str | None = None,
    reference: str | None = None,
) -> list[SeriesPublic]:
    names = cohort_names(session, fleet)
    found: Iterable[report.Series] = report.series(
        session,
        fleet=fleet,
        metric=metric,
        cohort_id=cohort_id,
        model_name=model,
        since=since,
        model_version=version,
        feature=feature,
        reference=reference,
    )
    return [
        SeriesPublic(
            cohort=_name(names, s.cohort_id),
            model=s.model_name,
            version=s.model_version,
            metric=s.metric,
            feature=s.feature,
            reference=s.reference,
            points=[PointPublic(**vars(p)) for p in s.points],
        )
        for s in found
    ]
