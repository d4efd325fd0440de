"""The outbox: events and telemetry waiting for the broker, oldest first, bounded, and counted.

A message leaves the outbox only when the broker has acknowledged it (QoS 1
PUBACK): the link publishes the head, waits for the acknowledgement, then
acks it here. When the outbox is full the oldest message is dropped and the
drop is counted (in the status message, the metrics and the log), never
silent.

:class:`DiskOutbox` keeps the queue in SQLite (the standard library's
``sqlite3``), so what was not acknowledged survives a crash or a reboot. SQLite
rather than a hand-written segment file: its write-ahead log gives atomic
appends and deletes, crash recovery and ordered reads for free, it is on every
device that has Python, and ``edgefleet-agent status`` can read the queue while
the agent writes it. In ``synchronous=NORMAL`` a commit survives a crash of the
agent at any instant; ``queue.sync = "full"`` also survives a power cut, at one
fsync per message. :class:`MemoryOutbox` is the same queue without the disk,
for simulated fleets.

Both also keep a short journal of the latest events, for ``edgefleet-agent
status``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from edge_agent.errors import QueueError

__all__ = [
    "DiskOutbox",
    "JournalEntry",
    "MemoryOutbox",
    "OutMessage",
    "Outbox",
    "QueueSummary",
    "read_summary",
]

log = logging.getLogger(__name__)

JOURNAL_SIZE = 50


@dataclass(frozen=True, slots=True, eq=False)
class OutMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    # Position in the queue (0 until queued); a DiskOutbox's row id.
    id: int = 0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    ts_ms: int
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class QueueSummary:
    depth: int
    dropped: int
    recent: list[JournalEntry]


class Outbox(Protocol):
    """What the link and the agent need from a queue of outgoing messages."""

    changed: asyncio.Event

    @property
    def dropped(self) -> int:
        """Messages dropped because the queue was full, over the queue's whole life."""
        ...

    def __len__(self) -> int: ...

    def put(self, message: OutMessage) -> None: ...

    def peek(self) -> OutMessage | None:
        """The oldest message, or None when the queue is empty."""
        ...

    def ack(self, message: OutMessage) -> None:
        """Remove ``message`` once the broker has it (a no-op when it was dropped meanwhile)."""
        ...

    def note(self, ts_ms: int, kind: str, text: str) -> None:
        """Add a line to the journal of recent events."""
        ...

    def recent(self) -> list[JournalEntry]: ...

    def close(self) -> None: ...


def _warn_dropped(maxlen: int, dropped: int, topic: str) -> None:
    # Log the first loss and then every hundredth, not each one of a long outage.
    if dropped == 1 or dropped % 100 == 0:
        log.warning(
            "outbox full (%d): dropped %d message(s) so far, the latest to %s", maxlen, dropped, topic
        )


