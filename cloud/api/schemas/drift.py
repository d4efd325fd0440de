"""Response shapes of drift and labelled-accuracy reports (``cloud.drift.report``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class MetricPublic(BaseModel):
    """One score of one cohort, model version and time bucket."""

    cohort: str | None = Field(description="the cohort's name; null for the whole fleet")
    model: str
    version: str
    bucket_start: datetime
    bucket_s: int
    metric: str = Field(examples=["drift_score"])
    feature: str = Field(description="the input feature, or the class for recall; empty otherwise")
    reference: str = Field(description="'baseline' (the bundle's profile) or 'previous' (the bucket before)")
    value: float
    threshold: float | None = Field(description="what the value was judged against, when it is a test")
    drifted: bool
    n: int = Field(description="samples behind the value")


class CohortDriftPublic(BaseModel):
    """The newest scores of one cohort on one model version, with the headline figures picked out."""

    cohort: str | None
    model: str
    version: str
    bucket_start: datetime
    drift_score: float | None = Field(
        description="max over features of the KS statistic over its threshold (>= 1: drifted)"
    )
    drifted_features: list[str] = Field(description="features whose KS test against the baseline rejects")
    prediction_psi: float | None = Field(description="PSI of the predicted classes against the baseline")
    accuracy: float | None = Field(description="share of labelled predictions that were right")
    labelled: int = Field(description="labelled predictions behind the accuracy")
    recall: dict[str, float] = Field(description="per class")
    requests: int | None = None
    error_rate: float | None = None
    metrics: list[MetricPublic]


class DriftReportPublic(BaseModel):
    data: list[CohortDriftPublic]
    count: int


class PointPublic(BaseModel):
    bucket_start: datetime
    value: float
    threshold: float | None
    drifted: bool
    n: int


class SeriesPublic(BaseModel):
    cohort: str | None
    model: str
    version: str
    metric: str
    feature: str
    reference: str
    points: list[PointPublic]


class SeriesListPublic(BaseModel):
    data: list[SeriesPublic]
    count: int
