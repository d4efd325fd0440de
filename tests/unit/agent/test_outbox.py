"""The outbox that holds messages while the broker is away: bounded, oldest dropped first, and counted.

The disk queue is real SQLite in a temp folder; "a restart" is a second queue opened on the same file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.outbox import DiskOutbox, OutMessage, read_summary
from edge_agent.outbox import MemoryOutbox as Outbox


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


# -- on disk ---------------------------------------------------------------------------------------


def test_the_disk_queue_keeps_what_was_not_acknowledged_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    box = DiskOutbox(path, maxlen=10)
    for n in range(4):
        box.put(msg(n))
    head = box.peek()
    assert head is not None and head.topic == "t/0"
    box.ack(head)
    box.note(1_000, "rolled_back", "m:2 rolled back: NaN")
    # No close: the process dies here.
    again = DiskOutbox(path, maxlen=10)
    assert len(again) == 3 and again.changed.is_set()
    sent = []
    while (head := again.peek()) is not None:
        sent.append((head.topic, head.payload))
        again.ack(head)
    assert sent == [("t/1", b"\x01"), ("t/2", b"\x02"), ("t/3", b"\x03")]
    assert [e.text for e in again.recent()] == ["m:2 rolled back: NaN"]


def test_a_full_disk_queue_drops_the_oldest_and_the_count_survives(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    box = DiskOutbox(path, maxlen=3)
    for n in range(5):
        box.put(msg(n))
    assert len(box) == 3 and box.dropped == 2
    head = box.peek()
    assert head is not None and head.topic == "t/2"
    box.close()
    summary = read_summary(path)
    assert (summary.depth, summary.dropped) == (3, 2)
    assert DiskOutbox(path, maxlen=3).dropped == 2


def test_an_ack_for_a_message_dropped_meanwhile_removes_nothing_else_on_disk(tmp_path: Path) -> None:
    box = DiskOutbox(tmp_path / "q.sqlite", maxlen=2)
    box.put(msg(0))
    in_flight = box.peek()
    assert in_flight is not None
    box.put(msg(1))
    box.put(msg(2))
    box.ack(in_flight)
    head = box.peek()
    assert head is not None and head.topic == "t/1" and len(box) == 2


def test_a_damaged_queue_file_is_kept_aside_and_the_agent_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    box = DiskOutbox(path)
    assert len(box) == 0
    assert (tmp_path / "queue.sqlite.corrupt").exists()
    box.put(msg(1))
    assert len(box) == 1


def test_a_disk_that_refuses_writes_counts_the_lost_message(tmp_path: Path) -> None:
    box = DiskOutbox(tmp_path / "q.sqlite")
    box._db.execute("PRAGMA query_only = ON")  # every write now fails, as on a read-only disk
    box.put(msg(1))
    assert box.dropped == 1 and len(box) == 0


def test_the_journal_keeps_the_latest_entries_only(tmp_path: Path) -> None:
    box = DiskOutbox(tmp_path / "q.sqlite")
    for n in range(120):
        box.note(n, "error", f"e{n}")
    recent = box.recent()
    assert len(recent) == 50 and recent[-1].text == "e119" and recent[0].text == "e70"
