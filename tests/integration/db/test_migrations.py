"""The migrations on SQLite and on the real PostgreSQL: up from nothing and from every release, down and
up again with the rows kept, and in agreement with the models.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, inspect

from cloud.migrations import runner
from cloud.migrations.state import SchemaError, adopt_unversioned, matching_revision
from tests.integration.db.conftest import (
    ADDED_DEFAULTS,
    DEVICE_COLUMNS_ADDED,
    EARLIER,
    HEAD,
    PREVIOUS,
    REPORTED,
    columns,
    forget_revision,
    insert_device,
    migrate,
    read_device,
    revision_of,
)

pytestmark = pytest.mark.integration

# What the newest revision adds to the device row: what downgrading it takes away.
LATEST_ADDED = DEVICE_COLUMNS_ADDED[HEAD]


def test_an_empty_database_upgrades_to_head(engine: Engine) -> None:
    assert revision_of(engine) is None
    migrate(engine, "head")
    assert revision_of(engine) == HEAD
    assert set(ADDED_DEFAULTS) <= columns(engine, "device")


@pytest.mark.parametrize("start", EARLIER)
def test_every_earlier_revision_upgrades_to_head_keeping_its_rows(engine: Engine, start: str) -> None:
    migrate(engine, start)
    insert_device(engine, "cam-01")
    before = read_device(engine, "cam-01")

    migrate(engine, "head")

    assert revision_of(engine) == HEAD
    after = read_device(engine, "cam-01")
    assert {k: after[k] for k in before} == before  # every value it had, unchanged
    for name, default in ADDED_DEFAULTS.items():
        if name not in before:
            assert after[name] == default, name


def test_the_latest_revision_downgrades_and_upgrades_again(engine: Engine) -> None:
    assert PREVIOUS is not None
    migrate(engine, "head")
    reported = {k: REPORTED[k] for k in LATEST_ADDED}
    insert_device(engine, "cam-01", **reported)
    assert {k: read_device(engine, "cam-01")[k] for k in reported} == reported

    migrate(engine, PREVIOUS)

    assert revision_of(engine) == PREVIOUS
    assert not set(LATEST_ADDED) & columns(engine, "device")
    kept = read_device(engine, "cam-01")
    assert (kept["applied_generation"], kept["device_labels"]) == (4, {"site": "lab"})
    with engine.connect() as conn:
        # SQLite copies the table to drop a column: the rows that point at it still point at it.
        refs = {fk["referred_table"] for fk in inspect(conn).get_foreign_keys("device_label")}
    assert refs == {"device"}

    migrate(engine, "head")

    assert revision_of(engine) == HEAD
    again = read_device(engine, "cam-01")
    assert {k: again[k] for k in LATEST_ADDED} == LATEST_ADDED  # dropped values do not come back
    assert again["device_labels"] == {"site": "lab"}


def test_the_migrations_build_what_the_models_declare(engine: Engine) -> None:
    """Autogenerate finds nothing to add: a model changed without a revision fails here."""
    migrate(engine, "head")
    # APScheduler's job table lives beside the hub's; the migrations leave it to APScheduler.
    with engine.begin() as conn:
        Table("apscheduler_rollout_jobs", MetaData(), Column("id", Integer, primary_key=True)).create(conn)

    with runner.migration_connection(engine) as conn:
        found = runner.differences(conn)

    assert found == [], "the models and the migrations differ; add a revision (cloud/migrations/README.md)"


def test_a_model_change_without_a_revision_is_found(engine: Engine) -> None:
    """The agreement check can fail: a column the migrations made but the models lack is reported."""
    migrate(engine, "head")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cohort ADD COLUMN stray INTEGER")

    with runner.migration_connection(engine) as conn:
        found = runner.differences(conn)

    assert ("remove_column", None, "cohort") in [diff[:3] for diff in found if isinstance(diff, tuple)]


@pytest.mark.parametrize("revision", [*EARLIER, HEAD])
def test_tables_made_before_migrations_are_matched_to_their_revision(engine: Engine, revision: str) -> None:
    migrate(engine, revision)
    forget_revision(engine)

    with runner.migration_connection(engine) as conn:
        assert matching_revision(conn) == revision
        assert adopt_unversioned(conn) == revision

    assert revision_of(engine) == revision


def test_tables_that_match_no_revision_are_not_adopted(engine: Engine) -> None:
    migrate(engine, "head")
    forget_revision(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE device ADD COLUMN colour VARCHAR(8)")

    with runner.migration_connection(engine) as conn, pytest.raises(SchemaError) as raised:
        adopt_unversioned(conn)

    assert "match no revision" in str(raised.value)
    assert "device has unknown colour" in str(raised.value)
    assert revision_of(engine) is None


def test_a_migration_that_fails_leaves_the_database_as_it_was(engine: Engine) -> None:
    migrate(engine, EARLIER[-1])

    with pytest.raises(RuntimeError, match="stopped midway"), runner.migration_connection(engine) as conn:
        runner.upgrade(conn, "head")
        raise RuntimeError("stopped midway")

    assert revision_of(engine) == EARLIER[-1]
    assert not set(LATEST_ADDED) & columns(engine, "device")
