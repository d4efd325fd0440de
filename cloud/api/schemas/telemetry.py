"""Response shapes of telemetry series: a cohort's buckets over time, per model version."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict


class BucketPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    bucket_start: datetime
    bucket_s: int = Field(description="the bucket's length in seconds")
    devices: int = Field(description="devices with at least one window in the bucket")
    windows: int
    requests: int
    errors: int
    p95_ms: float | None = Field(description="request-weighted mean of the windows' p95; null: no request")
    cpu_percent: float | None = Field(description="mean over the windows that reported it")
    rss_bytes: int | None = Field(description="largest reported")


class TelemetrySeriesPublic(BaseModel):
    cohort: str | None = Field(description="the cohort; null for the whole fleet")
    model: str
    version: str
    buckets: list[BucketPublic] = Field(description="oldest first")


_EXAMPLE: JsonDict = {
    "data": [
        {
            "cohort": "canary",
            "model": "digits",
            "version": "1.5.0",
            "buckets": [
                {
                    "bucket_start": "2026-01-31T12:00:00Z",
                    "bucket_s": 300,
                    "devices": 98,
                    "windows": 2940,
                    "requests": 183412,
                    "errors": 12,
                    "p95_ms": 4.8,
                    "cpu_percent": 11.5,
                    "rss_bytes": 73400320,
                }
            ],
        }
    ],
    "count": 1,
}


class TelemetrySeriesListPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    data: list[TelemetrySeriesPublic]
    count: int
