"""The outbox that holds messages while the broker is away: bounded, oldest dropped first, and counted."""

from __future__ import annotations

import pytest

from edge_agent.link import Outbox, OutMessage


def msg(n: int) -> OutMessage:
    return OutMessage(topic=f"t/{n}", payload=bytes([n]))


def test_messages_leave_in_order_once_acknowledged() -> None:
    box = Outbox(maxlen=10)
    for n in range(3):
        box.put(msg(n))
    sent = []
    while (head := box.peek()) is not None:
        sent.append(head.topic)
        box.ack(head)
    assert sent == ["t/0", "t/1", "t/2"]
    assert box.dropped == 0


def test_a_full_outbox_drops_the_oldest_and_counts() -> None:
    box = Outbox(maxlen=3)
    for n in range(5):
        box.put(msg(n))
    assert len(box) == 3 and box.dropped == 2
    head = box.peek()
    assert head is not None and head.topic == "t/2"


def test_an_ack_for_a_message_dropped_meanwhile_removes_nothing_else() -> None:
    box = Outbox(maxlen=2)
    box.put(msg(0))
    in_flight = box.peek()
    assert in_flight is not None
    box.put(msg(1))
    box.put(msg(2))  # drops msg 0 while it was being published
    box.ack(in_flight)
    assert [m.topic for m in (box.peek(),) if m] == ["t/1"] and len(box) == 2


def test_put_wakes_the_writer() -> None:
    box = Outbox()
    box.changed.clear()
    box.put(msg(0))
    assert box.changed.is_set()


def test_a_zero_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="maxlen must be >= 1"):
        Outbox(maxlen=0)
