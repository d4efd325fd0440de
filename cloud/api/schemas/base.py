"""What every request the API reads shares: bodies that refuse unknown fields, ids, instants."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


class RequestBody(BaseModel):
    """A body that refuses fields it does not define.

    A misspelt optional field (``treshold``) would otherwise be dropped without a word and the request
    would do something other than what its caller meant; unknown fields are a 422 that names them.
    """

    model_config = ConfigDict(extra="forbid")


# Row ids are 32-bit integers in the database (PostgreSQL's integer): a larger one names no row, and
# must be a 422 rather than a database error.
MAX_ROW_ID = 2**31 - 1


def _iso_only(value: object) -> object:
    # Pydantic also reads a bare number as seconds since the epoch; the API documents ISO 8601 only,
    # and "0.5" as an instant is a caller's mistake to report, not to guess at.
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError(f"expected an ISO 8601 date-time such as 2030-01-02T03:04:05Z, got {value[:40]!r}")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]
"""A date-time given as ISO 8601 text (a query parameter's type), never as a number."""
