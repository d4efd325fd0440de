"""Devices: fold reported statuses into rows, and read them back with their desired state."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, String, case, func, literal, or_, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from cloud.api.schemas.fleet import (
    DeviceDetailPublic,
    DeviceEventPublic,
    DevicePublic,
    ModelRefPublic,
    TelemetryWindowPublic,
    TrialPublic,
)
from cloud.clock import from_ms
from cloud.errors import InvalidInputError, NotFoundError
from cloud.models import (
    Cohort,
    DesiredState,
    Device,
    DeviceEvent,
    DeviceState,
    ModelVariant,
    ModelVersion,
    TelemetryWindow,
)
from cloud.services.cohorts import cohort_clause
from cloud.services.labels import Selector, as_selector, effective_labels, selector_clause
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page
from cloud.sql_lists import in_list
from edgefleet_proto.v1 import common_pb2, device_pb2

_STATES = {
    device_pb2.DEVICE_STATE_ONLINE: DeviceState.ONLINE,
    device_pb2.DEVICE_STATE_OFFLINE: DeviceState.OFFLINE,
}
RECENT_EVENTS = 20
_MAX_INT64 = 2**63 - 1


def status_state(status: device_pb2.DeviceStatus) -> DeviceState:
    """The reported state; a status that names none is malformed."""
    try:
        return _STATES[status.state]
    except KeyError:
        raise InvalidInputError(
            f"device status state {status.state} is not online ({device_pb2.DEVICE_STATE_ONLINE}) "
            f"or offline ({device_pb2.DEVICE_STATE_OFFLINE})"
        ) from None


def _capabilities(caps: device_pb2.Capabilities) -> dict[str, Any]:
    # Built by hand: protobuf's JSON mapping would turn the uint64 byte counts into strings.
    return {
        "runtimes": list(caps.runtimes),
        "cpu_arch": caps.cpu_arch,
        "cpu_count": caps.cpu_count,
        "mem_total_bytes": caps.mem_total_bytes,
        "mem_available_bytes": caps.mem_available_bytes,
        "disk_free_bytes": caps.disk_free_bytes,
        "os": caps.os,
    }


_MAX_TIME_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: the last instant a datetime holds


def _checked_ms(what: str, ms: int) -> int:
    if not 0 <= ms <= _MAX_TIME_MS:
        raise InvalidInputError(
            f"{what} {ms} is out of range: expected Unix milliseconds in 0..{_MAX_TIME_MS}"
        )
    return ms


def check_status(status: device_pb2.DeviceStatus) -> DeviceState:
    """The reported state, once the fields the hub stores are in range; InvalidInputError otherwise."""
    state = status_state(status)
    if status.HasField("trial"):
        _checked_ms("trial.started_at_ms", status.trial.started_at_ms)
        _checked_ms("trial.window_ends_at_ms", status.trial.window_ends_at_ms)
    return state


def _model_fields(ref: common_pb2.ModelRef) -> dict[str, str]:
    return {
        "name": ref.name,
        "version": ref.version,
        "sha256": ref.sha256,
        "variant": ref.variant,
        "precision": ref.precision,
    }


def _trial(status: device_pb2.DeviceStatus) -> dict[str, Any] | None:
    if not status.HasField("trial"):
        return None
    t = status.trial
    return {
        "model": _model_fields(t.model),
        "mode": t.mode,
        "requests": t.requests,
        "window_requests": t.window_requests,
        "started_at_ms": t.started_at_ms,
        "window_ends_at_ms": t.window_ends_at_ms,
    }


def apply_status(
    session: Session,
    fleet: str,
    status: device_pb2.DeviceStatus,
    *,
    seen_at: datetime | None,
    now: datetime,
) -> Device:
    """Insert or update the device a status describes (the caller commits).

    ``seen_at`` is when the device was last known alive: the receive time for a live message,
    the send time for a retained one replayed by the broker, None when unknown.
    A death message (offline) changes only the state and ends the trial view: it was composed when
    the device connected (or, after a crash, carries no slots at all), so its other fields may be
    older than what the hub already knows. The last known models stay shown.
    """
    state = check_status(status)
    device = session.get(Device, status.device_id)
    is_new = device is None
    if device is None:
        first = seen_at or now
        device = Device(id=status.device_id, fleet=fleet, first_seen=first, last_seen=first)
        session.add(device)
    device.state = state
    if seen_at is not None and seen_at > device.last_seen:
        device.last_seen = seen_at
    if status.health:
        device.health = status.health
    if state is DeviceState.OFFLINE and not is_new:
        # A device that is gone runs no trial; it reports the trial again when it resumes it.
        device.trial = None
        return device
    device.agent_version = status.agent_version
    device.capabilities = _capabilities(status.capabilities)
    device.labels = dict(status.labels)
    device.applied_generation = status.applied_generation
    slots = {slot.name: slot.model for slot in status.slots if slot.HasField("model")}
    active, previous = slots.get("active"), slots.get("previous")
    device.active_model_name = active.name if active else None
    device.active_model_version = active.version if active else None
    device.active_model_sha256 = active.sha256 if active else None
    device.active_model_variant = active.variant[:32] if active else ""
    device.active_model_precision = active.precision[:8] if active else ""
    device.previous_model_name = previous.name if previous else None
    device.previous_model_version = previous.version if previous else None
    device.previous_model_sha256 = previous.sha256 if previous else None
    device.previous_model_variant = previous.variant[:32] if previous else ""
    device.previous_model_precision = previous.precision[:8] if previous else ""
    device.trial = _trial(status)
    device.hardware_id = status.hardware_id[:64]
    device.firmware_version = status.firmware_version[:64]
    device.firmware_slot = status.firmware_slot[:8]
    device.trusted_root_version = min(status.trusted_root_version, _MAX_INT64)
    device.queued_messages = min(status.queued_messages, _MAX_INT64)
    device.dropped_messages = min(status.dropped_messages, _MAX_INT64)
    device.trial_policy_source = status.trial_policy_source[:16]
    device.trial_policy_digest = status.trial_policy_digest[:64]
    device.last_load_ms = status.last_load_ms if math.isfinite(status.last_load_ms) else 0.0
    device.session_memory_bytes = min(status.session_memory_bytes, _MAX_INT64)
    return device


def touch(session: Session, device_id: str, fleet: str, seen_at: datetime) -> Device:
    """Record that a device was heard from; create it (state unknown) if no status came yet."""
    device = session.get(Device, device_id)
    if device is None:
        device = Device(id=device_id, fleet=fleet, first_seen=seen_at, last_seen=seen_at)
        session.add(device)
    elif seen_at > device.last_seen:
        device.last_seen = seen_at
    return device


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Desired:
    generation: int
    model: ModelRefPublic  # the artifact the device was told to run: the variant's when one was chosen


def _ref(
    name: str | None, version: str | None, sha256: str | None, variant: str = "", precision: str = ""
) -> ModelRefPublic | None:
    if not name or not sha256:
        return None
    return ModelRefPublic(
        name=name, version=version or "", sha256=sha256, variant=variant, precision=precision
    )


def _trial_public(trial: Mapping[str, Any] | None) -> TrialPublic | None:
    if not trial:
        return None
    ends = int(trial.get("window_ends_at_ms", 0))
    return TrialPublic(
        model=ModelRefPublic(**trial["model"]),
        mode=str(trial.get("mode", "")),
        requests=int(trial.get("requests", 0)),
        window_requests=int(trial.get("window_requests", 0)),
        started_at=from_ms(int(trial.get("started_at_ms", 0))),
        window_ends_at=from_ms(ends) if ends else None,
    )


def _desired_for(session: Session, device_ids: Sequence[str]) -> dict[str, _Desired]:
    if not device_ids:
        return {}
    # Columns, not entities: a page of devices costs one light query, not three ORM objects a device.
    rows = session.execute(
        sa_select(
            col(DesiredState.device_id),
            col(DesiredState.generation),
            col(ModelVersion.name),
            col(ModelVersion.version),
            col(ModelVersion.sha256),
            col(ModelVariant.sha256),
            col(ModelVariant.variant),
            col(ModelVariant.precision),
        )
        .join(ModelVersion, col(DesiredState.model_version_id) == col(ModelVersion.id))
        .outerjoin(ModelVariant, col(DesiredState.variant_id) == col(ModelVariant.id))
        .where(in_list(DesiredState.device_id, device_ids))
    ).all()
    return {
        device_id: _Desired(
            generation,
            ModelRefPublic(
                name=name,
                version=version,
                sha256=variant_sha256 or sha256,
                variant=variant or "",
                precision=precision or "",
            ),
        )
        for device_id, generation, name, version, sha256, variant_sha256, variant, precision in rows
    }


def _public(device: Device, desired: _Desired | None) -> DevicePublic:
    active = _ref(
        device.active_model_name,
        device.active_model_version,
        device.active_model_sha256,
        device.active_model_variant,
        device.active_model_precision,
    )
    wanted = desired.model if desired else None
    trial = _trial_public(device.trial)
    # Committed, not merely serving: during a trial the active slot may already hold the desired
    # model (serve mode) although the device can still roll it back.
    if wanted is None or desired is None:
        in_sync = trial is None
    else:
        in_sync = (
            active is not None
            and active.sha256 == wanted.sha256
            and device.applied_generation >= desired.generation
            and trial is None
        )
    return DevicePublic(
        id=device.id,
        fleet=device.fleet,
        state=device.state,
        agent_version=device.agent_version,
        health=device.health,
        capabilities=device.capabilities,
        labels=effective_labels(device.labels, device.operator_labels),
        reported_labels=device.labels,
        operator_labels=device.operator_labels,
        active_model=active,
        previous_model=_ref(
            device.previous_model_name,
            device.previous_model_version,
            device.previous_model_sha256,
            device.previous_model_variant,
            device.previous_model_precision,
        ),
        desired_model=wanted,
        desired_generation=desired.generation if desired else None,
        applied_generation=device.applied_generation,
        trial=trial,
        in_sync=in_sync,
        hardware_id=device.hardware_id,
        firmware_version=device.firmware_version,
        firmware_slot=device.firmware_slot,
        trusted_root_version=device.trusted_root_version,
        queued_messages=device.queued_messages,
        dropped_messages=device.dropped_messages,
        trial_policy_source=device.trial_policy_source,
        trial_policy_digest=device.trial_policy_digest,
        last_load_ms=device.last_load_ms,
        session_memory_bytes=device.session_memory_bytes,
        first_seen=device.first_seen,
        last_seen=device.last_seen,
    )


class HealthKind(enum.StrEnum):
    """The kind of a device's health text: the agent reports "serving", "idle", "degraded: why",
    "trial: model:version (...)" or "offline"; ``unknown`` is a device that reported none yet and
    ``other`` any text a newer agent may send."""

    SERVING = "serving"
    IDLE = "idle"
    DEGRADED = "degraded"
    TRIAL = "trial"
    OFFLINE = "offline"
    UNKNOWN = "unknown"
    OTHER = "other"


# Kinds whose text carries details after a colon ("degraded: checksum mismatch").
_DETAILED = (HealthKind.DEGRADED, HealthKind.TRIAL)
_PLAIN = (HealthKind.SERVING, HealthKind.IDLE, HealthKind.OFFLINE)


def _health_clause(kind: HealthKind) -> ColumnElement[bool]:
    health = col(Device.health)
    if kind in _DETAILED:
        # substr, not LIKE: LIKE ignores case on SQLite and not on PostgreSQL.
        prefix = f"{kind.value}:"
        return or_(health == kind.value, func.substr(health, 1, len(prefix)) == prefix)
    if kind is HealthKind.UNKNOWN:
        return health == ""
    if kind is HealthKind.OTHER:
        known = [_health_clause(k) for k in (*_DETAILED, *_PLAIN, HealthKind.UNKNOWN)]
        return ~or_(*known)
    return health == kind.value


def health_kind_column() -> ColumnElement[str]:
    """The HealthKind of ``Device.health`` in SQL, so that counts group in the database."""
    whens = [(_health_clause(k), k.value) for k in (*_DETAILED, *_PLAIN, HealthKind.UNKNOWN)]
    return case(*whens, else_=HealthKind.OTHER.value)


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """What a device listing matches; every given field must hold (None: any)."""

    fleet: str | None = None
    state: DeviceState | None = None
    labels: Selector | str | Mapping[str, str] | None = None
    model: str | None = None
    version: str | None = None
    cohort: Cohort | None = None
    health: HealthKind | None = None
    seen_after: datetime | None = None
    seen_before: datetime | None = None


def check_instant(name: str, value: datetime) -> datetime:
    """``value`` in UTC; InvalidInputError for a naive time or one UTC cannot hold (year 1 or 9999 with
    an offset), which the database layer would otherwise fail on."""
    if value.tzinfo is None:
        raise InvalidInputError(
            f"{name} {value.isoformat()} has no time zone: expected ISO 8601 with an offset, e.g. "
            "2026-01-31T12:00:00Z"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(
            f"{name} {value.isoformat()} is out of range: expected an instant within the years 1 to 9999 UTC"
        ) from None


def _check_seen(f: DeviceFilter) -> None:
    for name, value in (("seen_after", f.seen_after), ("seen_before", f.seen_before)):
        if value is not None:
            check_instant(name, value)
    if f.seen_after is not None and f.seen_before is not None and f.seen_after >= f.seen_before:
        raise InvalidInputError(
            f"seen_after {f.seen_after.isoformat()} is not before seen_before {f.seen_before.isoformat()}: "
            "expected an interval that can hold a time"
        )


def _devices_query(f: DeviceFilter) -> SelectOfScalar[Device]:
    _check_seen(f)
    query = select(Device)
    if f.fleet is not None:
        query = query.where(Device.fleet == f.fleet)
    if f.state is not None:
        query = query.where(Device.state == f.state)
    if f.labels:
        # In SQL over the effective labels (DeviceLabel), not over each device's JSON in Python.
        query = query.where(selector_clause(as_selector(f.labels)))
    if f.model is not None:
        query = query.where(Device.active_model_name == f.model)
    if f.version is not None:
        query = query.where(Device.active_model_version == f.version)
    if f.cohort is not None:
        # A cohort names devices of its own fleet only, whatever fleet the caller asked for.
        if f.cohort.fleet != f.fleet:
            query = query.where(Device.fleet == f.cohort.fleet)
        query = query.where(cohort_clause(f.cohort))
    if f.health is not None:
        query = query.where(_health_clause(f.health))
    if f.seen_after is not None:
        query = query.where(col(Device.last_seen) >= f.seen_after)
    if f.seen_before is not None:
        query = query.where(col(Device.last_seen) < f.seen_before)
    return query


def _publics(session: Session, devices: Sequence[Device]) -> list[DevicePublic]:
    desired = _desired_for(session, [d.id for d in devices])
    return [_public(d, desired.get(d.id)) for d in devices]


def list_devices(
    session: Session,
    *,
    fleet: str | None = None,
    state: DeviceState | None = None,
    labels: Selector | str | Mapping[str, str] | None = None,
    model: str | None = None,
    version: str | None = None,
) -> list[DevicePublic]:
    """Every device matching every given filter, by id; ``model``/``version`` match the active model.

    ``labels`` is a selector (its text, or ``{key: value}`` pairs). Unpaginated: for the hub's own
    use and tests; the API pages with ``page_devices``.
    """
    query = _devices_query(DeviceFilter(fleet, state, labels, model, version))
    return _publics(session, session.exec(query.order_by(col(Device.id))).all())


def devices_page_query(f: DeviceFilter, limit: int) -> SelectOfScalar[Device]:
    """The SQL of the first page of a listing, as ``page_devices`` runs it (for EXPLAIN and benchmarks)."""
    return _devices_query(f).order_by(col(Device.id)).limit(limit + 1)


def page_devices(
    session: Session,
    *,
    fleet: str | None = None,
    state: DeviceState | None = None,
    labels: Selector | str | Mapping[str, str] | None = None,
    model: str | None = None,
    version: str | None = None,
    cohort: Cohort | None = None,
    health: HealthKind | None = None,
    seen_after: datetime | None = None,
    seen_before: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[DevicePublic]:
    """One page of the matching devices, by id; ``next_cursor`` continues after its last device.

    Two queries a page whatever its size: the devices, and their desired states.
    """
    f = DeviceFilter(fleet, state, labels, model, version, cohort, health, seen_after, seen_before)
    page = keyset_page(
        session,
        _devices_query(f),
        [Device.id],
        listing="devices",
        key_of=lambda d: (d.id,),
        limit=limit,
        cursor=cursor,
    )
    return Page(_publics(session, page.items), page.next_cursor)


# --- the fleet at a glance --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionCount:
    name: str | None  # None: devices that run no model the hub heard of
    version: str | None
    count: int


@dataclass(frozen=True, slots=True)
class FleetSummary:
    total: int
    by_state: dict[str, int]
    by_health: dict[str, int]
    by_version: list[VersionCount]  # most devices first
    by_cohort: dict[str, int]  # every cohort of the fleet, empty ones too


def fleet_summary(session: Session, fleet: str) -> FleetSummary:
    """Counts of the fleet's devices by state, health, active version and cohort.

    Each count is a GROUP BY (or one COUNT per cohort, all in one UNION ALL) in the database, so the
    cost does not grow with the rows handed to Python: four queries whatever the fleet's size.
    """
    in_fleet = Device.fleet == fleet
    states = session.exec(select(Device.state, func.count()).where(in_fleet).group_by(Device.state)).all()
    by_state = {s.value: 0 for s in DeviceState} | {DeviceState(s).value: int(n) for s, n in states}
    kind = health_kind_column().label("kind")
    healths = session.exec(select(kind, func.count()).where(in_fleet).group_by(kind)).all()
    by_health = {k.value: 0 for k in HealthKind} | {str(k): int(n) for k, n in healths}
    name, version = col(Device.active_model_name), col(Device.active_model_version)
    versions = session.exec(select(name, version, func.count()).where(in_fleet).group_by(name, version)).all()
    by_version = sorted(
        (VersionCount(n, v, int(c)) for n, v, c in versions),
        key=lambda r: (-r.count, r.name or "", r.version or ""),
    )
    return FleetSummary(
        total=sum(by_state.values()),
        by_state=by_state,
        by_health=by_health,
        by_version=by_version,
        by_cohort=_cohort_counts(session, fleet),
    )


def _cohort_counts(session: Session, fleet: str) -> dict[str, int]:
    cohorts = session.exec(select(Cohort).where(Cohort.fleet == fleet).order_by(col(Cohort.name))).all()
    if not cohorts:
        return {}
    counts = [
        select(literal(c.name, String).label("cohort"), func.count().label("n")).where(
            Device.fleet == fleet, cohort_clause(c)
        )
        for c in cohorts
    ]
    rows = session.execute(union_all(*counts)).all()
    found = {str(name): int(n) for name, n in rows}
    return {c.name: found.get(c.name, 0) for c in cohorts}


def get_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"device {device_id!r} is not known to this hub")
    return device


def device_detail(session: Session, device_id: str) -> DeviceDetailPublic:
    device = get_device(session, device_id)
    base = _public(device, _desired_for(session, [device_id]).get(device_id))
    events = recent_events(session, device_id, RECENT_EVENTS)
    windows = recent_telemetry(session, device_id, 1)
    from cloud.api.schemas.fleet import RollbackPublic
    from cloud.services.rollbacks import list_rollbacks

    rolled = list_rollbacks(session, fleet=device.fleet, device_id=device_id, limit=RECENT_EVENTS)
    return DeviceDetailPublic(
        **base.model_dump(),
        recent_events=[DeviceEventPublic.model_validate(e) for e in events],
        last_telemetry=TelemetryWindowPublic.model_validate(windows[0]) if windows else None,
        rollbacks=[RollbackPublic.model_validate(r) for r in rolled],
    )


def recent_events(session: Session, device_id: str, limit: int) -> list[DeviceEvent]:
    """A device's latest events, newest first."""
    return list(
        session.exec(
            select(DeviceEvent)
            .where(DeviceEvent.device_id == device_id)
            .order_by(col(DeviceEvent.seq).desc())
            .limit(limit)
        ).all()
    )


def recent_telemetry(session: Session, device_id: str, limit: int) -> list[TelemetryWindow]:
    """A device's latest telemetry windows, newest first."""
    return list(
        session.exec(
            select(TelemetryWindow)
            .where(TelemetryWindow.device_id == device_id)
            .order_by(col(TelemetryWindow.seq).desc())
            .limit(limit)
        ).all()
    )
