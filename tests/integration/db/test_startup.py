"""What the hub does on start with each kind of database (cloud.startup.open_database), on SQLite and
the real PostgreSQL: builds an empty one, starts on one at head, refuses an older or unversioned one
unless told to upgrade, and always refuses one newer than it knows.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, text

from cloud.db import create_db_engine
from cloud.migrations import SchemaState, migration_connection, schema_status
from cloud.startup import HubStartError, open_database
from tests.integration.db.conftest import (
    EARLIER,
    HEAD,
    forget_revision,
    insert_device,
    migrate,
    read_device,
    revision_of,
    set_revision,
)

pytestmark = pytest.mark.integration

OLDEST = EARLIER[0]


def _state(engine: Engine) -> SchemaState:
    with migration_connection(engine) as conn:
        return schema_status(conn).state


def test_an_empty_database_is_built_to_head_and_then_started_on(db_url: str) -> None:
    hub = open_database(db_url)
    try:
        assert _state(hub) is SchemaState.CURRENT
        assert revision_of(hub) == HEAD
    finally:
        hub.dispose()
    # A second start finds it at head and changes nothing.
    again = open_database(db_url)
    try:
        assert revision_of(again) == HEAD
    finally:
        again.dispose()


def test_an_older_revision_is_refused_with_the_way_forward(engine: Engine, db_url: str) -> None:
    migrate(engine, OLDEST)
    insert_device(engine, "cam-01")

    with pytest.raises(HubStartError) as refused:
        open_database(db_url)

    message = str(refused.value)
    assert f"the database is at revision {OLDEST}, this hub needs {HEAD}" in message
    assert "fleet db upgrade" in message and "EDGEFLEET_DB_AUTO_UPGRADE=true" in message
    assert revision_of(engine) == OLDEST  # refused: nothing touched

    upgraded = open_database(db_url, auto_upgrade=True)
    try:
        assert revision_of(upgraded) == HEAD
        assert read_device(upgraded, "cam-01")["applied_generation"] == 4
    finally:
        upgraded.dispose()


@pytest.mark.parametrize("auto_upgrade", [False, True])
def test_a_revision_newer_than_the_hub_is_always_refused(
    engine: Engine, db_url: str, auto_upgrade: bool
) -> None:
    migrate(engine, "head")
    set_revision(engine, "9f3e0c2a1b7d")  # written by a newer hub

    with pytest.raises(HubStartError) as refused:
        open_database(db_url, auto_upgrade=auto_upgrade)

    message = str(refused.value)
    assert "at revision 9f3e0c2a1b7d, which this hub does not know" in message
    assert f"it needs {HEAD}" in message
    assert revision_of(engine) == "9f3e0c2a1b7d"


def test_a_database_made_before_migrations_is_refused_then_upgraded_when_told(
    engine: Engine, db_url: str
) -> None:
    migrate(engine, OLDEST)
    forget_revision(engine)  # tables as create_all made them, and no revision
    insert_device(engine, "cam-01")

    with pytest.raises(HubStartError) as refused:
        open_database(db_url)

    message = str(refused.value)
    assert "no schema revision" in message and f"needs revision {HEAD}" in message
    assert "fleet db upgrade" in message
    assert revision_of(engine) is None

    upgraded = open_database(db_url, auto_upgrade=True)
    try:
        assert revision_of(upgraded) == HEAD
        assert read_device(upgraded, "cam-01")["device_labels"] == {"site": "lab"}
    finally:
        upgraded.dispose()


def test_hubs_starting_at_once_build_an_empty_database_once(db_url: str) -> None:
    """Without the lock (PostgreSQL) or BEGIN IMMEDIATE (SQLite) two of them would both create tables."""
    starters = 3
    barrier = threading.Barrier(starters)

    def start() -> str | None:
        barrier.wait(timeout=30)
        engine = open_database(db_url)
        try:
            return revision_of(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(starters) as pool:
        revisions = list(pool.map(lambda _: start(), range(starters)))

    assert revisions == [HEAD] * starters
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    finally:
        engine.dispose()
