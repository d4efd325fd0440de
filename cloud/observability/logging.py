"""The hub's logs: single text lines for people, or one JSON object per line for a log pipeline.

``EDGEFLEET_LOG_FORMAT=json`` gives each record as ``{"ts", "level", "logger", "msg", "request_id",
"actor", ...}`` on one line, with the request id and the authenticated actor of the API request
that logged it (cloud.api.requestctx), so that every line of one request can be found by its id.
The JSON mode also writes one access line per API request (cloud.observability.http); the text mode
leaves them out, since uvicorn's console already shows requests to a person running a hub by hand.

What a line holds is the message the code wrote and a few named fields: never request headers or
bodies, so a token in ``Authorization`` or a session cookie cannot reach a log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

from cloud.api.requestctx import current_actor, current_request_id
from cloud.observability.http import ACCESS_LOGGER

__all__ = ["TEXT_FORMAT", "JsonFormatter", "LogFormat", "configure_logging"]

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        actor = current_actor()
        if actor is not None:
            entry["actor"] = actor.name
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = _jsonable(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def configure_logging(level: str = "INFO", fmt: LogFormat = "text", *, stream: IO[str] | None = None) -> None:
    """Log to ``stream`` (stderr) at ``level`` in ``fmt``; replaces any handlers set before."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}: expected text or json")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    # Access lines follow the hub's level in JSON; a person reading text does without them.
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET if fmt == "json" else logging.WARNING)
