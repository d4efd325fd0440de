"""Ingest: decode what devices publish and store it, a batch per transaction.

Nothing a device sends can stop the ingest. A payload that does not decode is counted
and logged with its topic and the reason (never its bytes); a message whose device id
differs from the one in its topic is rejected, because a device may write only its own
rows. Duplicates from QoS 1 redelivery are dropped by the ``(device_id, seq)`` keys.

Telemetry ``seq`` increases by one per window on each device, so a device's first window in a
batch that is more than one past the highest already stored means windows went missing on the
way (most often: the broker dropped them for the hub, and its statuses with them). Such a gap is
counted and reported to ``on_seq_gap``, which has the transport re-read the retained statuses.
With several hub replicas two windows of one device can be stored out of order by two replicas
(a flushed outbox): that shows as a gap too, and costs no more than one rate-limited re-read.

A database that cannot take the batch at all (down, unreachable, locked past the busy
timeout) is no fault of the devices: ``ingest`` raises ``StoreUnavailableError`` so that the
transport keeps the messages unacknowledged and offers them again, rather than counting
them as failed and losing what the broker already acknowledged to the devices.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, cast

from google.protobuf.message import DecodeError
from sqlalchemy import CursorResult, Table, case, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from cloud.clock import Clock, from_ms, utcnow
from cloud.db import SessionFactory, transaction
from cloud.errors import HubError, InvalidInputError
from cloud.models import Device, DeviceEvent, DeviceRollback, DeviceState, TelemetryWindow
from cloud.observability.metrics import IngestMetrics
from cloud.services import devices, labels, rollbacks
from cloud.sql_lists import in_list
from cloud.telemetry.tables import SketchRecord
from edgefleet_proto.topics import Channel, FleetTopics, TopicError
from edgefleet_proto.v1 import device_pb2, event_pb2, sketch_pb2, telemetry_pb2

__all__ = [
    "InboundMessage",
    "IngestStats",
    "Ingestor",
    "MalformedError",
    "RejectedError",
    "StoreUnavailableError",
    "event_details",
    "event_kind",
]

log = logging.getLogger(__name__)

_MAX_INT64 = 2**63 - 1
_ROWS_PER_INSERT = 500  # rows per multi-row INSERT on PostgreSQL (65,535 parameters at most)
_KEYS = ["device_id", "seq"]


class MalformedError(HubError):
    """A payload that does not decode into what its topic promises."""


class RejectedError(HubError):
    """A well-formed message a device is not allowed to send (someone else's id or fleet)."""


class StoreUnavailableError(HubError):
    """The database could not take a batch for a reason of its own: offer the batch again later."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    # Replayed by the broker from its retained store rather than sent just now.
    retained: bool = False


@dataclass
class IngestStats:
    """Counters a health check or a test can read; updated under a lock."""

    received: int = 0
    statuses: int = 0
    telemetry_windows: int = 0
    sketch_windows: int = 0
    events: int = 0
    rollbacks: int = 0
    labels: int = 0  # devices whose effective labels changed and were rewritten
    duplicates: int = 0
    seq_gaps: int = 0  # telemetry windows missing between what was stored and what came next
    malformed: int = 0
    rejected: int = 0
    ignored: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


@dataclass(frozen=True, slots=True)
class _Decoded:
    device_id: str
    channel: Channel
    message: Any
    retained: bool


def _check_int64(what: str, value: int) -> int:
    if value > _MAX_INT64:
        raise MalformedError(f"{what} {value} is out of range: expected at most {_MAX_INT64}")
    return value


def _check_owner(topic_device: str, claimed: str, what: str) -> None:
    if claimed != topic_device:
        # repr and a cap: the claimed id is device-supplied text headed for the log.
        raise RejectedError(
            f"{what} names device {claimed[:128]!r} but was published on the topic of {topic_device!r}"
        )


class Ingestor:
    """Decodes batches of inbound messages and stores each batch in one transaction."""

    def __init__(
        self,
        sessions: SessionFactory,
        topics: FleetTopics,
        *,
        clock: Clock = utcnow,
        stats: IngestStats | None = None,
        metrics: IngestMetrics | None = None,
        on_seq_gap: Callable[[int], None] | None = None,
    ) -> None:
        self._sessions = sessions
        # Called with the count of missing windows after a batch that showed gaps committed.
        self.on_seq_gap = on_seq_gap
        self._seqs = _SeqTracker()
        self._metrics = metrics
        self._topics = topics
        self._clock = clock
        self.stats = stats if stats is not None else IngestStats()

    def decode(self, msg: InboundMessage) -> _Decoded | None:
        """The typed message, None for one to skip; raises MalformedError or RejectedError."""
        try:
            device_id, channel = self._topics.parse(msg.topic)
        except TopicError as e:
            raise MalformedError(str(e)) from e
        if not msg.payload:
            return None  # an empty retained payload clears a topic; nothing to store
        try:
            if channel is Channel.STATUS:
                status = device_pb2.DeviceStatus.FromString(msg.payload)
                _check_owner(device_id, status.device_id, "status")
                if status.fleet and status.fleet != self._topics.fleet:
                    raise RejectedError(
                        f"status names fleet {status.fleet!r}, expected {self._topics.fleet!r}"
                    )
                devices.check_status(status)
                _check_int64("applied_generation", status.applied_generation)
                return _Decoded(device_id, channel, status, msg.retained)
            if channel is Channel.TELEMETRY:
                batch = telemetry_pb2.TelemetryBatch.FromString(msg.payload)
                _check_owner(device_id, batch.device_id, "telemetry batch")
                for window in batch.windows:
                    _check_int64("telemetry seq", window.seq)
                    if window.window_end_ms < window.window_start_ms:
                        raise MalformedError(
                            f"telemetry window {window.seq} ends ({window.window_end_ms}) before it "
                            f"starts ({window.window_start_ms})"
                        )
                return _Decoded(device_id, channel, batch, msg.retained)
            if channel is Channel.SKETCH:
                sketches = sketch_pb2.SketchBatch.FromString(msg.payload)
                _check_owner(device_id, sketches.device_id, "sketch batch")
                for sketch in sketches.windows:
                    _check_int64("sketch seq", sketch.seq)
                    _check_int64("sketch samples", sketch.samples)
                    if sketch.window_end_ms < sketch.window_start_ms:
                        raise MalformedError(
                            f"sketch window {sketch.seq} ends ({sketch.window_end_ms}) before it "
                            f"starts ({sketch.window_start_ms})"
                        )
                return _Decoded(device_id, channel, sketches, msg.retained)
            if channel is Channel.EVENTS:
                event = event_pb2.Event.FromString(msg.payload)
                _check_owner(device_id, event.device_id, "event")
                _check_int64("event seq", event.seq)
                return _Decoded(device_id, channel, event, msg.retained)
        except DecodeError as e:
            raise MalformedError(f"payload is not a valid {channel.value} protobuf: {e}") from e
        except InvalidInputError as e:
            raise MalformedError(str(e)) from e
        return None  # a channel the hub does not store (yet)

    def ingest(self, messages: Sequence[InboundMessage]) -> None:
        """Store a batch; never raises for anything a device sent.

        Raises StoreUnavailableError when the database refused even a single message for a
        reason of its own: nothing of the batch is lost by offering it again (duplicates are
        ignored, a status applied twice is applied once).
        """
        decoded: list[_Decoded] = []
        malformed = rejected = ignored = 0
        for msg in messages:
            try:
                item = self.decode(msg)
            except MalformedError as e:
                malformed += 1
                log.warning("malformed message on %s: %s", msg.topic, e)
                continue
            except RejectedError as e:
                rejected += 1
                log.warning("rejected message on %s: %s", msg.topic, e)
                continue
            if item is None:
                ignored += 1
            else:
                decoded.append(item)
        self.stats.add(received=len(messages), malformed=malformed, rejected=rejected, ignored=ignored)
        if not decoded:
            return
        try:
            self._store_in_transaction(decoded)
        except Exception:
            # One bad row must not cost the whole batch: retry each message on its own.
            log.exception("storing a batch of %d messages failed; retrying one by one", len(decoded))
            for item in decoded:
                try:
                    self._store_in_transaction([item])
                except OperationalError as e:
                    raise StoreUnavailableError(
                        f"the database did not take a {item.channel} message of device {item.device_id}: "
                        f"{str(e.orig or e).splitlines()[0]}"
                    ) from e
                except Exception:
                    self.stats.add(failed=1)
                    log.exception("could not store a %s message of device %s", item.channel, item.device_id)

    def _store_in_transaction(self, items: Sequence[_Decoded]) -> None:
        now = self._clock()
        counts: dict[str, int] = {}
        with transaction(self._sessions) as session:
            counts = self._store(session, items, now)
        self.stats.add(**counts)
        gaps = counts.get("seq_gaps", 0)
        if gaps and self.on_seq_gap is not None:
            try:
                self.on_seq_gap(gaps)
            except Exception:  # a heal that cannot start must not fail a stored batch
                log.exception("reporting %d missing telemetry windows failed", gaps)
        if self._metrics is not None:
            # How late windows arrive, measured once their transaction committed (device clocks).
            for channel, name in ((Channel.TELEMETRY, "telemetry"), (Channel.SKETCH, "sketch")):
                ends = [
                    from_ms(w.window_end_ms) for i in items if i.channel is channel for w in i.message.windows
                ]
                self._metrics.windows(name, ends, now)

    def _store(self, session: Session, items: Sequence[_Decoded], now: datetime) -> dict[str, int]:
        fleet = self._topics.fleet
        windows: list[dict[str, Any]] = []
        sketches: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        rollback_rows: list[dict[str, Any]] = []
        # Reported labels before and after this batch, for the devices whose labels it changed.
        label_changes: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        statuses = 0
        heard: set[str] = set()  # devices that sent telemetry or events: their last_seen moves to now
        # Held for the whole batch: the session keeps unmodified rows only while someone else does.
        known_devices = _load_devices(session, {i.device_id for i in items if i.channel is Channel.STATUS})
        # A reconnect storm is mostly births of devices the hub has not stored yet: insert them first, in
        # one statement, so that each status below finds its row in the session. Otherwise each new
        # device costs a SELECT that finds nothing plus an INSERT of its own (the session flushes before
        # every lookup): 3,000 births in batches of 500 took 27 s on SQLite, 3.6 s with this, while the
        # broker queued (and past its limit dropped) what came meanwhile. A death of a device never seen
        # is left to ``apply_status``, which stores every field of a first status.
        born = _insert_new_devices(session, fleet, items, {d.id for d in known_devices}, now)
        known_devices += _load_devices(session, born)
        for item in items:
            if item.channel is Channel.STATUS:
                status: device_pb2.DeviceStatus = item.message
                seen_at = _status_seen_at(item, now)
                known = session.get(Device, status.device_id)
                before = dict(known.labels) if known is not None else {}
                device = devices.apply_status(session, fleet, status, seen_at=seen_at, now=now)
                if device.labels != before or device.id in label_changes:
                    first = label_changes[device.id][0] if device.id in label_changes else before
                    label_changes[device.id] = (first, dict(device.labels))
                statuses += 1
                continue
            heard.add(item.device_id)
            if item.channel is Channel.TELEMETRY:
                windows.extend(_window_row(item.device_id, w, now) for w in item.message.windows)
            elif item.channel is Channel.SKETCH:
                sketches.extend(_sketch_row(item.device_id, w, now) for w in item.message.windows)
            elif item.channel is Channel.EVENTS:
                events.append(_event_row(item.device_id, item.message, now))
                if item.message.kind == event_pb2.EVENT_KIND_ROLLED_BACK:
                    rollback_rows.append(rollbacks.row_from_event(item.device_id, item.message, now))
        _touch_all(session, fleet, heard, now)
        gaps = self._seqs.gaps(session, items)
        stored_windows = _insert_ignoring_duplicates(session, TelemetryWindow.__table__, windows)  # type: ignore[attr-defined]
        stored_sketches = _insert_ignoring_duplicates(session, SketchRecord.__table__, sketches)  # type: ignore[attr-defined]
        stored_events = _insert_ignoring_duplicates(session, DeviceEvent.__table__, events)  # type: ignore[attr-defined]
        table = DeviceRollback.__table__  # type: ignore[attr-defined]
        stored_rollbacks = _insert_ignoring_duplicates(session, table, rollback_rows)
        relabelled = labels.sync_reported_changes(session, label_changes)
        del known_devices
        return {
            "statuses": statuses,
            "labels": relabelled,
            "telemetry_windows": stored_windows,
            "sketch_windows": stored_sketches,
            "events": stored_events,
            "rollbacks": stored_rollbacks,
            "seq_gaps": gaps,
            "duplicates": (
                len(windows) - stored_windows + len(sketches) - stored_sketches + len(events) - stored_events
            ),
        }


def _status_seen_at(item: _Decoded, now: datetime) -> datetime | None:
    """When a status says its device was alive: now for a live one, its send time for a retained one
    the broker replayed (None when it has none)."""
    if not item.retained:
        return now
    sent_at_ms = item.message.sent_at_ms
    return min(from_ms(sent_at_ms), now) if sent_at_ms > 0 else None


@functools.cache
def _device_defaults() -> dict[str, Any]:
    """A new device row's columns with their defaults (built once: a model instance is costly)."""
    return Device(id="-", fleet="-").model_dump()


def _insert_new_devices(
    session: Session, fleet: str, items: Sequence[_Decoded], known: set[str], now: datetime
) -> set[str]:
    """Insert a bare row for each device whose first status in ``items`` is its first ever and not a
    death; ``apply_status`` fills it in. Returns their ids. Another replica inserting the same device
    at once is no conflict (ON CONFLICT DO NOTHING)."""
    rows: dict[str, dict[str, Any]] = {}
    skipped: set[str] = set()
    for item in items:
        device_id = item.device_id
        if (
            item.channel is not Channel.STATUS
            or device_id in known
            or device_id in rows
            or device_id in skipped
        ):
            continue
        status: device_pb2.DeviceStatus = item.message
        if devices.status_state(status) is DeviceState.OFFLINE:
            skipped.add(device_id)
            continue
        first = _status_seen_at(item, now) or now
        row = dict(_device_defaults())
        row.update(id=device_id, fleet=fleet, first_seen=first, last_seen=first, capabilities={}, labels={})
        row.update(operator_labels={})
        rows[device_id] = row
    _insert_ignoring_duplicates(session, Device.__table__, list(rows.values()), keys=["id"])  # type: ignore[attr-defined]
    return set(rows)


def _load_devices(session: Session, device_ids: set[str]) -> list[Device]:
    """Load the batch's devices into the session in one query, so that looking each
    one up by id (``session.get``) finds it there instead of asking the database once a message."""
    if not device_ids:
        return []
    return list(session.exec(select(Device).where(in_list(Device.id, device_ids))).all())


class _SeqTracker:
    """The highest telemetry seq this process stored per device, so a window in order asks nothing.

    A device's window is checked against the database only when this process has not seen the
    device yet or the window looks like a gap here (with several replicas the windows in between
    may have gone to another one). ~60 bytes a device; without it the check cost a tenth of the
    ingest of a batch of telemetry on SQLite.
    """

    def __init__(self) -> None:
        self._highest: dict[str, int] = {}
        self._lock = threading.Lock()

    def gaps(self, session: Session, items: Sequence[_Decoded]) -> int:
        """Windows missing between each device's highest stored seq and its lowest in ``items``.

        A first window ever, a redelivered one and a device that restarted its count show no gap.
        """
        lowest: dict[str, int] = {}
        highest: dict[str, int] = {}
        for item in items:
            if item.channel is Channel.TELEMETRY:
                for w in item.message.windows:
                    d = item.device_id
                    lowest[d] = min(lowest.get(d, w.seq), w.seq)
                    highest[d] = max(highest.get(d, w.seq), w.seq)
        if not lowest:
            return 0
        with self._lock:
            known = {d: self._highest.get(d) for d in lowest}
        ask = sorted(d for d, seen in known.items() if seen is None or lowest[d] > seen + 1)
        stored = _highest_stored(session, ask) if ask else {}
        missing = sum(lowest[d] - stored[d] - 1 for d in ask if d in stored and lowest[d] > stored[d] + 1)
        with self._lock:
            for d, top in highest.items():
                self._highest[d] = max(top, stored.get(d, 0), self._highest.get(d, 0))
        return missing


def _highest_stored(session: Session, device_ids: Sequence[str]) -> dict[str, int]:
    """Each device's highest stored telemetry seq (devices with none: absent), on the unique index."""
    table = TelemetryWindow.__table__  # type: ignore[attr-defined]
    stmt = (
        select(table.c.device_id, func.max(table.c.seq))
        .where(in_list(table.c.device_id, device_ids))
        .group_by(table.c.device_id)
    )
    return {d: top for d, top in session.execute(stmt) if top is not None}


def _touch_all(session: Session, fleet: str, device_ids: set[str], now: datetime) -> None:
    """``devices.touch`` for many devices at once: one UPDATE of ``last_seen`` for the batch,
    which names the devices it found (loading each row only to move one timestamp would
    cost more than the rest of a batch). ``last_seen`` only moves forward, as in ``touch``."""
    table = Device.__table__  # type: ignore[attr-defined]
    # On the table, not the mapped class: rows this session holds (statuses of the same batch)
    # are left as they are rather than synchronised, and the ORM's bulk machinery is skipped.
    ids = sorted(device_ids)
    stmt = (
        update(table)
        .where(in_list(table.c.id, ids))
        .values(last_seen=case((table.c.last_seen < now, now), else_=table.c.last_seen))
        .returning(table.c.id)
    )
    found = set(session.execute(stmt).scalars())
    for device_id in ids:
        if device_id not in found:
            devices.touch(session, device_id, fleet, now)  # heard before its first status


def _window_row(device_id: str, w: telemetry_pb2.TelemetryWindow, now: datetime) -> dict[str, Any]:
    has_resources = w.HasField("resources")
    return {
        "device_id": device_id,
        "seq": w.seq,
        "window_start": from_ms(w.window_start_ms),
        "window_end": from_ms(w.window_end_ms),
        "model_name": w.model_name,
        "model_version": w.model_version,
        "requests": min(w.requests, _MAX_INT64),
        "errors": min(w.errors, _MAX_INT64),
        "p50_ms": w.latency.p50_ms,
        "p95_ms": w.latency.p95_ms,
        "p99_ms": w.latency.p99_ms,
        "mean_ms": w.latency.mean_ms,
        "max_ms": w.latency.max_ms,
        # Absent from agents older than ResourceUsage: NULL, not a claim of zero use.
        "cpu_percent": w.resources.cpu_percent if has_resources else None,
        "rss_bytes": min(w.resources.rss_bytes, _MAX_INT64) if has_resources else None,
        "peak_rss_bytes": min(w.resources.peak_rss_bytes, _MAX_INT64) if has_resources else None,
        "received_at": now,
    }


def _sketch_row(device_id: str, w: sketch_pb2.SketchWindow, now: datetime) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "seq": w.seq,
        "window_start": from_ms(w.window_start_ms),
        "window_end": from_ms(w.window_end_ms),
        "model_name": w.model_name,
        "model_version": w.model_version,
        "samples": w.samples,
        # Kept whole: the rollup merges the sketches, and scoring may read fields this hub does not.
        "payload": w.SerializeToString(),
        "received_at": now,
    }


