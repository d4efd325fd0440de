"""Cohort metrics: every score the drift and accuracy jobs compute, one row per value.

This table is the seam between the scorers (``cloud.drift``) and what reads scores (alerts,
continuous-training triggers, rollout gates, the API): a reader needs only a metric's name.

Metric names (``feature`` is "" unless said otherwise; ``reference`` is "baseline" or "previous"
for drift, "" otherwise):

    drift_ks, drift_psi, drift_js, drift_wasserstein   per input feature (``feature`` = its name)
    drift_score        max over features of KS statistic / KS threshold (>= 1: drifted)
    prediction_psi, prediction_js                      predicted-class distribution
    confidence_p50                                     median top-1 probability
    accuracy           share of labelled predictions that were right (``n`` = labelled)
    recall             per class (``feature`` = class name)
    labelled           labelled predictions in the bucket
    error_rate, p95_ms, requests                       from telemetry windows
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from cloud.clock import utcnow
from cloud.models import UTCDateTime

__all__ = ["CohortMetric"]


class CohortMetric(SQLModel, table=True):
    __tablename__ = "cohort_metric"
    __table_args__ = (
        UniqueConstraint(
            "fleet",
            "cohort_id",
            "model_name",
            "model_version",
            "bucket_start",
            "metric",
            "feature",
            "reference",
            name="uq_cohort_metric_key",
        ),
        Index("ix_cohort_metric_series", "fleet", "metric", "cohort_id", "bucket_start"),
    )

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(max_length=128)
    cohort_id: int = 0  # cloud.telemetry.tables.FLEET_SCOPE for the whole fleet
    model_name: str = ""
    model_version: str = ""
    bucket_start: datetime = Field(sa_type=UTCDateTime)
    bucket_s: int = 300
    metric: str = Field(max_length=64)
    feature: str = Field(default="", max_length=128)
    reference: str = Field(default="", max_length=16)
    value: float
    # The decision threshold the value was judged against (KS: c(alpha)-based), when there is one.
    threshold: float | None = None
    drifted: bool = False
    n: int = Field(default=0, sa_type=BigInteger)  # samples behind the value
    computed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
