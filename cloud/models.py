"""Database tables of the hub.

Device-reported rows (telemetry windows, events) are unique per ``(device_id, seq)``:
QoS 1 delivers at least once, and a redelivered message must not count twice.
Request and response shapes of the API live in ``cloud.schemas``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, UniqueConstraint
from sqlalchemy import Enum as SAEnum
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from cloud.clock import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got naive {value.isoformat()}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # heard from only through telemetry or events, never a status


class Role(enum.StrEnum):
    """API roles, each allowed what the ones before it are."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_ORDER.index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_ROLE_ORDER = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)


def _enum_column(enum_cls: type[enum.StrEnum]) -> SAEnum:
    """Store an enum's values as plain strings: readable in SQL, no PostgreSQL ENUM type to migrate."""
    return SAEnum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Device(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=128)
    fleet: str = Field(index=True, max_length=128)
    state: DeviceState = Field(default=DeviceState.UNKNOWN, index=True, sa_type=_enum_column(DeviceState))
    agent_version: str = ""
    health: str = ""
    capabilities: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    active_model_name: str | None = None
    active_model_version: str | None = None
    active_model_sha256: str | None = Field(default=None, max_length=64)
    previous_model_name: str | None = None
    previous_model_version: str | None = None
    previous_model_sha256: str | None = Field(default=None, max_length=64)
    applied_generation: int = Field(default=0, sa_type=BigInteger)
    first_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_version_name_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=64)
    version: str = Field(max_length=64)
    format: str = Field(max_length=16)
    sha256: str = Field(index=True, max_length=64)
    length: int = Field(sa_type=BigInteger)
    # [{"name": "input", "dtype": "float32", "shape": [-1, 64]}]; -1 marks a dynamic dimension.
    inputs: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    outputs: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DesiredState(SQLModel, table=True):
    """What the hub wants one device to run; ``generation`` only grows."""

    __tablename__ = "desired_state"

    device_id: str = Field(primary_key=True, foreign_key="device.id", max_length=128)
    model_version_id: int = Field(foreign_key="model_version.id", index=True)
    generation: int = Field(sa_type=BigInteger)
    issued_at: datetime = Field(sa_type=UTCDateTime)


class TelemetryWindow(SQLModel, table=True):
    __tablename__ = "telemetry_window"
    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_telemetry_window_device_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    # No foreign key: telemetry may arrive before the device's first status does.
    device_id: str = Field(index=True, max_length=128)
    seq: int = Field(sa_type=BigInteger)
    window_start: datetime = Field(sa_type=UTCDateTime)
    window_end: datetime = Field(sa_type=UTCDateTime)
    model_name: str = ""
    model_version: str = ""
    requests: int = Field(default=0, sa_type=BigInteger)
    errors: int = Field(default=0, sa_type=BigInteger)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeviceEvent(SQLModel, table=True):
    __tablename__ = "device_event"
    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_device_event_device_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True, max_length=128)
    seq: int = Field(sa_type=BigInteger)
    ts: datetime = Field(sa_type=UTCDateTime)
    kind: str = Field(max_length=64)  # "activated", "rolled_back", ... (EventKind without its prefix)
    model_name: str = ""
    model_version: str = ""
    model_sha256: str = ""
    reason: str = ""
    details: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    generation: int = Field(default=0, sa_type=BigInteger)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    """An API token; only its sha256 is stored, so a leaked database leaks no token."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    role: Role = Field(sa_type=_enum_column(Role))
    token_sha256: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
