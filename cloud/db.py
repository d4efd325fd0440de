"""Database engine and sessions, the same on SQLite and PostgreSQL.

SQLite is the single-machine default. Its writers are serialised with ``BEGIN IMMEDIATE``:
the hub writes from several threads (ingest worker, API requests), and a deferred
transaction that reads and then writes fails at once with SQLITE_BUSY when another
writer got in between, without waiting on the busy timeout.

Reads that write nothing take no write lock: :func:`read_session_factory` makes sessions
that begin a deferred transaction (SQLite, ``PRAGMA query_only`` on) or a read-only one
(PostgreSQL). In WAL mode such a reader sees the last committed state and neither waits
for a writer nor holds one up, so the artifact service's per-download check does not
queue behind telemetry writes.

The schema is versioned (cloud.migrations): :func:`prepare_schema` is what a hub does with a
database when it starts, :func:`upgrade_schema` what `fleet db upgrade` does.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Session, create_engine

from cloud.errors import HubError

if TYPE_CHECKING:
    from cloud.migrations.state import SchemaStatus

SessionFactory = Callable[[], Session]

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Prepared statements each SQLite connection keeps (Python's default is 128). The hub's hot paths
# run a few statements whose text does not change with the batch (cloud.sql_lists, executemany);
# what else a connection prepares (API queries, each filter a new text) need not stay: each takes
# 5 to 100 KiB per pooled connection, and re-preparing one costs microseconds.
SQLITE_CACHED_STATEMENTS = 32

# Execution option that marks a connection's transactions as read-only (see read_session_factory).
READ_ONLY = "edgefleet_read_only"


class DatabaseError(HubError):
    """The database could not be reached or set up."""


class SchemaMismatchError(DatabaseError):
    """The database's schema is not the one this hub runs on; the message says what to do."""


# Seconds to wait for PostgreSQL to accept a connection.
PG_CONNECT_TIMEOUT_S = 10


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL; a bare ``postgresql://`` would ask for psycopg2."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise DatabaseError(f"invalid database URL: expected sqlite:///path or postgresql://...: {e}") from e
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url`` (sqlite:///... or postgresql+psycopg://...)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "cached_statements": SQLITE_CACHED_STATEMENTS,
            },
        )
        _configure_sqlite(engine)
        return engine
    # A server that does not answer at all (a dropped route, a firewall) would otherwise hang the hub's
    # start and every request for the kernel's TCP timeout; libpq's connect_timeout bounds it.
    return create_engine(
        url, echo=echo, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S}
    )


def _enter_wal(cursor: Any, *, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
    """Put the database in WAL mode (it stays so: the mode is kept in the file).

    Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is locked"
    at once, without its busy handler, when another connection is opening or switching the same
    file (hubs starting together on one new database). So it is retried here, with back-off, for
    as long as the busy timeout lets any other statement wait.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # back-off on a file lock: SQLite offers nothing to wait on
        pause = min(pause * 2, 0.2)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" hook below.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            _enter_wal(cursor)
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY, False):
            # Deferred: takes a read snapshot at the first SELECT and never the write lock.
            # query_only turns a write that slipped in into an error instead of a lock grab.
            conn.exec_driver_sql("PRAGMA query_only=ON")
            conn.exec_driver_sql("BEGIN")
        else:
            # Pooled connections are shared by both kinds of session.
            conn.exec_driver_sql("PRAGMA query_only=OFF")
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_all(engine: Engine) -> None:
    """Build an empty database to this hub's schema, or check that it is there (idempotent).

    A database at an older or unknown revision, or one made before migrations existed, is
    left alone: DatabaseError says what it is (`fleet db upgrade` moves it on).
    """
    prepare_schema(engine, auto_upgrade=False)


@dataclass(frozen=True)
class SchemaChange:
    """What preparing or upgrading did: where the database was, and where it is now."""

    before: SchemaStatus
    after: str | None  # the revision it is at now
    # An unversioned database's tables matched this revision, recorded before upgrading from it.
    adopted: str | None = None

    @property
    def changed(self) -> bool:
        return self.before.revision != self.after or self.adopted is not None


def prepare_schema(engine: Engine, *, auto_upgrade: bool) -> SchemaChange:
    """What the hub does on start: build an empty database, start on one at head, refuse the rest.

    With ``auto_upgrade`` an older (or unversioned) database is upgraded as `fleet db upgrade`
    would; one newer than this hub is always refused (see cloud.migrations.state).
    """
    return _apply(engine, upgrade_old=auto_upgrade)


def upgrade_schema(engine: Engine) -> SchemaChange:
    """`fleet db upgrade`: bring the database to this hub's head from wherever it knows."""
    return _apply(engine, upgrade_old=True)


def _apply(engine: Engine, *, upgrade_old: bool) -> SchemaChange:
    # Imported here: Alembic takes a quarter of a second to import, and every `fleet` command that
    # only talks to the API imports this module.
    from cloud.migrations import runner
    from cloud.migrations.runner import migration_connection
    from cloud.migrations.state import (
        Action,
        SchemaError,
        action_for,
        adopt_unversioned,
        build_empty,
        schema_status,
    )

    try:
        with migration_connection(engine) as conn:
            status = schema_status(conn)
            adopted = None
            match action_for(status.state, upgrade=upgrade_old):
                case Action.BUILD:
                    build_empty(conn)
                case Action.START:
                    pass
                case Action.UPGRADE:
                    runner.upgrade(conn, "head")
                case Action.ADOPT:
                    adopted = adopt_unversioned(conn)
                    runner.upgrade(conn, "head")
                case Action.REFUSE:
                    raise SchemaError(status.describe())
            return SchemaChange(status, runner.current_revision(conn), adopted)
    except SchemaError as e:
        raise SchemaMismatchError(str(e)) from e
    except SQLAlchemyError as e:
        raise DatabaseError(f"could not set up the schema at {engine.url!r}: {e}") from e


def session_factory(engine: Engine) -> SessionFactory:
    """Sessions whose objects stay readable after commit (handlers return them)."""

    def new_session() -> Session:
        return Session(engine, expire_on_commit=False)

    return new_session


def read_session_factory(engine: Engine) -> SessionFactory:
    """Sessions for reads only: no write lock on SQLite, a READ ONLY transaction on PostgreSQL.

    A write through one of them fails (SQLite: "attempt to write a readonly database";
    PostgreSQL: "cannot execute ... in a read-only transaction") rather than taking a lock.
    """
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    reader = engine.execution_options(**options)

    def new_session() -> Session:
        return Session(reader, expire_on_commit=False)

    return new_session


@contextmanager
def read_transaction(factory: SessionFactory) -> Iterator[Session]:
    """A read-only session (from :func:`read_session_factory`) whose transaction ends with the block."""
    with factory() as session:
        try:
            yield session
        finally:
            # Nothing to keep: rolling back ends the snapshot, so the next read sees new commits.
            session.rollback()


@contextmanager
def transaction(factory: SessionFactory) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def ping(engine: Engine) -> bool:
    """Whether the database answers a trivial query."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except SQLAlchemyError:
        return False
    return True
