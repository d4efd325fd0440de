"""Scheduler leadership on the real PostgreSQL (an advisory lock held by one session) and on SQLite.

Steps are driven by hand (``Leadership.step``) and the lease is measured with a fake monotonic clock,
so nothing here waits for a renewal period.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from cloud.db import create_db_engine
from cloud.leader import Leadership, Role, lock_key
from cloud.observability.metrics import JOB_NOT_LEADER, JobMetrics, LeaderMetrics

pytestmark = pytest.mark.integration


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_db_engine(postgres_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _leader(
    engine: Engine, fleet: str, clock: FakeMonotonic, metrics: LeaderMetrics | None = None
) -> Leadership:
    return Leadership(engine, fleet=fleet, renew_s=1.0, lease_s=3.0, monotonic=clock, metrics=metrics)


def _leads(leadership: Leadership) -> bool:
    # A call, not the property inline: the type checker would take each assert as narrowing the next.
    return leadership.is_leader


def _wait_released(engine: Engine, key: int, timeout: float = 10.0) -> None:
    """Until no backend holds ``key``: pg_terminate_backend only signals the backend, which then exits.

    Polled: another server process's exit offers nothing to wait on from here.
    """
    deadline = time.monotonic() + timeout
    while _backend_holding(engine, key) is not None:
        assert time.monotonic() < deadline, f"the terminated backend still held the lock after {timeout} s"
        time.sleep(0.02)


def _backend_holding(engine: Engine, key: int) -> int | None:
    """The PostgreSQL backend that holds advisory lock ``key`` (bigint keys: classid high, objid low)."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objsubid = 1 AND classid::bigint = (:key >> 32) & 4294967295 "
                "AND objid::bigint = :key & 4294967295"
            ),
            {"key": key},
        ).first()
    return None if row is None else int(row[0])


def test_the_lock_key_is_stable_signed_64_bit_and_per_fleet() -> None:
    key = lock_key("plant-a")
    assert key == lock_key("plant-a")
    assert key != lock_key("plant-b")
    assert -(2**63) <= key < 2**63


def test_one_of_two_replicas_leads_and_the_other_takes_over_when_its_session_ends(
    pg_engine: Engine, fleet_name: str
) -> None:
    clock = FakeMonotonic()
    registry = CollectorRegistry()
    metrics_a = LeaderMetrics(registry)
    a, b = _leader(pg_engine, fleet_name, clock, metrics_a), _leader(pg_engine, fleet_name, clock)
    try:
        assert a.step() is Role.LEADER
        assert b.step() is Role.FOLLOWER
        assert _leads(a) and not _leads(b)
        assert registry.get_sample_value("edgefleet_scheduler_leader") == 1.0
        # Another fleet on the same database has a leader of its own.
        other = _leader(pg_engine, f"{fleet_name}-other", clock)
        assert other.step() is Role.LEADER
        other.stop()

        # The leader's session ends under it (a crashed process, a restarted server): the lock goes with it.
        pid = _backend_holding(pg_engine, a.key)
        assert pid is not None
        with pg_engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        _wait_released(pg_engine, a.key)
        assert b.step() is Role.LEADER
        assert a.step() is Role.FOLLOWER
        assert not _leads(a) and _leads(b)
        assert registry.get_sample_value("edgefleet_scheduler_leader") == 0.0
        changes = {
            to: registry.get_sample_value("edgefleet_scheduler_leadership_changes_total", {"to": to})
            for to in ("leader", "follower")
        }
        assert changes == {"leader": 1.0, "follower": 1.0}
        # On its next try the old leader reconnects, and stays a follower while the lock is held.
        assert a.step() is Role.FOLLOWER
    finally:
        a.stop()
        b.stop()


def test_a_stopped_leader_releases_the_lock(pg_engine: Engine, fleet_name: str) -> None:
    clock = FakeMonotonic()
    a, b = _leader(pg_engine, fleet_name, clock), _leader(pg_engine, fleet_name, clock)
    try:
        assert a.step() is Role.LEADER
        assert b.step() is Role.FOLLOWER
        a.stop()
        assert a.role is Role.STOPPED and not _leads(a)
        assert _backend_holding(pg_engine, a.key) is None
        assert b.step() is Role.LEADER
    finally:
        a.stop()
        b.stop()


def test_a_leader_that_cannot_prove_its_session_within_the_lease_stops_leading(
    pg_engine: Engine, fleet_name: str
) -> None:
    clock = FakeMonotonic()
    a = _leader(pg_engine, fleet_name, clock)
    try:
        assert a.step() is Role.LEADER
        clock.now += 2.9
        assert _leads(a)
        # No renewal got through for a whole lease (a query hanging on a cut network): no jobs run.
        clock.now += 0.2
        assert not _leads(a)
        assert a.step() is Role.LEADER  # the next proof restores it
        assert _leads(a)
    finally:
        a.stop()


def test_on_sqlite_the_single_process_always_leads(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        a = Leadership(engine, fleet="default")
        assert not a.uses_lock
        assert a.step() is Role.LEADER and _leads(a)
        a.stop()
        assert not _leads(a)
    finally:
        engine.dispose()


def test_bad_periods_are_refused(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with pytest.raises(ValueError, match="renew_s must be positive, got 0"):
            Leadership(engine, fleet="default", renew_s=0)
        with pytest.raises(ValueError, match=r"lease_s \(1.0\) must be longer than renew_s \(2.0\)"):
            Leadership(engine, fleet="default", renew_s=2.0, lease_s=1.0)
    finally:
        engine.dispose()


def test_a_skipped_run_is_counted_apart_and_ends_a_former_leaders_last_success() -> None:
    registry = CollectorRegistry()
    jobs = JobMetrics(registry, clock=lambda: 2000.0)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    job = {"job_id": "edgefleet-observe"}

    jobs.listener(JobExecutionEvent(EVENT_JOB_EXECUTED, "edgefleet-observe", "default", at, retval=None))
    assert registry.get_sample_value("edgefleet_scheduler_job_runs_total", job) == 1
    assert registry.get_sample_value("edgefleet_scheduler_job_last_success_timestamp_seconds", job) == 2000.0

    # Leadership went elsewhere: the run is skipped, and this replica's last success must not age into
    # a stalled-job alert.
    jobs.listener(
        JobExecutionEvent(EVENT_JOB_EXECUTED, "edgefleet-observe", "default", at, retval=JOB_NOT_LEADER)
    )
    assert registry.get_sample_value("edgefleet_scheduler_job_runs_total", job) == 1
    assert registry.get_sample_value("edgefleet_scheduler_job_follower_skips_total", job) == 1
    assert registry.get_sample_value("edgefleet_scheduler_job_last_success_timestamp_seconds", job) is None
