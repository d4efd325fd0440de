"""Single-line logs that say which device spoke (a simulator runs many in one process)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

__all__ = ["DeviceLogger", "Log", "configure_logging", "device_logger"]

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class DeviceLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with ``device=<id>``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"device={self.extra['device'] if self.extra else '?'} {msg}", kwargs


def device_logger(name: str, device_id: str) -> DeviceLogger:
    return DeviceLogger(logging.getLogger(name), {"device": device_id})


def configure_logging(level: str) -> None:
    """Log to stderr (stdout carries the simulator's machine-readable lines)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    logging.basicConfig(level=numeric, format=LOG_FORMAT, stream=sys.stderr, force=True)
    # paho logs every packet at DEBUG; keep it quieter than the agent unless asked.
    logging.getLogger("mqtt").setLevel(max(numeric, logging.INFO))
