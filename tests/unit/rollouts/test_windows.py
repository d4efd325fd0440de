"""Maintenance windows, judged at chosen instants: time zones, midnight, weekdays and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from cloud.rollouts.plan import MaintenanceWindow
from cloud.rollouts.windows import closes_at, is_open, next_open

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def berlin(text: str, *, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN, fold=fold)


def window(cron: str, duration: str, timezone: str = "UTC") -> MaintenanceWindow:
    return MaintenanceWindow(cron=cron, duration=duration, timezone=timezone)


NIGHTLY = window("0 2 * * *", "2h")
# 22:00 to 02:00 in Berlin: open across midnight.
LATE = window("0 22 * * *", "4h", "Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "open_", "opens", "closes"),
    [
        (utc("2025-06-01T01:59:59"), False, utc("2025-06-01T02:00"), None),
        (utc("2025-06-01T02:00"), True, utc("2025-06-01T02:00"), utc("2025-06-01T04:00")),
        (utc("2025-06-01T03:59:59"), True, utc("2025-06-01T03:59:59"), utc("2025-06-01T04:00")),
        # The end is not part of the window.
        (utc("2025-06-01T04:00"), False, utc("2025-06-02T02:00"), None),
    ],
)
def test_a_nightly_window_in_utc(
    now: datetime, open_: bool, opens: datetime, closes: datetime | None
) -> None:
    assert is_open(NIGHTLY, now) is open_
    assert next_open(NIGHTLY, now) == opens
    assert closes_at(NIGHTLY, now) == closes


@pytest.mark.parametrize(
    ("now", "open_"),
    [
        (berlin("2025-06-01T21:59"), False),
        (berlin("2025-06-01T22:00"), True),
        (berlin("2025-06-01T23:59"), True),
        (berlin("2025-06-02T00:00"), True),
        (berlin("2025-06-02T01:59:59"), True),
        (berlin("2025-06-02T02:00"), False),
        (berlin("2025-06-02T12:00"), False),
    ],
)
def test_a_window_that_crosses_midnight_in_its_own_time_zone(now: datetime, open_: bool) -> None:
    assert is_open(LATE, now) is open_
    # The same instants in UTC (Berlin is UTC+2 in summer) answer the same.
    assert is_open(LATE, now.astimezone(UTC)) is open_


def test_after_midnight_the_window_says_when_it_closes_and_before_it_when_it_opens() -> None:
    assert closes_at(LATE, berlin("2025-06-02T00:30")) == berlin("2025-06-02T02:00")
    assert next_open(LATE, berlin("2025-06-02T12:00")) == berlin("2025-06-02T22:00")
    # The answer comes in the caller's time zone.
    assert next_open(LATE, utc("2025-06-02T12:00")) == utc("2025-06-02T20:00")
    assert next_open(LATE, utc("2025-06-02T12:00")).tzinfo is UTC


@pytest.mark.parametrize(
    ("cron", "now", "opens"),
    [
        # Crontab numbers weekdays from Sunday = 0 (APScheduler on its own would read Monday).
        ("0 1 * * 0", berlin("2025-06-02T12:00"), berlin("2025-06-08T01:00")),  # a Monday -> Sunday
        ("0 1 * * 7", berlin("2025-06-02T12:00"), berlin("2025-06-08T01:00")),
        ("0 1 * * 1-5", berlin("2025-06-07T12:00"), berlin("2025-06-09T01:00")),  # a Saturday -> Monday
        ("0 1 * * mon-fri", berlin("2025-06-07T12:00"), berlin("2025-06-09T01:00")),
        ("0 1 * * 5-7", berlin("2025-06-02T12:00"), berlin("2025-06-06T01:00")),  # -> Friday
        ("0 1 * * */2", berlin("2025-06-02T12:00"), berlin("2025-06-03T01:00")),  # Sun, Tue, Thu, Sat
        ("0 1 * * 6,0", berlin("2025-06-02T12:00"), berlin("2025-06-07T01:00")),  # -> Saturday
    ],
)
def test_weekdays_count_as_crontab_counts_them(cron: str, now: datetime, opens: datetime) -> None:
    assert next_open(window(cron, "1h", "Europe/Berlin"), now) == opens


def test_on_the_night_clocks_go_forward_the_duration_is_elapsed_time() -> None:
    # 2025-03-30 in Berlin: 02:00 CET becomes 03:00 CEST. Three hours from 01:00 CET end at 05:00 CEST.
    early = window("0 1 * * *", "3h", "Europe/Berlin")
    assert not is_open(early, berlin("2025-03-30T00:59"))
    assert is_open(early, berlin("2025-03-30T01:00"))
    assert is_open(early, berlin("2025-03-30T04:59"))
    assert not is_open(early, berlin("2025-03-30T05:00"))
    assert closes_at(early, berlin("2025-03-30T01:30")) == berlin("2025-03-30T05:00")
    # The next night it is summer time: 01:00 CEST is 23:00 UTC.
    assert next_open(early, berlin("2025-03-30T05:00")).astimezone(UTC) == utc("2025-03-30T23:00")


def test_a_window_at_a_time_the_spring_night_skips_opens_at_that_instant_in_winter_time() -> None:
    # 02:30 does not exist on 2025-03-30 in Berlin; the window opens at 01:30 UTC (03:30 CEST).
    skipped = window("30 2 * * *", "1h", "Europe/Berlin")
    assert next_open(skipped, berlin("2025-03-30T00:00")) == utc("2025-03-30T01:30")
    # The same answer when asked after the gap began (03:10 CEST).
    assert next_open(skipped, utc("2025-03-30T01:10")) == utc("2025-03-30T01:30")
    assert not is_open(skipped, utc("2025-03-30T01:29"))
    assert is_open(skipped, utc("2025-03-30T02:29"))
    assert not is_open(skipped, utc("2025-03-30T02:30"))


def test_on_the_night_clocks_go_back_the_repeated_hour_opens_the_window_twice() -> None:
    # 2025-10-26 in Berlin: 03:00 CEST becomes 02:00 CET, so 02:30 comes twice.
    twice = window("30 2 * * *", "20m", "Europe/Berlin")
    first, second = berlin("2025-10-26T02:30", fold=0), berlin("2025-10-26T02:30", fold=1)
    assert (first.astimezone(UTC), second.astimezone(UTC)) == (
        utc("2025-10-26T00:30"),
        utc("2025-10-26T01:30"),
    )
    assert next_open(twice, utc("2025-10-26T00:00")) == utc("2025-10-26T00:30")
    assert is_open(twice, utc("2025-10-26T00:45"))
    assert not is_open(twice, utc("2025-10-26T01:00"))
    assert next_open(twice, utc("2025-10-26T01:00")) == utc("2025-10-26T01:30")
    assert is_open(twice, utc("2025-10-26T01:45"))
    assert not is_open(twice, utc("2025-10-26T01:50"))
    assert next_open(twice, utc("2025-10-26T01:50")) == utc("2025-10-27T01:30")


def test_two_hours_from_02_00_on_the_autumn_night_last_until_04_00_on_the_wall_clock() -> None:
    nightly = window("0 2 * * *", "2h", "Europe/Berlin")
    opened = utc("2025-10-26T00:00")  # 02:00 CEST
    assert is_open(nightly, opened)
    assert closes_at(nightly, opened) == berlin("2025-10-26T04:00")  # 03:00 UTC, three hours later
    assert not is_open(nightly, berlin("2025-10-26T04:00"))


def test_no_window_is_always_open() -> None:
    now = utc("2025-06-01T12:00")
    assert is_open(None, now)
    assert next_open(None, now) == now
    assert closes_at(None, now) is None


def test_overlapping_openings_count_as_one_window() -> None:
    # Opens every hour for 90 minutes: from 10:00 it never closes until the last opening ends.
    hourly = window("0 10-12 * * *", "90m")
    assert closes_at(hourly, utc("2025-06-01T10:15")) == utc("2025-06-01T13:30")


@pytest.mark.parametrize("call", [is_open, next_open, closes_at])
def test_a_naive_now_is_refused(call: object) -> None:
    with pytest.raises(
        ValueError, match="expected a timezone-aware datetime, got the naive 2025-06-01T12:00"
    ):
        call(NIGHTLY, datetime(2025, 6, 1, 12))  # type: ignore[operator]
    with pytest.raises(ValueError, match="expected a timezone-aware datetime"):
        call(None, datetime(2025, 6, 1, 12))  # type: ignore[operator]
