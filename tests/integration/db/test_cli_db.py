"""`fleet db upgrade|current|history|check` on real databases (SQLite file, the run's PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from cloud.cli import app
from cloud.db import create_all
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

runner = CliRunner()


def fleet_db(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["db", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_upgrade_brings_a_database_made_before_migrations_to_head(engine: Engine, db_url: str) -> None:
    migrate(engine, EARLIER[0])
    forget_revision(engine)
    insert_device(engine, "cam-01")

    code, out = fleet_db("current", "--database-url", db_url)
    assert code == 0, out
    assert "no schema revision" in out and "fleet db upgrade" in out

    code, out = fleet_db("upgrade", "--database-url", db_url)

    assert code == 0, out
    assert f"its tables are revision {EARLIER[0]}" in out
    assert f"from revision {EARLIER[0]} to {HEAD}" in out
    assert revision_of(engine) == HEAD
    assert read_device(engine, "cam-01")["firmware_version"] == ""

    code, out = fleet_db("current", "--database-url", db_url, "-o", "json")
    assert code == 0, out
    assert json.loads(out) | {"database": ""} == {
        "database": "",
        "revision": HEAD,
        "head": HEAD,
        "state": "current",
    }

    code, out = fleet_db("upgrade", "--database-url", db_url)
    assert code == 0, out
    assert f"already at revision {HEAD}" in out


def test_upgrade_refuses_a_revision_newer_than_it_knows(engine: Engine, db_url: str) -> None:
    migrate(engine, "head")
    set_revision(engine, "9f3e0c2a1b7d")

    code, out = fleet_db("upgrade", "--database-url", db_url)

    assert code == 4, out
    assert "9f3e0c2a1b7d" in out and HEAD in out
    assert revision_of(engine) == "9f3e0c2a1b7d"


def test_check_passes_on_the_hubs_schema_and_names_a_difference(engine: Engine, db_url: str) -> None:
    create_all(engine)  # what the hub builds on an empty database

    code, out = fleet_db("check", "--database-url", db_url)
    assert code == 0, out
    assert f"revision {HEAD}, tables as the hub expects" in out

    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cohort ADD COLUMN stray INTEGER")

    code, out = fleet_db("check", "--database-url", db_url, "-o", "json")
    assert code == 1, out
    report = json.loads(out)
    assert report["ok"] is False
    assert any("cohort" in d and "stray" in d for d in report["differences"]), report


def test_check_fails_on_an_older_revision(engine: Engine, db_url: str) -> None:
    migrate(engine, EARLIER[0])

    code, out = fleet_db("check", "--database-url", db_url)

    assert code == 1, out
    assert f"at revision {EARLIER[0]}, this hub needs {HEAD}" in out


def test_history_lists_every_revision_newest_first() -> None:
    code, out = fleet_db("history", "-o", "json")
    assert code == 0, out
    revisions = [r["revision"] for r in json.loads(out)]
    assert revisions == [HEAD, *reversed(EARLIER)]


def test_the_database_url_comes_from_the_environment(engine: Engine, db_url: str) -> None:
    migrate(engine, "head")
    result = runner.invoke(app, ["db", "current", "-o", "json"], env={"EDGEFLEET_DATABASE_URL": db_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["revision"] == HEAD


def test_an_unreachable_or_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    code, out = fleet_db("upgrade", "--database-url", "postgresql://hub:s3cret@127.0.0.1:9/edgefleet")
    assert code == 6, out
    assert "cannot reach the database postgresql://hub:***@127.0.0.1:9/edgefleet" in out
    assert "s3cret" not in out

    missing = tmp_path / "nope" / "hub.db"
    code, out = fleet_db("current", "--database-url", f"sqlite:///{missing}")
    assert code == 3, out
    assert "no database file at" in out
    assert not missing.exists()

    code, out = fleet_db("current", "--database-url", "mysql://db/hub")
    assert code == 2, out
    assert "unsupported database URL scheme 'mysql'" in out
