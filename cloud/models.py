"""Database tables of the hub.

Device-reported rows (telemetry windows, events) are unique per ``(device_id, seq)``:
QoS 1 delivers at least once, and a redelivered message must not count twice.
Request and response shapes of the API live in ``cloud.api.schemas.fleet``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Index, LargeBinary, UniqueConstraint
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
    # The API lists a fleet's devices by id a page at a time: (fleet, id) reads a page in order
    # instead of sorting the whole fleet. The fleet overview counts by state and by active version,
    # and filters by last seen: each from an index of its own, without reading the rows.
    __table_args__ = (
        Index("ix_device_fleet_id", "fleet", "id"),
        Index("ix_device_fleet_state", "fleet", "state"),
        Index("ix_device_fleet_active_model", "fleet", "active_model_name", "active_model_version"),
        Index("ix_device_fleet_last_seen", "fleet", "last_seen"),
    )

    id: str = Field(primary_key=True, max_length=128)
    fleet: str = Field(index=True, max_length=128)
    state: DeviceState = Field(default=DeviceState.UNKNOWN, index=True, sa_type=_enum_column(DeviceState))
    agent_version: str = ""
    health: str = ""
    capabilities: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)  # as the device reports them
    # Set by an operator (`fleet devices label`); wins over a reported label of the same key, and a
    # None value hides that reported label. The merge of both is in DeviceLabel, where selectors match.
    operator_labels: dict[str, str | None] = Field(default_factory=dict, sa_type=JSON)
    active_model_name: str | None = None
    active_model_version: str | None = None
    active_model_sha256: str | None = Field(default=None, max_length=64)
    active_model_variant: str = Field(default="", max_length=32)
    active_model_precision: str = Field(default="", max_length=8)
    previous_model_name: str | None = None
    previous_model_version: str | None = None
    previous_model_sha256: str | None = Field(default=None, max_length=64)
    previous_model_variant: str = Field(default="", max_length=32)
    previous_model_precision: str = Field(default="", max_length=8)
    applied_generation: int = Field(default=0, sa_type=BigInteger)
    # The version on trial, as the device last reported it (None: no trial running). Keys: model
    # (name, version, sha256, variant, precision), mode, requests, window_requests, started_at_ms,
    # window_ends_at_ms.
    trial: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    # The board the device is; a firmware image for another one is refused ("": takes no firmware).
    hardware_id: str = Field(default="", max_length=64)
    firmware_version: str = Field(default="", max_length=64)
    firmware_slot: str = Field(default="", max_length=8)
    trusted_root_version: int = Field(default=0, sa_type=BigInteger)
    # The device's outgoing queue: waiting for the broker, and dropped because it was full.
    queued_messages: int = Field(default=0, sa_type=BigInteger)
    dropped_messages: int = Field(default=0, sa_type=BigInteger)
    # The trial policy that judged the version on trial or last judged (model_tools.trial_policy):
    # where it came from (assignment, rollout, bundle, default) and the sha256 of its canonical form.
    trial_policy_source: str = Field(default="", max_length=16)
    trial_policy_digest: str = Field(default="", max_length=64)
    # The last model load on the device: how long it took and what the session added to its memory.
    last_load_ms: float = 0.0
    session_memory_bytes: int = Field(default=0, sa_type=BigInteger)
    first_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeviceLabel(SQLModel, table=True):
    """One effective label of a device: its reported labels merged with the operator's.

    Written only when they change (by ingest, and by the label route), so label selectors run in
    SQL as EXISTS over this table instead of reading every device's JSON into Python.
    """

    __tablename__ = "device_label"
    __table_args__ = (Index("ix_device_label_key_value", "key", "value"),)

    device_id: str = Field(primary_key=True, foreign_key="device.id", max_length=128)
    key: str = Field(primary_key=True, max_length=128)
    value: str = Field(max_length=256)


class Cohort(SQLModel, table=True):
    """A named set of devices of a fleet: a label selector, an explicit device list, or both (union).

    Membership is evaluated at each query, so a device that joins later and matches is a member.
    """

    __tablename__ = "cohort"
    __table_args__ = (UniqueConstraint("fleet", "name", name="uq_cohort_fleet_name"),)

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(index=True, max_length=128)
    name: str = Field(max_length=64)
    selector: str = ""  # canonical text (str(Selector)); "" when the cohort is a list only
    devices: list[str] = Field(default_factory=list, sa_type=JSON)
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


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
    # The variant of the version chosen for this device's capabilities (None: before variants existed).
    variant_id: int | None = Field(default=None, foreign_key="model_variant.id")
    generation: int = Field(sa_type=BigInteger)
    issued_at: datetime = Field(sa_type=UTCDateTime)
    # The trial policy this assignment sets: {"source": "assignment" | "rollout", "policy": {...}}
    # (model_tools.trial_policy); None: the bundle's default, else the device's.
    trial_policy: dict[str, Any] | None = Field(default=None, sa_type=JSON)


class TelemetryWindow(SQLModel, table=True):
    __tablename__ = "telemetry_window"
    __table_args__ = (
        UniqueConstraint("device_id", "seq", name="uq_telemetry_window_device_seq"),
        # Rollups find new rows by arrival and group them by bucket; retention deletes by window end.
        Index("ix_telemetry_window_received", "received_at"),
        Index("ix_telemetry_window_end", "window_end"),
    )

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
    # What the agent process used over the window (edgefleet.v1.ResourceUsage); None: not reported.
    cpu_percent: float | None = None
    rss_bytes: int | None = Field(default=None, sa_type=BigInteger)
    peak_rss_bytes: int | None = Field(default=None, sa_type=BigInteger)
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
    # Typed figures (ints, floats, bools, text) from the event's ``data``; text only from older agents.
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    generation: int = Field(default=0, sa_type=BigInteger)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeviceRollback(SQLModel, table=True):
    """A version a device rolled back on its own, from its ROLLED_BACK event.

    ``refused``: the device judged the version bad (a failed trial gate, a crash loop) and will not
    install it again, so the hub does not offer it to that device again either. A fallback at start
    (a damaged artifact) is recorded but refuses nothing.
    """

    __tablename__ = "device_rollback"
    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_device_rollback_device_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True, max_length=128)
    # The ROLLED_BACK event's number: a QoS 1 redelivery is stored once.
    seq: int = Field(sa_type=BigInteger)
    ts: datetime = Field(sa_type=UTCDateTime)
    model_name: str = Field(index=True, max_length=64)
    model_version: str = Field(max_length=64)
    model_sha256: str = Field(max_length=64)
    variant: str = Field(default="", max_length=32)
    generation: int = Field(default=0, sa_type=BigInteger)
    gate: str = Field(default="", max_length=32)
    reason: str = ""
    details: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    refused: bool = True
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    """An API token; only its sha256 is stored, so a leaked database leaks no token."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    role: Role = Field(sa_type=_enum_column(Role))
    token_sha256: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # None: never expires. A revoked token stays as a row, so its name is not reused by accident
    # and the audit log's actor names keep meaning one token.
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Updated at most once a minute (cloud.services.tokens.USE_RESOLUTION_S): not a write per request.
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UiSession(SQLModel, table=True):
    """A dashboard login: the ``ef_session`` cookie names it. Only digests are stored: a leaked
    database neither logs anyone in nor gives away the CSRF token that goes with a cookie."""

    __tablename__ = "ui_session"

    id: int | None = Field(default=None, primary_key=True)
    session_sha256: str = Field(unique=True, max_length=64)
    csrf_sha256: str = Field(max_length=64)
    token_id: int = Field(foreign_key="api_token.id", index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


# --- Signed update channel: TUF repository, director, firmware ----------------------------------


class TufMetadata(SQLModel, table=True):
    """Every signed version of every TUF role, as served (consistent snapshots need old ones too)."""

    __tablename__ = "tuf_metadata"
    __table_args__ = (UniqueConstraint("role", "version", name="uq_tuf_metadata_role_version"),)

    id: int | None = Field(default=None, primary_key=True)
    role: str = Field(index=True, max_length=32)
    version: int = Field(sa_type=BigInteger)
    data: bytes = Field(sa_type=LargeBinary)
    expires: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TufTarget(SQLModel, table=True):
    """A target in the repository's targets metadata: every artifact a device may install."""

    __tablename__ = "tuf_target"

    path: str = Field(primary_key=True, max_length=255)
    sha256: str = Field(index=True, max_length=64)
    length: int = Field(sa_type=BigInteger)
    # kind ("model", "profile", "firmware", "firmware-delta"), name, version, hardware, ...
    custom: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TufRotation(SQLModel, table=True):
    """A new root version waiting for the offline root keys' signatures."""

    __tablename__ = "tuf_rotation"

    id: int | None = Field(default=None, primary_key=True)
    role: str = Field(max_length=32)
    root_version: int = Field(sa_type=BigInteger)
    # The unsigned root metadata (JSON); signatures collect in `signatures` (keyid -> hex).
    root_json: bytes = Field(sa_type=LargeBinary)
    signatures: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    new_keyids: list[str] = Field(default_factory=list, sa_type=JSON)
    state: str = Field(default="pending", max_length=16)  # pending, published, superseded
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SignedDesired(SQLModel, table=True):
    """The last desired state the director signed for a device, and its counter (which only grows)."""

    __tablename__ = "signed_desired"

    device_id: str = Field(primary_key=True, max_length=128)
    counter: int = Field(default=0, sa_type=BigInteger)
    envelope: bytes = Field(default=b"", sa_type=LargeBinary)
    # sha256 of the signed content without counter and expiry: tells a re-sign from a change.
    content_sha256: str = Field(default="", max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    signed_at: datetime = Field(sa_type=UTCDateTime)


class CommandSeq(SQLModel, table=True):
    """The last command ``seq`` the director signed for a device (it only grows: devices refuse replays)."""

    __tablename__ = "command_seq"

    device_id: str = Field(primary_key=True, max_length=128)
    seq: int = Field(default=0, sa_type=BigInteger)


class FirmwareImage(SQLModel, table=True):
    """A firmware bundle (full image or delta) registered as a TUF target."""

    __tablename__ = "firmware_image"
    __table_args__ = (
        UniqueConstraint("name", "hardware_id", "version", "kind", "base_version", name="uq_firmware_image"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=64)
    hardware_id: str = Field(max_length=64)
    version: str = Field(max_length=64)
    kind: str = Field(max_length=16)  # "full" or "delta"
    base_version: str = Field(default="", max_length=64)
    min_agent_version: str = Field(max_length=64)
    algorithm: str = Field(default="", max_length=16)
    target_path: str = Field(max_length=255)
    sha256: str = Field(index=True, max_length=64)
    length: int = Field(sa_type=BigInteger)
    payload_sha256: str = Field(max_length=64)
    payload_length: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DesiredFirmware(SQLModel, table=True):
    """The firmware image the hub wants a device to run."""

    __tablename__ = "desired_firmware"

    device_id: str = Field(primary_key=True, foreign_key="device.id", max_length=128)
    firmware_image_id: int = Field(foreign_key="firmware_image.id", index=True)
    issued_at: datetime = Field(sa_type=UTCDateTime)


# --- Model optimization pipeline: experiments, bundles, variants ---------------------------------


class Experiment(SQLModel, table=True):
    """A training run: what went in (params, seed, data set hash, code) and what came out (metrics)."""

    __tablename__ = "experiment"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(unique=True, max_length=64)
    name: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=32)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    seed: int = Field(default=0, sa_type=BigInteger)
    metrics: dict[str, float] = Field(default_factory=dict, sa_type=JSON)
    dataset_name: str = Field(max_length=128)
    dataset_hash: str = Field(index=True, max_length=64)
    dataset_sizes: dict[str, int] = Field(default_factory=dict, sa_type=JSON)
    code_revision: str = Field(max_length=128)
    duration_s: float = 0.0
    device: str = Field(max_length=64)
    world_size: int = 1
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Bundle(SQLModel, table=True):
    """The manifest and data profile of a model version registered as a bundle."""

    __tablename__ = "model_bundle"

    model_version_id: int = Field(primary_key=True, foreign_key="model_version.id")
    experiment_id: int | None = Field(default=None, foreign_key="experiment.id", index=True)
    manifest: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    profile_sha256: str = Field(index=True, max_length=64)
    profile_length: int = Field(sa_type=BigInteger)
    profile_media_type: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ModelVariant(SQLModel, table=True):
    """One published artifact of a version (fp32, int8, TFLite, ...); devices get the one that fits."""

    __tablename__ = "model_variant"
    __table_args__ = (
        UniqueConstraint("model_version_id", "variant", name="uq_model_variant_version_variant"),
    )

    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(foreign_key="model_version.id", index=True)
    variant: str = Field(max_length=32)
    format: str = Field(max_length=16)
    precision: str = Field(max_length=8)
    sha256: str = Field(index=True, max_length=64)
    length: int = Field(sa_type=BigInteger)
    # [{"name": "onnxruntime", "min_version": "1.17"}]: any one of them runs the variant.
    runtimes: list[dict[str, str]] = Field(default_factory=list, sa_type=JSON)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    derived_from: str | None = Field(default=None, max_length=32)
    is_baseline: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- Staged rollouts: the persisted state machine, the devices it offered, its history ------------


class Rollout(SQLModel, table=True):
    """A staged rollout of one model or firmware version; ``state`` is a ``RolloutState`` value.

    ``lease_owner``/``lease_until``: the hub replica advancing the rollout right now. A step takes
    the lease in one transaction and works in the next ones (signing commits on its own), so the
    lease, not a row lock, keeps a second replica out; it expires so a crashed replica's is taken over.
    """

    __tablename__ = "rollout"

    id: str = Field(primary_key=True, max_length=32)
    fleet: str = Field(index=True, max_length=128)
    name: str = Field(max_length=128)
    target_kind: str = Field(max_length=16)  # "model" or "firmware"
    target_name: str = Field(max_length=64)
    target_version: str = Field(max_length=64)
    # The validated plan (RolloutPlan.model_dump(mode="json")).
    plan: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    state: str = Field(default="draft", index=True, max_length=24)
    stage: int = 0
    stage_entered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When the rollout entered its current state: bake time counts from entering "baking".
    state_entered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When the engine next has something to do (a closed window opens, the rate allows one more).
    next_action_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_action: str = ""
    created_by: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    superseded_by: str | None = Field(default=None, max_length=32)
    lease_owner: str = Field(default="", max_length=64)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RolloutDevice(SQLModel, table=True):
    """A device a rollout holds: offered the target in ``stage``, and what to give back on abort."""

    __tablename__ = "rollout_device"

    rollout_id: str = Field(primary_key=True, foreign_key="rollout.id", max_length=32)
    device_id: str = Field(primary_key=True, index=True, max_length=128)
    stage: int = 0
    offered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # What the device ran before: {"model_version_id", "variant_id", "name", "version"} for a model
    # target, {"firmware_image_id", "version"} for firmware; {} when it ran nothing the hub knows.
    previous: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    outcome: str = Field(default="", max_length=16)  # "", committed, rolled_back, failed, restored


class RolloutTransition(SQLModel, table=True):
    """One step of a rollout's state machine: who (``system`` for the engine), why, and the figures."""

    __tablename__ = "rollout_transition"
    __table_args__ = (UniqueConstraint("rollout_id", "seq", name="uq_rollout_transition_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    rollout_id: str = Field(index=True, foreign_key="rollout.id", max_length=32)
    seq: int
    at: datetime = Field(sa_type=UTCDateTime)
    from_state: str = Field(max_length=24)
    to_state: str = Field(max_length=24)
    event: str = Field(max_length=32)
    stage: int = 0
    actor: str = Field(default="system", max_length=64)
    reason: str = ""
    # The stage figures and gate results that caused it ({} for an operator's action).
    figures: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
