"""Databases for the migration tests: a SQLite file and a schema of its own on the run's PostgreSQL.

Each test starts from an empty database; helpers move it to a revision with the real migrations,
and read and write rows through tables reflected from the database itself (never the models,
which describe only the newest schema).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, MetaData, Table, inspect, select, text
from sqlalchemy.engine import make_url

from cloud.db import create_db_engine
from cloud.migrations import runner

HEAD = runner.head_revision()
# Every revision before head, the oldest first: each is a release a hub may be upgraded from.
EARLIER = [info.revision for info in reversed(runner.history()) if info.revision != HEAD]
# The revision before head: what downgrading the latest migration returns to.
PREVIOUS = runner.history()[0].down_revision

# What each revision after the first adds to the device row, with the value a device that never
# reported it has (what an upgrade fills existing rows with).
DEVICE_COLUMNS_ADDED: dict[str, dict[str, Any]] = {
    "0002": {
        "firmware_version": "",
        "firmware_slot": "",
        "trusted_root_version": 0,
        "queued_messages": 0,
        "dropped_messages": 0,
    },
    "0003": {
        "trial_policy_source": "",
        "trial_policy_digest": "",
        "last_load_ms": 0.0,
        "session_memory_bytes": 0,
    },
}
ADDED_DEFAULTS: dict[str, Any] = {k: v for added in DEVICE_COLUMNS_ADDED.values() for k, v in added.items()}
# Values a device reports for them, none equal to its default.
REPORTED: dict[str, Any] = {
    "firmware_version": "2.0.0",
    "firmware_slot": "b",
    "trusted_root_version": 3,
    "queued_messages": 7,
    "dropped_messages": 2,
    "trial_policy_source": "rollout",
    "trial_policy_digest": "ab" * 32,
    "last_load_ms": 12.5,
    "session_memory_bytes": 4096,
}


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_libpq(base), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            make_url(base)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(_libpq(base), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def migrate(engine: Engine, target: str) -> None:
    """Run the real migrations up (or down) to ``target`` (a revision or "head")."""
    order = [info.revision for info in reversed(runner.history())]
    wanted = HEAD if target == "head" else target
    current = revision_of(engine)
    with runner.migration_connection(engine) as conn:
        if current is not None and order.index(wanted) < order.index(current):
            runner.downgrade(conn, wanted)
        else:
            runner.upgrade(conn, wanted)


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return runner.current_revision(conn)


def forget_revision(engine: Engine) -> None:
    """Make the database look as ``create_all`` left it before migrations existed."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))


def set_revision(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def columns(engine: Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns(table)}


def _table(conn: Any, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=conn)


def insert_device(engine: Engine, device_id: str, **extra: Any) -> None:
    """A device row with every column a revision requires (and ``extra`` ones it may have)."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    row: dict[str, Any] = {
        "id": device_id,
        "fleet": "f",
        "state": "online",
        "agent_version": "1.0",
        "health": "serving",
        "capabilities": {"cpu_arch": "aarch64"},
        "labels": {"site": "lab"},
        "operator_labels": {},
        "active_model_name": "digits",
        "active_model_version": "1.0.0",
        "active_model_variant": "",
        "active_model_precision": "",
        "previous_model_variant": "",
        "previous_model_precision": "",
        "applied_generation": 4,
        "hardware_id": "sim-board",
        "first_seen": now,
        "last_seen": now,
        **extra,
    }
    with engine.begin() as conn:
        device = _table(conn, "device")
        # The columns later revisions added, where this revision has them: they are NOT NULL.
        row |= {k: v for k, v in ADDED_DEFAULTS.items() if k in device.c and k not in row}
        conn.execute(device.insert().values(**row))
        conn.execute(
            _table(conn, "device_label").insert().values(device_id=device_id, key="site", value="lab")
        )


def read_device(engine: Engine, device_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        device = _table(conn, "device")
        row = conn.execute(select(device).where(device.c.id == device_id)).mappings().one()
        labels = _table(conn, "device_label")
        label_rows = conn.execute(select(labels).where(labels.c.device_id == device_id)).mappings().all()
    return {**row, "device_labels": {r["key"]: r["value"] for r in label_rows}}
