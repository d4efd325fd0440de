"""``in_list`` (cloud.sql_lists) on SQLite and the real PostgreSQL: the rows it names, and one
statement text whatever the list's length (so a database keeps one prepared statement for it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, event, select, update
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import CompileError

from cloud.sql_lists import in_list

pytestmark = pytest.mark.integration

IDS = [f"cam-{i:05d}" for i in range(2_000)] + ['it\'s "quoted"', "kamera-ü", "a,b"]


@pytest.fixture
def devices(engine: Engine) -> Iterator[Table]:
    meta = MetaData()
    table = Table("probe_device", meta, Column("id", String, primary_key=True), Column("n", Integer))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": d, "n": i} for i, d in enumerate(IDS)])
    yield table
    meta.drop_all(engine)


@pytest.mark.parametrize(
    "wanted",
    [[], ["cam-00007"], IDS[::3], ['it\'s "quoted"', "kamera-ü", "a,b", "absent"]],
    ids=["none", "one", "every-third", "odd-characters"],
)
def test_the_rows_named_by_the_list_and_only_those(engine: Engine, devices: Table, wanted: list[str]) -> None:
    with engine.connect() as conn:
        found = conn.execute(select(devices.c.id).where(in_list(devices.c.id, wanted))).scalars()
        assert sorted(found) == sorted(set(wanted) & set(IDS))


def test_one_statement_text_for_every_length(engine: Engine, devices: Table) -> None:
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.begin() as conn:
            for length in (1, 2, 499, 1_500):
                # A new statement object each time, as a caller builds one: SQLAlchemy's compiled
                # cache must hand back this call's list, not the one it compiled first.
                wanted = IDS[-length:]
                stmt = (
                    update(devices).where(in_list(devices.c.id, wanted)).values(n=-1).returning(devices.c.id)
                )
                assert sorted(conn.execute(stmt).scalars()) == sorted(wanted)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    updates = [s for s in sent if s.startswith("UPDATE")]  # SQLite's hook also sends BEGIN and a PRAGMA
    assert len(updates) == 4 and len(set(updates)) == 1, updates


def test_a_bare_string_is_refused_rather_than_read_as_characters(engine: Engine, devices: Table) -> None:
    with pytest.raises(TypeError, match="expected a collection of strings, got str 'cam-00001'"):
        in_list(devices.c.id, "cam-00001")


def test_another_database_is_refused_when_compiled() -> None:
    column = Table("probe", MetaData(), Column("id", String, primary_key=True)).c.id
    with pytest.raises(CompileError, match="in_list: expected a sqlite or postgresql database, got 'mysql'"):
        select(column).where(in_list(column, ["a"])).compile(dialect=mysql.dialect())
