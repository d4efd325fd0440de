"""Entering WAL mode on a new SQLite file (cloud.db._enter_wal) rides out the "database is locked"
that SQLite answers without waiting while another connection opens or switches the same file.

The lock is played by a cursor double that refuses a given number of times (the real race is in
tests/integration/db/test_startup.py, hubs starting together on one new file).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloud.db import _enter_wal


class RefusingCursor:
    def __init__(self, refusals: int, error: str = "database is locked") -> None:
        self.refusals = refusals
        self.error = error
        self.calls: list[str] = []

    def execute(self, sql: str) -> None:
        self.calls.append(sql)
        if len(self.calls) <= self.refusals:
            raise sqlite3.OperationalError(self.error)


def test_a_locked_file_is_retried_until_wal_is_on() -> None:
    cursor = RefusingCursor(refusals=3)
    _enter_wal(cursor, timeout_s=5)
    assert cursor.calls == ["PRAGMA journal_mode=WAL"] * 4


def test_a_lock_that_outlasts_the_busy_timeout_is_raised() -> None:
    cursor = RefusingCursor(refusals=1_000_000)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        _enter_wal(cursor, timeout_s=0.05)
    assert 1 < len(cursor.calls) < 1_000_000


def test_any_other_error_is_raised_at_once() -> None:
    cursor = RefusingCursor(refusals=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        _enter_wal(cursor, timeout_s=5)
    assert len(cursor.calls) == 1


def test_a_real_file_ends_in_wal_mode(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    try:
        _enter_wal(conn.cursor())
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
