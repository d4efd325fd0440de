"""Event details carry typed figures for the hub and the same figures as text for older hubs."""

from __future__ import annotations

from edge_agent.details import fill_details
from edgefleet_proto.v1 import event_pb2


def test_each_figure_keeps_its_type_and_its_text_form() -> None:
    event = event_pb2.Event()
    fill_details(
        event,
        {
            "requests": 24,
            "p95_ms": 1.25,
            "refused": True,
            "gate": "latency_ratio",
            "huge": 2**64,
            "share": 1.0,
        },
    )
    typed = {
        key: (value.WhichOneof("kind"), getattr(value, value.WhichOneof("kind") or "text"))
        for key, value in event.data.items()
    }
    assert typed == {
        "requests": ("integer", 24),
        "p95_ms": ("number", 1.25),
        "refused": ("flag", True),  # a bool is not taken for the integer 1
        "gate": ("text", "latency_ratio"),
        "huge": ("text", str(2**64)),  # beyond int64: text rather than a wrong number
        "share": ("number", 1.0),
    }
    # The text a hub without `data` reads is what agents always sent.
    assert dict(event.details) == {
        "requests": "24",
        "p95_ms": "1.25",
        "refused": "true",
        "gate": "latency_ratio",
        "huge": str(2**64),
        "share": "1",
    }
