"""Audit rows for every mutation an API request makes, written in the mutation's own transaction.

Two SQLAlchemy session hooks, active only while a request's actor is known
(``cloud.api.requestctx.current_actor()``, set by the API's authentication):

- ``after_flush``: each object the flush inserted, changed or deleted becomes one row. The hook runs
  once the statements have run, so new rows have their primary keys, while the session still lists
  what it flushed and each attribute's history still holds the value it replaced.
- ``do_orm_execute``: a bulk ``update()``/``delete()``/``insert()`` run through a session changes rows
  the session never loaded; it becomes one row whose ``after`` holds the statement and its parameters.

Rows are inserted with a Core statement on the session's connection: they commit or roll back with
the change they describe, and they fire neither hook again. Scheduler, ingest and CLI work runs with
no actor and is not recorded here; what devices report is in its own tables already.

What a row never holds: token and session digests, columns named like secrets, and binary columns
(key material, signed envelopes, metadata files), which appear as ``"<N bytes>"``.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Delete, Insert, LargeBinary, Update, event, insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from sqlalchemy.orm.base import NO_VALUE

from cloud.api.requestctx import Actor, current_actor, current_request_id, set_actor
from cloud.audit.tables import AuditEntry
from cloud.clock import Clock, utcnow

__all__ = ["EXCLUDED_TABLES", "RequestInfo", "bind_request", "install", "recording"]

log = logging.getLogger(__name__)

# Written at high volume from device reports; the log itself; and signed_desired, the director's signature
# over a desired_state row that is recorded already (one more row per device of every assignment).
EXCLUDED_TABLES = frozenset(
    {
        "audit_entry",
        "telemetry_window",
        "device_event",
        "sketch_record",
        "cohort_rollup",
        "cohort_metric",
        "signed_desired",
    }
)
# Digests that would let an offline guess be checked; never copied into the log.
_SECRET_COLUMNS = frozenset(
    {("api_token", "token_sha256"), ("ui_session", "session_sha256"), ("ui_session", "csrf_sha256")}
)
_SECRET_NAME = re.compile(r"secret|password|passphrase|private", re.IGNORECASE)
_MAX_SQL = 2000
# Rows of one bulk insert or executemany copied into its entry; the count says how many there were.
_MAX_PARAMETER_ROWS = 100
_MAX_TEXT = 4096


@dataclass(frozen=True)
class RequestInfo:
    """What a row needs to know of the request beyond its actor and id."""

    fleet: str
    clock: Clock = utcnow
    # The request's method and route template, e.g. "DELETE /api/v1/cohorts/{name}".
    operation: str = ""


_request: ContextVar[RequestInfo | None] = ContextVar("edgefleet_audit_request", default=None)


@contextmanager
def bind_request(info: RequestInfo) -> Iterator[None]:
    token = _request.set(info)
    try:
        yield
    finally:
        _request.reset(token)


@contextmanager
def recording(actor: Actor, info: RequestInfo) -> Iterator[None]:
    """Record as ``actor`` outside an authenticated request (the login route, tests, tools)."""
    previous = current_actor()
    set_actor(actor)
    try:
        with bind_request(info):
            yield
    finally:
        set_actor(previous)


def install() -> None:
    """Listen on every SQLAlchemy session (idempotent). Nothing is recorded while no actor is set."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
    if not event.contains(Session, "do_orm_execute", _on_execute):
        event.listen(Session, "do_orm_execute", _on_execute)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "..."
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def _hidden(table: str, name: str) -> bool:
    return (table, name) in _SECRET_COLUMNS or bool(_SECRET_NAME.search(name))


def _columns(obj: Any) -> Iterator[tuple[str, str, bool]]:
    """(attribute key, column name, is binary) of each column an object maps, secrets left out."""
    mapper = sa_inspect(obj).mapper
    table = mapper.local_table.name
    for attr in mapper.column_attrs:
        column = attr.columns[0]
        if not _hidden(table, column.name):
            yield attr.key, column.name, isinstance(column.type, LargeBinary)


