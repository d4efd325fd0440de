"""Event details: figures keep their types for the hub, with a text copy for hubs that read only text.

An event carries its details twice: ``data`` (typed: a count stays an integer, a ratio a
float, a flag a bool) and ``details`` (the same as text), which is all a hub older than
``data`` reads. The text form is the one agents always sent ("24", "0.7", "true").
"""

from __future__ import annotations

from collections.abc import Mapping

from edgefleet_proto.v1 import event_pb2

__all__ = ["DetailValue", "as_text", "fill_details"]

DetailValue = str | int | float | bool

_INT64 = range(-(2**63), 2**63)


def as_text(value: DetailValue) -> str:
    if isinstance(value, bool):  # before int: a bool is an int to Python
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fill_details(event: event_pb2.Event, details: Mapping[str, DetailValue]) -> None:
    """Write ``details`` into the event's typed ``data`` and its text ``details``."""
    for key, value in details.items():
        event.details[key] = as_text(value)
        slot = event.data[key]
        if isinstance(value, bool):
            slot.flag = value
        elif isinstance(value, int) and value in _INT64:
            slot.integer = value
        elif isinstance(value, float):
            slot.number = value
        else:
            slot.text = as_text(value)
