"""Maintenance windows: when a rollout may offer devices.

A window opens at every time its cron expression fires (in the window's time zone)
and stays open for its duration, measured in elapsed time: a three-hour window at
01:00 closes at 05:00 on the night clocks go forward. On the night they go back,
a time in the repeated hour comes twice and opens the window twice (APScheduler
fires at both), so a window of two hours at 02:00 stays open until 04:00 on the
wall clock. No window means always open. Pure: ``now`` is a parameter.

APScheduler 3 reads cron weekday numbers with 0 = Monday, where crontab says
0 = Sunday; :func:`cron_trigger` rewrites the weekday field into names first, so
``0 2 * * 0`` fires on Sundays as every cron user expects. As in APScheduler, a
day of month and a weekday both restricted must both match (crontab would take
either).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

if TYPE_CHECKING:
    from cloud.rollouts.plan import MaintenanceWindow

__all__ = ["closes_at", "cron_trigger", "is_open", "next_open"]

_DAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_TICK: Final = timedelta(microseconds=1)
# APScheduler 3 finds a time that a spring DST gap skips (02:30 on the night 02:00 becomes 03:00)
# only when its search starts before the gap, and has been seen answering a time before the start
# inside an autumn fold. Searching from this much earlier and walking forward answers the same
# from any start (no DST shift today is longer than an hour).
_DST_MARGIN: Final = timedelta(hours=2)
# Bounds for the loops below: far more than any real window needs, and they keep a bug finite.
_MAX_STEPS: Final = 1000


def _weekday(token: str) -> int:
    text = token.strip().lower()
    if text in _DAYS:
        return _DAYS.index(text)
    if text.isdigit() and int(text) <= 7:
        return int(text) % 7  # crontab allows 7 for Sunday too
    raise ValueError(f"day of week: expected 0-7 or a name such as mon, got {token!r}")


def _weekday_names(field: str) -> str:
    """The crontab weekday field as a list of names APScheduler reads the same way."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        if step_text and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"day of week: expected a step of 1 or more after '/', got {part!r}")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, _, high = span.partition("-")
            first, last = _weekday(low), _weekday(high)
            if high.strip() == "7":
                last = 7
            if first > last:
                raise ValueError(f"day of week: expected a range from low to high, got {part!r}")
        else:
            first = _weekday(span)
            last = 6 if step_text else first
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DAYS[day] for day in sorted(days))


@functools.lru_cache(maxsize=256)
def cron_trigger(cron: str, timezone: str) -> CronTrigger:
    """The APScheduler trigger for a crontab expression in an IANA time zone.

    Raises:
        ValueError: the expression or the time zone is not valid; the message says which.
    """
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"expected an IANA time zone such as Europe/Berlin, got {timezone!r}") from None
    fields[4] = _weekday_names(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=zone)


def _fire_at_or_after(trigger: CronTrigger, start: datetime) -> datetime | None:
    """The first time (in UTC) the trigger fires at or after ``start``; None if it never fires again."""
    start = start.astimezone(UTC)
    probe = start - _DST_MARGIN
    for _ in range(_MAX_STEPS):
        fire: datetime | None = trigger.get_next_fire_time(None, probe)
        if fire is None:
            return None
        fire = fire.astimezone(UTC)
        if fire >= start:
            return fire
        probe = fire + _TICK if fire >= probe else probe + timedelta(minutes=1)
    return None


def _opened_at(window: MaintenanceWindow, now: datetime) -> datetime | None:
    """When the window that is open at ``now`` opened (the earliest such opening), or None."""
    trigger = cron_trigger(window.cron, window.timezone)
    fire = _fire_at_or_after(trigger, now - timedelta(seconds=window.duration) + _TICK)
    return fire if fire is not None and fire <= now else None


def _utc(now: datetime) -> datetime:
    """``now`` in UTC: arithmetic on zoned datetimes is wall-clock arithmetic, wrong across DST."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got the naive {now.isoformat()}")
    return now.astimezone(UTC)


def is_open(window: MaintenanceWindow | None, now: datetime) -> bool:
    """Whether devices may be offered at ``now`` (an aware datetime)."""
    utc = _utc(now)
    return window is None or _opened_at(window, utc) is not None


def next_open(window: MaintenanceWindow | None, now: datetime) -> datetime:
    """The first instant at or after ``now`` at which the window is open (``now`` itself if open).

    The answer is in ``now``'s time zone.

    Raises:
        ValueError: the cron expression never fires again (e.g. a date that does not exist).
    """
    utc = _utc(now)
    if window is None or _opened_at(window, utc) is not None:
        return now
    fire = _fire_at_or_after(cron_trigger(window.cron, window.timezone), utc)
    if fire is None:
        raise ValueError(f"the maintenance window {window.cron!r} never opens again after {now.isoformat()}")
    return fire.astimezone(now.tzinfo)


def closes_at(window: MaintenanceWindow | None, now: datetime) -> datetime | None:
    """When the window open at ``now`` closes (openings that overlap count as one); None if closed.

    No window never closes: the answer is None there too, so callers check :func:`is_open` first.
    """
    utc = _utc(now)
    if window is None:
        return None
    opened = _opened_at(window, utc)
    if opened is None:
        return None
    trigger = cron_trigger(window.cron, window.timezone)
    length = timedelta(seconds=window.duration)
    end = opened + length
    for _ in range(_MAX_STEPS):
        # A later opening that starts before this one ends keeps the window open.
        fire = _fire_at_or_after(trigger, opened + _TICK)
        if fire is None or fire > end:
            break
        opened, end = fire, max(end, fire + length)
    return end.astimezone(now.tzinfo)
