"""Single-line logs that say which device spoke (a simulator runs many in one process).

Text lines by default; ``log_format = "json"`` in the agent config gives one JSON object per line
(``ts``, ``level``, ``logger``, ``msg``, ``device``, ``exc``) for a log collector, with the standard
library alone: an edge device cannot afford another dependency for its logs.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["DeviceLogger", "JsonFormatter", "Log", "configure_logging", "device_logger", "use_log_format"]

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATS = ("text", "json")


class DeviceLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with ``device=<id>``, and names the device in the record (JSON logs)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        device = self.extra["device"] if self.extra else "?"
        kwargs["extra"] = {**kwargs.get("extra", {}), "device": device}
        return f"device={device} {msg}", kwargs


def device_logger(name: str, device_id: str) -> DeviceLogger:
    return DeviceLogger(logging.getLogger(name), {"device": device_id})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        device = getattr(record, "device", None)
        if device is not None:
            entry["device"] = str(device)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def _formatter(fmt: str) -> logging.Formatter:
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: expected text or json")
    return JsonFormatter() if fmt == "json" else logging.Formatter(LOG_FORMAT)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr (stdout carries the simulator's machine-readable lines)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    # paho logs every packet at DEBUG; keep it quieter than the agent unless asked.
    logging.getLogger("mqtt").setLevel(max(numeric, logging.INFO))


def use_log_format(fmt: str) -> None:
    """Switch the handlers set up by :func:`configure_logging` to ``fmt`` (once the config is read)."""
    formatter = _formatter(fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
