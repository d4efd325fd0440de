"""Cohort rollups: every window of a cohort's devices on one model version, per time bucket.

``rebuild`` finds the buckets that received raw rows (telemetry windows, sketch records) since
the last rebuild and rebuilds each one whole from all of its raw rows, for the fleet
(``FLEET_SCOPE``) and for every cohort of the fleet, with membership as it is now. A window
belongs to the bucket its end falls in, so a window that arrives late lands in an old bucket,
which is rebuilt like any other: rollups hold no running totals that a late or duplicate row
could skew, and rebuilding twice writes the same rows.

"Since the last rebuild" is read from the rollups themselves: the latest ``updated_at`` of the
fleet's rollups, less ``SETTLE_S``. A row's ``received_at`` is stamped before its transaction
commits, so a row can become visible after a rebuild that began later than its stamp; looking
back ``SETTLE_S`` finds it at the next cycle. The same look-back heals two hub replicas that
rebuilt one bucket at once and the one with the older snapshot wrote last: both run again on
the next cycle with the newer rows in view.

Volume: a bucket is read with two set-based queries (telemetry sums grouped by device, the
bucket's sketches ordered by device), whatever the fleet's size. Each device's sketches are
merged once, then merged into every scope the device belongs to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError
from sqlalchemy import BigInteger, ColumnElement, Integer, Select, cast, delete, extract, func, literal, union
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from cloud.db import SessionFactory, read_session_factory, read_transaction, transaction
from cloud.errors import InvalidInputError
from cloud.models import Cohort, Device, TelemetryWindow
from cloud.services.cohorts import member_ids_query
from cloud.telemetry.merge import DEFAULT_K, SketchMergeError, SketchMerger
from cloud.telemetry.tables import FLEET_SCOPE, CohortRollup, SketchRecord
from edgefleet_proto.v1 import sketch_pb2

__all__ = ["DEFAULT_RAW_RETENTION_S", "SETTLE_S", "RollupKey", "bucket_start", "rebuild"]

log = logging.getLogger(__name__)

# How long after its received_at stamp a raw row may still become visible (ingest's transaction,
# SQLite's busy timeout of 30 s at worst, clocks of hub replicas that differ a little).
SETTLE_S = 120
# Settings.raw_retention_s's default: buckets older than the raw retention are not rebuilt, since
# their raw rows are (or are about to be) expired and a rebuild would keep only the late ones.
DEFAULT_RAW_RETENTION_S = 7 * 86_400

_KEY = ("fleet", "cohort_id", "model_name", "model_version", "bucket_start")
_TW = TelemetryWindow.__table__  # type: ignore[attr-defined]
_SR = SketchRecord.__table__  # type: ignore[attr-defined]
_CR = CohortRollup.__table__  # type: ignore[attr-defined]


class RollupKey(NamedTuple):
    cohort_id: int
    model_name: str
    model_version: str
    bucket_start: datetime


def bucket_start(moment: datetime, bucket_s: int) -> datetime:
    """The start of the bucket ``moment`` falls in (buckets are aligned on the Unix epoch)."""
    seconds = int(moment.timestamp() // bucket_s) * bucket_s
    return datetime.fromtimestamp(seconds, UTC)


@dataclass
class _Totals:
    """Telemetry sums of one device, or of one scope, in one bucket."""

    windows: int = 0
    requests: int = 0
    errors: int = 0
    p95_weighted: float = 0.0  # sum of p95_ms x requests
    cpu_sum: float = 0.0
    cpu_windows: int = 0
    rss_max: int | None = None

    def add(self, other: _Totals) -> None:
        self.windows += other.windows
        self.requests += other.requests
        self.errors += other.errors
        self.p95_weighted += other.p95_weighted
        self.cpu_sum += other.cpu_sum
        self.cpu_windows += other.cpu_windows
        if other.rss_max is not None:
            self.rss_max = other.rss_max if self.rss_max is None else max(self.rss_max, other.rss_max)


@dataclass
class _Scope:
    cohort_id: int
    members: frozenset[str] | None  # None: every device of the fleet
    devices: set[str] = field(default_factory=set)
    totals: _Totals = field(default_factory=_Totals)
    sketches: SketchMerger | None = None

    def holds(self, device_id: str) -> bool:
        return self.members is None or device_id in self.members


@dataclass(frozen=True)
class _Bucket:
    """One bucket of one model version, over every scope of the fleet."""

    fleet: str
    model_name: str
    model_version: str
    start: datetime
    bucket_s: int

    def where(self, table: Any) -> list[ColumnElement[bool]]:
        """The bucket's raw rows in ``table`` (joined with Device)."""
        return [
            col(Device.fleet) == self.fleet,
            table.c.model_name == self.model_name,
            table.c.model_version == self.model_version,
            table.c.window_end >= self.start,
            table.c.window_end < self.start + timedelta(seconds=self.bucket_s),
        ]

    def key(self, cohort_id: int) -> RollupKey:
        return RollupKey(cohort_id, self.model_name, self.model_version, self.start)


