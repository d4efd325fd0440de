"""Keyset pagination: a page of rows and an opaque cursor that says where the next page starts.

A listing is ordered by a key that is unique within it (a device id, a cohort name, a rollout's
creation time and id); the cursor carries the key of the last row shown, and the next page is the
rows after it. Unlike an offset, rows added or removed meanwhile neither repeat nor skip a row.
The cursor names its listing, so one listing's cursor handed to another is refused, not misread.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, or_
from sqlmodel import Session, col
from sqlmodel.sql.expression import SelectOfScalar

from cloud.errors import InvalidInputError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "CursorValue",
    "Page",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
    "keyset_page",
]

T = TypeVar("T")
U = TypeVar("U")

# Large enough that existing callers (the demo, scripts) see a whole fleet of a few hundred devices
# in one page; capped so that one request cannot ask the database for everything.
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000

CursorValue = str | int | datetime


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows of one page, and the cursor of the next one (None: this is the last page)."""

    items: list[T]
    next_cursor: str | None = None

    def map(self, fn: Callable[[T], U]) -> Page[U]:
        return Page([fn(item) for item in self.items], self.next_cursor)


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(
            f"invalid limit: expected a whole number from 1 to {MAX_LIMIT}, got {limit!r}"
        )
    return limit


def _encode_value(value: CursorValue) -> Any:
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    return value


def _decode_value(raw: Any) -> CursorValue:
    if isinstance(raw, dict) and set(raw) == {"dt"} and isinstance(raw["dt"], str):
        parsed = datetime.fromisoformat(raw["dt"])
        if parsed.tzinfo is None:
            raise ValueError("naive datetime in cursor")
        return parsed
    if isinstance(raw, str) or (isinstance(raw, int) and not isinstance(raw, bool)):
        return raw
    raise ValueError(f"unexpected cursor value {raw!r}")


def encode_cursor(listing: str, key: Sequence[CursorValue]) -> str:
    """An opaque, URL-safe cursor naming ``listing`` and the key of the last row shown."""
    text = json.dumps({"l": listing, "k": [_encode_value(v) for v in key]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(listing: str, cursor: str, arity: int) -> tuple[CursorValue, ...]:
    """The key a cursor of ``listing`` carries; InvalidInputError for anything else."""
    shown = cursor if len(cursor) <= 60 else cursor[:60] + "..."
    problem = f"invalid cursor {shown!r}: expected the next_cursor of a {listing} listing"
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8"))
        if not isinstance(data, dict) or data.get("l") != listing:
            raise ValueError("another listing")
        raw = data.get("k")
        if not isinstance(raw, list) or len(raw) != arity:
            raise ValueError("wrong key length")
        return tuple(_decode_value(v) for v in raw)
    except (ValueError, UnicodeError, binascii.Error) as e:
        raise InvalidInputError(problem) from e


def _after(keys: Sequence[Any], values: Sequence[CursorValue], descending: bool) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``keys``, spelt out (a > x) or (a = x and b > y).

    Spelt out rather than as a row-value comparison so that every column binds with its own type
    (an aware datetime goes through its column's UTC handling).
    """
    terms: list[ColumnElement[bool]] = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        beyond = col(key) < value if descending else col(key) > value
        equal = [col(k) == v for k, v in zip(keys[:i], values[:i], strict=True)]
        terms.append(and_(*equal, beyond) if equal else beyond)
    return or_(*terms)


def keyset_page(
    session: Session,
    query: SelectOfScalar[T],
    keys: Sequence[Any],
    *,
    listing: str,
    key_of: Callable[[T], Sequence[CursorValue]],
    limit: int,
    cursor: str | None = None,
    descending: bool = False,
) -> Page[T]:
    """One page of ``query`` ordered by ``keys`` (unique together), after ``cursor``.

    ``key_of`` reads a row's key values (the same columns as ``keys``) to build the next cursor.
    ``query`` carries the listing's filters and no ORDER BY or LIMIT of its own.
    """
    check_limit(limit)
    if cursor:
        query = query.where(_after(keys, decode_cursor(listing, cursor, len(keys)), descending))
    order = [col(k).desc() if descending else col(k) for k in keys]
    # One row more than asked: whether it comes tells if there is a next page, with no count query.
    rows = list(session.exec(query.order_by(*order).limit(limit + 1)).all())
    if len(rows) <= limit:
        return Page(rows, None)
    shown = rows[:limit]
    return Page(shown, encode_cursor(listing, key_of(shown[-1])))
