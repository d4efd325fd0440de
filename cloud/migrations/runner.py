"""Alembic driven from code: its configuration, and the operations the hub and `fleet db` use.

Everything runs on a connection the caller holds (see :func:`migration_connection`), so that
looking at the schema and changing it happen in one transaction: on PostgreSQL under an
advisory lock, so two hub replicas starting at once do not both migrate; on SQLite under
``BEGIN IMMEDIATE`` (cloud.db), which serialises writers the same way.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from cloud.migrations.schema import VERSION_TABLE, hub_metadata, include_name

__all__ = [
    "MIGRATION_LOCK_KEY",
    "RevisionInfo",
    "alembic_config",
    "current_revision",
    "differences",
    "downgrade",
    "head_revision",
    "history",
    "known_revisions",
    "migration_connection",
    "script_directory",
    "stamp",
    "upgrade",
]

# pg_advisory_xact_lock's key: any fixed 64-bit number that nothing else in the database uses.
MIGRATION_LOCK_KEY = zlib.crc32(b"edgefleet.migrations")

_SCRIPTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class RevisionInfo:
    revision: str
    down_revision: str | None
    message: str


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini, works from an installed package."""
    config = Config()
    # Config options go through configparser, which reads "%" as interpolation.
    config.set_main_option("script_location", str(_SCRIPTS).replace("%", "%%"))
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    # Read once: the revisions a process ships with do not change while it runs, and reading
    # them again on every database that tests open would cost more than building the schema.
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    if head is None:  # only a broken install has no revisions
        raise RuntimeError(f"no migrations found in {_SCRIPTS / 'versions'}")
    return head


def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in script_directory().walk_revisions())


def history() -> list[RevisionInfo]:
    """Every revision, the newest first."""
    infos = []
    for script in script_directory().walk_revisions():
        down = script.down_revision
        infos.append(
            RevisionInfo(
                revision=script.revision,
                down_revision=down if isinstance(down, str) or down is None else ",".join(down),
                message=(script.doc or "").strip(),
            )
        )
    return infos


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in the database (None: not under migrations, or empty)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(connection: Connection, target: str = "head") -> None:
    command.upgrade(alembic_config(connection), target)


def downgrade(connection: Connection, target: str) -> None:
    command.downgrade(alembic_config(connection), target)


def stamp(connection: Connection, revision: str) -> None:
    """Record ``revision`` as the database's without running anything."""
    # Not command.stamp: that reads every revision file again, on each of the many fresh
    # databases a test run builds.
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    context.stamp(script_directory(), revision)


def differences(connection: Connection) -> list[Any]:
    """What autogenerate would write to bring the database to the models ([] when they agree)."""
    context = MigrationContext.configure(
        connection,
        opts={"version_table": VERSION_TABLE, "include_name": include_name, "compare_type": True},
    )
    return list(compare_metadata(context, hub_metadata()))


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction that commits when the block succeeds.

    PostgreSQL: the transaction holds an advisory lock, so a second hub that starts at the
    same moment waits, then finds the schema already built. SQLite: foreign keys are off
    while a batch operation copies a table (dropping the old one must not cascade or fail),
    and checked before commit.
    """
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # Only outside a transaction does SQLite change this pragma.
            _sqlite_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left rows that break foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                # The connection goes back to the pool that the hub's sessions share.
                _sqlite_pragma(conn, "PRAGMA foreign_keys=ON")


def _sqlite_pragma(conn: Connection, sql: str) -> None:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    finally:
        cursor.close()
