"""Durations of the update repository's settings read as documented: seconds, or ISO 8601."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud.db import SessionFactory
from cloud.settings import Settings
from cloud.tuf import TufSettings, ensure_initialized, open_repository
from tests.unit.cloud.helpers import FrozenClock

FIELDS = ("ROOT", "TARGETS", "SNAPSHOT", "TIMESTAMP", "DIRECTOR")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20", timedelta(seconds=20)),
        (" 90.5 ", timedelta(seconds=90.5)),
        ("PT20S", timedelta(seconds=20)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("1 day, 00:00:20", timedelta(days=1, seconds=20)),
    ],
)
@pytest.mark.parametrize("field", FIELDS)
def test_every_expiry_reads_seconds_and_iso_8601_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, field: str, text: str, expected: timedelta
) -> None:
    monkeypatch.setenv(f"EDGEFLEET_TUF_{field}_EXPIRY", text)
    assert getattr(TufSettings(), f"{field.lower()}_expiry") == expected


def test_plain_seconds_work_from_python_too() -> None:
    assert TufSettings(timestamp_expiry=20).timestamp_expiry == timedelta(seconds=20)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0", "positive"),
        ("-5", "positive"),
        ("PT0S", "positive"),
        ("inf", "expected a duration in seconds"),
        ("1e30", "expected a duration in seconds"),
        ("twenty", "timedelta"),
        ("", "timedelta"),
    ],
)
def test_a_bad_duration_is_refused_saying_what_was_expected(
    monkeypatch: pytest.MonkeyPatch, text: str, fragment: str
) -> None:
    monkeypatch.setenv("EDGEFLEET_TUF_TIMESTAMP_EXPIRY", text)
    with pytest.raises(ValidationError, match="timestamp_expiry") as info:
        TufSettings()
    assert fragment in str(info.value)


def test_the_repository_signs_a_timestamp_that_expires_after_the_configured_seconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sessions: SessionFactory, clock: FrozenClock
) -> None:
    monkeypatch.setenv("EDGEFLEET_TUF_TIMESTAMP_EXPIRY", "20")
    repo = open_repository(Settings(data_dir=tmp_path), sessions, tuf=TufSettings(), clock=clock)
    assert ensure_initialized(repo)
    timestamp = json.loads(repo.metadata_file("timestamp.json"))
    expires = datetime.fromisoformat(timestamp["signed"]["expires"].replace("Z", "+00:00"))
    assert expires == (clock() + timedelta(seconds=20)).replace(microsecond=0)


def test_a_short_expiry_shortens_the_re_signing_check_so_nothing_expires_between_looks() -> None:
    # Defaults: the shortest role (timestamp, 1 day) leaves half a day to re-sign: 300 s stands.
    assert TufSettings().check_interval_s() == 300.0
    # A 20 s timestamp is re-signed once 10 s are left: looking every 5 s sees it twice in that time.
    assert TufSettings(timestamp_expiry=20).check_interval_s() == 5.0
    assert TufSettings(timestamp_expiry=20, resign_check_interval_s=2).check_interval_s() == 2.0
