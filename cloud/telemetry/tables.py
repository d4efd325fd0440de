"""Tables of the telemetry pipeline: raw sketch windows as devices sent them, and cohort rollups.

Raw rows expire (``raw_retention_s``); rollups stay (``rollup_retention_days``). A rollup is
rebuilt from the raw rows of its bucket whenever one of them arrives late, so rebuilding is
idempotent and safe to run on several hub replicas.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from cloud.clock import utcnow
from cloud.models import UTCDateTime

__all__ = ["FLEET_SCOPE", "CohortRollup", "SketchRecord"]

# ``cohort_id`` of the rollup over every device of the fleet (no cohort row has id 0).
FLEET_SCOPE = 0


class SketchRecord(SQLModel, table=True):
    """One ``edgefleet.v1.SketchWindow`` of one device, unique per ``(device_id, seq)`` (QoS 1 redelivers)."""

    __tablename__ = "sketch_record"
    __table_args__ = (
        UniqueConstraint("device_id", "seq", name="uq_sketch_record_device_seq"),
        Index("ix_sketch_record_bucket", "window_end"),
        Index("ix_sketch_record_received", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # No foreign key: a sketch may arrive before the device's first status does.
    device_id: str = Field(max_length=128)
    seq: int = Field(sa_type=BigInteger)
    window_start: datetime = Field(sa_type=UTCDateTime)
    window_end: datetime = Field(sa_type=UTCDateTime)
    model_name: str = ""
    model_version: str = ""
    samples: int = Field(default=0, sa_type=BigInteger)
    # The SketchWindow as received (a few KB: one KLL sketch per feature).
    payload: bytes = Field(sa_type=LargeBinary)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CohortRollup(SQLModel, table=True):
    """Every window of one cohort's devices on one model version whose end falls in one time bucket."""

    __tablename__ = "cohort_rollup"
    __table_args__ = (
        UniqueConstraint(
            "fleet", "cohort_id", "model_name", "model_version", "bucket_start", name="uq_cohort_rollup_key"
        ),
        Index("ix_cohort_rollup_series", "fleet", "cohort_id", "model_name", "bucket_start"),
    )

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(max_length=128)
    # A cohort's id, or FLEET_SCOPE for the whole fleet. Membership is read when the bucket is rebuilt.
    cohort_id: int = Field(default=FLEET_SCOPE)
    model_name: str = ""
    model_version: str = ""
    bucket_start: datetime = Field(sa_type=UTCDateTime)
    bucket_s: int = 300
    devices: int = 0  # devices with at least one window in the bucket
    windows: int = 0  # telemetry windows
    requests: int = Field(default=0, sa_type=BigInteger)
    errors: int = Field(default=0, sa_type=BigInteger)
    # Request-weighted mean of the windows' p95 latency (None: no request served).
    p95_ms: float | None = None
    cpu_percent: float | None = None  # mean over windows that reported it
    rss_bytes: int | None = Field(default=None, sa_type=BigInteger)  # largest reported
    samples: int = Field(default=0, sa_type=BigInteger)  # predictions sketched
    # The merge of the bucket's SketchWindows (serialized edgefleet.v1.SketchWindow; empty: no sketch).
    sketch: bytes = Field(default=b"", sa_type=LargeBinary)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