def rebuild(
    sessions: SessionFactory,
    *,
    fleet: str,
    bucket_s: int,
    now: datetime,
    since: datetime | None = None,
    raw_retention_s: int = DEFAULT_RAW_RETENTION_S,
    k: int = DEFAULT_K,
) -> list[RollupKey]:
    """Rebuild every rollup bucket of ``fleet`` that received raw rows after ``since`` (None: since the
    last rebuild, see the module's docstring); returns the keys written, for the scorers.

    Buckets that end before ``now - raw_retention_s`` or start after ``now`` (a device clock far
    off) are left as they are.
    """
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be a positive number of seconds, got {bucket_s}")
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now.isoformat()}")
    reads = read_session_factory(_engine(sessions))
    with read_transaction(reads) as session:
        mark = since if since is not None else _watermark(session, fleet, bucket_s)
        dirty = _dirty_buckets(session, fleet, bucket_s, mark)
        scopes = _scopes(session, fleet)
    oldest = now - timedelta(seconds=raw_retention_s)
    keys: list[RollupKey] = []
    skipped = 0
    for model_name, model_version, start in sorted(dirty):
        if start + timedelta(seconds=bucket_s) <= oldest or start > now:
            skipped += 1
            continue
        bucket = _Bucket(fleet, model_name, model_version, start, bucket_s)
        keys.extend(_rebuild_bucket(reads, sessions, bucket, scopes, now=now, k=k))
    if skipped:
        log.info("%d bucket(s) of fleet %r outside [now - raw retention, now] not rebuilt", skipped, fleet)
    return keys


def _engine(sessions: SessionFactory) -> Engine:
    with sessions() as session:
        bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def _watermark(session: Session, fleet: str, bucket_s: int) -> datetime | None:
    """Rows received after this may be in no rollup yet (None: nothing was ever rolled up).

    The look-back is at most one bucket: with buckets shorter than ``SETTLE_S`` (a demo's 10 s) a
    full look-back would rebuild a dozen buckets every cycle for rows that settle within seconds.
    """
    latest = session.exec(
        select(func.max(CohortRollup.updated_at)).where(
            CohortRollup.fleet == fleet, CohortRollup.cohort_id == FLEET_SCOPE
        )
    ).one()
    return None if latest is None else latest - timedelta(seconds=min(SETTLE_S, bucket_s))