def event_kind(kind: int) -> str:
    """``EVENT_KIND_ROLLED_BACK`` -> ``"rolled_back"``; a kind newer than this hub stays readable."""
    try:
        return event_pb2.EventKind.Name(kind).removeprefix("EVENT_KIND_").lower()  # type: ignore[arg-type]
    except ValueError:
        return f"unknown_{kind}"


def event_details(e: event_pb2.Event) -> dict[str, Any]:
    """The event's details with their types: ``data`` over the text map older agents send alone."""
    details: dict[str, Any] = dict(e.details)
    for key, value in e.data.items():
        kind = value.WhichOneof("kind")
        if kind is None:
            continue  # a value kind newer than this hub: keep the text copy, if any
        typed = getattr(value, kind)
        # JSON (and PostgreSQL's json type above all) has no NaN or infinity: keep those as text.
        details[key] = typed if not isinstance(typed, float) or math.isfinite(typed) else str(typed)
    return details


def _event_row(device_id: str, e: event_pb2.Event, now: datetime) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "seq": e.seq,
        "ts": from_ms(e.ts_ms),
        "kind": event_kind(e.kind),
        "model_name": e.model.name,
        "model_version": e.model.version,
        "model_sha256": e.model.sha256,
        "reason": e.reason,
        "details": event_details(e),
        "generation": min(e.generation, _MAX_INT64),
        "received_at": now,
    }


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _insert_ignoring_duplicates(
    session: Session, table: Table, rows: list[dict[str, Any]], *, keys: list[str] | None = None
) -> int:
    """INSERT ... ON CONFLICT (device_id, seq) DO NOTHING (or ``keys``); returns how many rows were new."""
    keys = keys or _KEYS
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        # One single-row statement stepped once per row by the driver (executemany), prepared once
        # per connection. Multi-row VALUES would be a new statement for every row count, and SQLite
        # keeps each in the connection's statement cache: 0.8 MiB for 500 device rows.
        single = sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
        # sqlite3 sums the rows each step changed: a duplicate changes none.
        return cast(CursorResult[Any], session.execute(single, rows)).rowcount
    if dialect != "postgresql":
        raise RuntimeError(f"unsupported database dialect {dialect!r}: expected sqlite or postgresql")
    stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    # The rows go as parameters of one statement (SQLAlchemy's "insertmanyvalues" turns them into
    # multi-row INSERTs), so the statement is compiled once per process, not once per batch.
    returning = stmt.returning(table.c.id)
    inserted = 0
    for chunk in _chunks(rows, _ROWS_PER_INSERT):
        inserted += len(session.execute(returning, chunk).all())
    return inserted
