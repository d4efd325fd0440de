"""Time as a parameter: services take a ``Clock`` so tests can freeze it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current instant, timezone-aware in UTC."""
    return datetime.now(UTC)


def from_ms(ms: int) -> datetime:
    """A Unix time in milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(moment: datetime) -> int:
    """An aware datetime as Unix milliseconds."""
    return int(moment.timestamp() * 1000)