def _bucket_seconds(column: Any, bucket_s: int, dialect: str) -> ColumnElement[Any]:
    """The epoch second a bucket starts at, for a timestamp column, in SQL."""
    if dialect == "sqlite":
        # Stored as UTC text; strftime('%s') reads it as UTC. Integer division floors positive epochs.
        epoch = cast(func.strftime("%s", column), Integer)
        return (epoch // literal(bucket_s)) * literal(bucket_s)
    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", column) / bucket_s) * bucket_s, BigInteger)
    raise RuntimeError(f"unsupported database dialect {dialect!r}: expected sqlite or postgresql")


def _dirty_buckets(
    session: Session, fleet: str, bucket_s: int, mark: datetime | None
) -> set[tuple[str, str, datetime]]:
    dialect = session.get_bind().dialect.name
    parts: list[Select[Any]] = []
    for table in (_TW, _SR):
        bucket = _bucket_seconds(table.c.window_end, bucket_s, dialect)
        query = (
            sa_select(table.c.model_name, table.c.model_version, bucket)
            .join(Device, col(Device.id) == table.c.device_id)
            .where(col(Device.fleet) == fleet)
            .distinct()
        )
        if mark is not None:
            query = query.where(table.c.received_at > mark)
        parts.append(query)
    rows = session.execute(union(*parts)).all()
    return {(name, version, datetime.fromtimestamp(int(start), UTC)) for name, version, start in rows}


def _scopes(session: Session, fleet: str) -> list[_Scope]:
    """The fleet, then each cohort with its members as they are now."""
    scopes = [_Scope(FLEET_SCOPE, None)]
    for cohort in session.exec(select(Cohort).where(Cohort.fleet == fleet).order_by(col(Cohort.id))):
        assert cohort.id is not None
        try:
            members = frozenset(session.exec(member_ids_query(fleet, cohort)).all())
        except InvalidInputError as e:
            log.warning(
                "cohort %r of fleet %r gets no rollups: its selector does not parse: %s",
                cohort.name,
                fleet,
                e,
            )
            continue
        scopes.append(_Scope(cohort.id, members))
    return scopes


def _device_totals(session: Session, bucket: _Bucket) -> dict[str, _Totals]:
    tw = _TW.c
    query = (
        sa_select(
            tw.device_id,
            func.count(),
            func.sum(tw.requests),
            func.sum(tw.errors),
            func.sum(tw.p95_ms * tw.requests),
            func.sum(tw.cpu_percent),
            func.count(tw.cpu_percent),
            func.max(tw.rss_bytes),
        )
        .join(Device, col(Device.id) == tw.device_id)
        .where(*bucket.where(_TW))
        .group_by(tw.device_id)
    )
    return {
        device_id: _Totals(
            windows=int(windows),
            requests=int(requests or 0),
            errors=int(errors or 0),
            p95_weighted=float(weighted or 0.0),
            cpu_sum=float(cpu or 0.0),
            cpu_windows=int(cpu_windows),
            rss_max=None if rss is None else int(rss),
        )
        for device_id, windows, requests, errors, weighted, cpu, cpu_windows, rss in session.execute(query)
    }


def _device_sketches(
    session: Session, bucket: _Bucket, *, k: int, problems: list[str]
) -> Iterator[tuple[str, SketchMerger]]:
    """Each device's sketches of the bucket, merged; a window that cannot be merged is noted and skipped."""
    sr = _SR.c
    query = (
        sa_select(sr.device_id, sr.seq, sr.payload)
        .join(Device, col(Device.id) == sr.device_id)
        .where(*bucket.where(_SR))
        .order_by(sr.device_id, sr.seq)
        .execution_options(yield_per=500)
    )
    current: str | None = None
    merger = SketchMerger(k=k)
    for device_id, seq, payload in session.execute(query):
        if device_id != current:
            if current is not None and merger.windows:
                yield current, merger
            current, merger = device_id, SketchMerger(k=k)
        try:
            merger.add(sketch_pb2.SketchWindow.FromString(payload))
        except (DecodeError, SketchMergeError) as e:
            problems.append(f"device {device_id} window {seq}: {e}")
    if current is not None and merger.windows:
        yield current, merger


def _rebuild_bucket(
    reads: SessionFactory,
    sessions: SessionFactory,
    bucket: _Bucket,
    scopes: Sequence[_Scope],
    *,
    now: datetime,
    k: int,
) -> list[RollupKey]:
    scopes = [_Scope(s.cohort_id, s.members) for s in scopes]  # fresh sums for this bucket
    problems: list[str] = []
    with read_transaction(reads) as session:
        for device_id, totals in _device_totals(session, bucket).items():
            for scope in _holding(scopes, device_id):
                scope.devices.add(device_id)
                scope.totals.add(totals)
        for device_id, merger in _device_sketches(session, bucket, k=k, problems=problems):
            for scope in _holding(scopes, device_id):
                scope.devices.add(device_id)
                if scope.sketches is None:
                    scope.sketches = SketchMerger(k=k)
                try:
                    scope.sketches.absorb(merger)
                except SketchMergeError as e:
                    problems.append(f"device {device_id} in cohort {scope.cohort_id}: {e}")
    if problems:
        log.warning(
            "rollup of fleet %r %s %s at %s left out %d sketch window(s) that could not be merged; first: %s",
            bucket.fleet, bucket.model_name, bucket.model_version, bucket.start.isoformat(),
            len(problems), problems[0],
        )  # fmt: skip
    rows = [_row(bucket, scope, now) for scope in scopes if scope.devices]
    with transaction(sessions) as session:
        # A cohort none of whose members has a window in the bucket now: its old rollup is stale.
        session.execute(
            delete(_CR).where(
                _CR.c.fleet == bucket.fleet,
                _CR.c.model_name == bucket.model_name,
                _CR.c.model_version == bucket.model_version,
                _CR.c.bucket_start == bucket.start,
                _CR.c.cohort_id.not_in([row["cohort_id"] for row in rows]),
            )
        )
        _upsert(session, rows)
    return [bucket.key(row["cohort_id"]) for row in rows]


def _holding(scopes: Iterable[_Scope], device_id: str) -> Iterator[_Scope]:
    return (scope for scope in scopes if scope.holds(device_id))


def _row(bucket: _Bucket, scope: _Scope, now: datetime) -> dict[str, Any]:
    t = scope.totals
    merged = scope.sketches.result() if scope.sketches is not None else None
    return {
        "fleet": bucket.fleet,
        "cohort_id": scope.cohort_id,
        "model_name": bucket.model_name,
        "model_version": bucket.model_version,
        "bucket_start": bucket.start,
        "bucket_s": bucket.bucket_s,
        "devices": len(scope.devices),
        "windows": t.windows,
        "requests": t.requests,
        "errors": t.errors,
        "p95_ms": t.p95_weighted / t.requests if t.requests else None,
        "cpu_percent": t.cpu_sum / t.cpu_windows if t.cpu_windows else None,
        "rss_bytes": t.rss_max,
        "samples": merged.samples if merged is not None else 0,
        "sketch": merged.SerializeToString() if merged is not None else b"",
        "updated_at": now,
    }


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(_CR)
    elif dialect == "sqlite":
        stmt = sqlite.insert(_CR)
    else:
        raise RuntimeError(f"unsupported database dialect {dialect!r}: expected sqlite or postgresql")
    updated = {name: stmt.excluded[name] for name in rows[0] if name not in _KEY}
    session.execute(stmt.on_conflict_do_update(index_elements=list(_KEY), set_=updated), rows)