class MemoryOutbox:
    """The queue in memory: what was not acknowledged is lost with the process."""

    def __init__(self, maxlen: int = 1000) -> None:
        if maxlen < 1:
            raise ValueError(f"outbox maxlen must be >= 1, got {maxlen}")
        self._queue: collections.deque[OutMessage] = collections.deque()
        self._journal: collections.deque[JournalEntry] = collections.deque(maxlen=JOURNAL_SIZE)
        self._maxlen = maxlen
        self._dropped = 0
        self._next_id = 1
        self.changed = asyncio.Event()

    @property
    def dropped(self) -> int:
        return self._dropped

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, message: OutMessage) -> None:
        if len(self._queue) >= self._maxlen:
            lost = self._queue.popleft()
            self._dropped += 1
            _warn_dropped(self._maxlen, self._dropped, lost.topic)
        self._queue.append(
            OutMessage(message.topic, message.payload, message.qos, message.retain, self._next_id)
        )
        self._next_id += 1
        self.changed.set()

    def peek(self) -> OutMessage | None:
        return self._queue[0] if self._queue else None

    def ack(self, message: OutMessage) -> None:
        if self._queue and self._queue[0].id == message.id:
            self._queue.popleft()

    def note(self, ts_ms: int, kind: str, text: str) -> None:
        self._journal.append(JournalEntry(ts_ms, kind, text))

    def recent(self) -> list[JournalEntry]:
        return list(self._journal)

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL
);
"""


class DiskOutbox:
    """The queue in a SQLite file; use it from one thread (the event loop)."""

    def __init__(
        self, path: Path, maxlen: int = 10_000, *, sync: Literal["normal", "full"] = "normal"
    ) -> None:
        if maxlen < 1:
            raise ValueError(f"outbox maxlen must be >= 1, got {maxlen}")
        self.path = path
        self._maxlen = maxlen
        try:
            self._db = self._open(path, sync)
        except sqlite3.DatabaseError as e:
            # A damaged queue must not keep the agent from serving: keep it aside, start empty.
            aside = path.with_name(path.name + ".corrupt")
            log.error("message queue %s is unusable (%s); moved to %s, starting empty", path, e, aside.name)
            try:
                path.replace(aside)
                for suffix in ("-wal", "-shm"):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
                self._db = self._open(path, sync)
            except (OSError, sqlite3.DatabaseError) as again:
                raise QueueError(f"cannot open the message queue {path}: {again}") from again
        row = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        self._count = int(row[0])
        dropped = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        self._dropped = int(dropped[0]) if dropped else 0
        self._head: OutMessage | None = None
        self.changed = asyncio.Event()
        if self._count:
            self.changed.set()

    @staticmethod
    def _open(path: Path, sync: str) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit off (isolation_level=None means we say BEGIN ourselves).
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            # A queue of small messages needs no big page cache (the default is 2 MiB per connection).
            db.execute("PRAGMA cache_size=-256")
            db.executescript(_SCHEMA)
            db.execute("SELECT COUNT(*) FROM outbox").fetchone()  # reads the file: fails now if damaged
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @property
    def dropped(self) -> int:
        return self._dropped

    def __len__(self) -> int:
        return self._count

    def put(self, message: OutMessage) -> None:
        try:
            self._put(message)
        except sqlite3.Error as e:
            # The disk refused (full, read-only): the message is lost, and that is counted.
            self._dropped += 1
            log.error(
                "cannot queue a message to %s on disk (%s); dropped %d so far",
                message.topic,
                e,
                self._dropped,
            )
            return
        self.changed.set()

    def _put(self, message: OutMessage) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain) VALUES (?, ?, ?, ?)",
                (message.topic, message.payload, message.qos, int(message.retain)),
            )
            over = self._count + 1 - self._maxlen
            if over > 0:
                db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (over,)
                )
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('dropped', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (self._dropped + over,),
                )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self._count += 1
        if over > 0:
            self._count -= over
            self._dropped += over
            self._head = None
            _warn_dropped(self._maxlen, self._dropped, message.topic)

    def peek(self) -> OutMessage | None:
        if self._head is None and self._count:
            row = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox ORDER BY id LIMIT 1"
            ).fetchone()
            if row is not None:
                self._head = OutMessage(row[1], bytes(row[2]), int(row[3]), bool(row[4]), int(row[0]))
        return self._head

    def ack(self, message: OutMessage) -> None:
        try:
            gone = self._db.execute("DELETE FROM outbox WHERE id = ?", (message.id,)).rowcount
        except sqlite3.Error as e:
            # Kept: it goes out again later (QoS 1 allows a duplicate; the hub stores it once).
            log.error("cannot remove an acknowledged message from the queue: %s", e)
            return
        if gone:
            self._count -= 1
        if self._head is not None and self._head.id == message.id:
            self._head = None

    def note(self, ts_ms: int, kind: str, text: str) -> None:
        try:
            cur = self._db.execute(
                "INSERT INTO journal (ts_ms, kind, text) VALUES (?, ?, ?)", (ts_ms, kind, text)
            )
            if cur.lastrowid is not None and cur.lastrowid % 16 == 0:
                self._db.execute("DELETE FROM journal WHERE id <= ?", (cur.lastrowid - JOURNAL_SIZE,))
        except sqlite3.Error as e:
            log.warning("cannot write the event journal: %s", e)

    def recent(self) -> list[JournalEntry]:
        return _journal(self._db)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


def _journal(db: sqlite3.Connection) -> list[JournalEntry]:
    rows = db.execute(
        "SELECT ts_ms, kind, text FROM journal ORDER BY id DESC LIMIT ?", (JOURNAL_SIZE,)
    ).fetchall()
    return [JournalEntry(int(r[0]), str(r[1]), str(r[2])) for r in reversed(rows)]


def read_summary(path: Path) -> QueueSummary:
    """Depth, drop count and recent events of a queue file, read-only (the agent may be running)."""
    if not path.is_file():
        raise QueueError(f"no message queue at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise QueueError(f"cannot open the message queue {path}: {e}") from e
    try:
        depth = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        row = db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return QueueSummary(depth=depth, dropped=int(row[0]) if row else 0, recent=_journal(db))
    except sqlite3.Error as e:
        raise QueueError(f"cannot read the message queue {path}: {e}") from e
    finally:
        db.close()