def _value(binary: bool, value: Any) -> Any:
    if binary and value is not None and value is not NO_VALUE:
        return f"<{len(bytes(value))} bytes>"
    return _jsonable(value)


def _snapshot(obj: Any) -> dict[str, Any]:
    """The loaded column values, without loading any (no SQL inside a flush)."""
    state = sa_inspect(obj)
    out: dict[str, Any] = {}
    for key, name, binary in _columns(obj):
        value = state.attrs[key].loaded_value
        if value is not NO_VALUE:
            out[name] = _value(binary, value)
    return out


def _changes(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The changed columns' values before and after the flush."""
    state = sa_inspect(obj)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, name, binary in _columns(obj):
        history = state.attrs[key].history
        if not history.added and not history.deleted:
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else None
        if old == new:
            continue
        before[name] = _value(binary, old)
        after[name] = _value(binary, new)
    return before, after


def _table_of(obj: Any) -> str:
    return str(sa_inspect(obj).mapper.local_table.name)


def _object_id(obj: Any) -> str:
    mapper = sa_inspect(obj).mapper
    return "/".join(str(v) for v in mapper.primary_key_from_instance(obj))[:255]


def _row(
    actor: Actor, info: RequestInfo, action: str, object_type: str, object_id: str | None, **values: Any
) -> dict[str, Any]:
    return {
        "at": info.clock(),
        "fleet": info.fleet,
        "actor": actor.name,
        "actor_role": actor.role,
        "via": actor.via,
        "action": action,
        "operation": info.operation[:255],
        "object_type": object_type,
        "object_id": object_id,
        "before": values.get("before"),
        "after": values.get("after"),
        "request_id": current_request_id(),
    }


def _after_flush(session: Session, _context: UOWTransaction) -> None:
    actor = current_actor()
    if actor is None:
        return
    info = _request.get() or RequestInfo(fleet="")
    rows: list[dict[str, Any]] = []
    for obj in session.new:
        if (table := _table_of(obj)) not in EXCLUDED_TABLES:
            rows.append(_row(actor, info, "create", table, _object_id(obj), after=_snapshot(obj)))
    for obj in session.dirty:
        if (table := _table_of(obj)) in EXCLUDED_TABLES:
            continue
        before, after = _changes(obj)
        if after or before:
            rows.append(_row(actor, info, "update", table, _object_id(obj), before=before, after=after))
    for obj in session.deleted:
        if (table := _table_of(obj)) not in EXCLUDED_TABLES:
            rows.append(_row(actor, info, "delete", table, _object_id(obj), before=_snapshot(obj)))
    if rows:
        session.connection().execute(insert(AuditEntry.__table__), rows)  # type: ignore[attr-defined]


def _on_execute(state: ORMExecuteState) -> None:
    actor = current_actor()
    statement = state.statement
    if actor is None or not isinstance(statement, Update | Delete | Insert):
        return
    table = getattr(statement.table, "name", "")
    if not table or table in EXCLUDED_TABLES:
        return
    action = (
        "update" if isinstance(statement, Update) else "delete" if isinstance(statement, Delete) else "create"
    )
    session = state.session
    if isinstance(statement, Insert):
        # Compiling an ORM bulk insert outside its execution breaks that execution: its rows say it all.
        after: dict[str, Any] = {"sql": f"INSERT INTO {table}"}
    else:
        compiled = statement.compile(dialect=session.get_bind().dialect)
        params = {k: v for k, v in compiled.params.items() if not _hidden(table, k)}
        after = {"sql": str(compiled)[:_MAX_SQL], "parameters": _jsonable(params)}
    given = state.parameters
    if given:
        many: list[Mapping[str, Any]] = (
            list(given) if isinstance(given, list) else [cast(Mapping[str, Any], given)]
        )
        after["rows"] = len(many)
        after["row_values"] = [
            {k: _jsonable(v) for k, v in row.items() if not _hidden(table, k)}
            for row in many[:_MAX_PARAMETER_ROWS]
        ]
    info = _request.get() or RequestInfo(fleet="")
    session.connection().execute(
        insert(AuditEntry.__table__),  # type: ignore[attr-defined]
        [_row(actor, info, action, table, None, after=after)],
    )
