"""Scheduler leadership: one hub replica per fleet and database runs the periodic jobs.

The hub's periodic jobs (the observe cycle with its retention step, TUF re-signing, the rollout
tick) are idempotent, but running each on every replica multiplies the database's work by the
number of replicas and makes "once per period" meaningless. So one replica leads and the others
skip the job's run.

On PostgreSQL the leader holds a session-level advisory lock (``pg_try_advisory_lock``) on a
connection of its own, kept open for as long as it leads. The database itself ends the lock
with the session: a replica that is killed, crashes or loses its network loses the lock when
PostgreSQL sees its connection close (at once for a killed process; within the TCP keepalive
set below for a vanished host), and a follower takes it at its next try. Every ``renew_s`` the
leader proves its session alive with a query; a leader whose last proof is older than
``lease_s`` counts itself a follower until it proves it again, so a leader cut off from the
database stops running jobs even while its query hangs. A failed proof drops the connection
and the next step tries for the lock on a new one (renewed on reconnect).

On SQLite the hub runs as one process on one machine, the only deployment SQLite supports, so
that process always leads; no lock is taken.

States and events are few: FOLLOWER -> LEADER (lock taken), LEADER -> FOLLOWER (session lost
or lease stale), any -> STOPPED (``stop()``, which releases the lock). Each change is logged and
counted (``edgefleet_scheduler_leader``, ``edgefleet_scheduler_leadership_changes``).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from cloud.observability.metrics import LeaderMetrics

__all__ = ["DEFAULT_RENEW_S", "Leadership", "Role", "lock_key"]

log = logging.getLogger(__name__)

DEFAULT_RENEW_S = 5.0
# How long the server waits on a silent leader's socket before it ends the session (and the lock):
# idle 10 s, then 3 probes 5 s apart. Set per session: these are settings any user may change.
_KEEPALIVE_SQL = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    LEADER = "leader"
    STOPPED = "stopped"


def lock_key(fleet: str) -> int:
    """The advisory lock key of ``fleet``'s scheduler leadership: the first 8 bytes of
    sha256("edgefleet/scheduler-leader/{fleet}") as a signed 64-bit integer (PostgreSQL's bigint).

    Namespaced apart from the per-rollout keys (``rollout/{id}``) and the training keys, so no
    other lock of the hub can collide with it by construction of the hashed text.
    """
    digest = hashlib.sha256(f"edgefleet/scheduler-leader/{fleet}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """Whether this process leads the scheduled jobs of ``fleet``; ``is_leader`` is what jobs ask.

    ``step()`` does one try or one renewal and is what tests drive; ``start()`` runs it every
    ``renew_s`` seconds on a thread. ``monotonic`` is the clock the lease is measured with.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        fleet: str,
        renew_s: float = DEFAULT_RENEW_S,
        lease_s: float | None = None,
        metrics: LeaderMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if renew_s <= 0:
            raise ValueError(f"renew_s must be positive, got {renew_s!r}")
        self._engine = engine
        self.fleet = fleet
        self.key = lock_key(fleet)
        self.renew_s = renew_s
        # Two renewals may fail to answer before a leader doubts itself: one slow query is no loss.
        self.lease_s = lease_s if lease_s is not None else 2.5 * renew_s
        if self.lease_s <= renew_s:
            raise ValueError(f"lease_s ({self.lease_s!r}) must be longer than renew_s ({renew_s!r})")
        self._metrics = metrics
        self._monotonic = monotonic
        self.uses_lock = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._role = Role.FOLLOWER
        self._proved_at = 0.0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if metrics is not None:
            metrics.set_leader(False)

    # --- what jobs ask ------------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        with self._lock:
            return self._role

    @property
    def is_leader(self) -> bool:
        """True while this process holds the leadership and proved it within ``lease_s``."""
        with self._lock:
            if self._role is not Role.LEADER:
                return False
            return not self.uses_lock or self._monotonic() - self._proved_at < self.lease_s

    def wait_leader(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._role is Role.LEADER, timeout)

    # --- one step -----------------------------------------------------------------------------------

    def step(self) -> Role:
        """Take the lock when free, or prove the held one still held; returns the role after it."""
        if self._stop.is_set():
            return Role.STOPPED
        if not self.uses_lock:
            self._become(Role.LEADER, "SQLite: a single hub process is the only deployment")
            return Role.LEADER
        try:
            if self._conn is None:
                self._conn = self._open()
            if self.role is Role.LEADER:
                self._conn.execute(text("SELECT 1"))
                self._proved(Role.LEADER, "")
            else:
                got = self._conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
                if got.scalar():
                    self._proved(Role.LEADER, f"took advisory lock {self.key}")
        except Exception as e:  # any failure of the session: the lock went with it
            self._drop_connection()
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            self._become(Role.FOLLOWER, f"database session lost: {reason}")
        return self.role

    def _open(self) -> Connection:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        for sql in _KEEPALIVE_SQL:
            conn.execute(text(sql))
        return conn

    def _proved(self, role: Role, why: str) -> None:
        with self._lock:
            self._proved_at = self._monotonic()
        self._become(role, why)

    def _become(self, role: Role, why: str) -> None:
        with self._changed:
            previous, self._role = self._role, role
            if previous is role:
                return
            self._changed.notify_all()
        log.info(
            "scheduler leadership of fleet %s: %s -> %s (%s)", self.fleet, previous.value, role.value, why
        )
        if self._metrics is not None:
            self._metrics.changed(role is Role.LEADER)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.invalidate()  # never back to the pool: a pooled session would keep the lock
            conn.close()
        except Exception:
            log.debug("closing the leadership connection failed", exc_info=True)

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Try at once, then every ``renew_s`` seconds on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("Leadership.start() called twice")
        self.step()
        self._thread = threading.Thread(target=self._run, name="scheduler-leader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.renew_s):
            self.step()

    def stop(self, timeout: float = 10.0) -> None:
        """Release the lock (so a follower takes over at its next try) and stop (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        conn = self._conn
        if conn is not None and self.role is Role.LEADER:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            except Exception:
                log.debug(
                    "releasing the leadership lock failed; closing the session releases it", exc_info=True
                )
        self._drop_connection()
        self._become(Role.STOPPED, "stopped")
