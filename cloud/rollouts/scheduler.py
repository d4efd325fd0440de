"""Running the rollout engine: an APScheduler interval job, and a kick to run it at once.

Each replica of the hub schedules the tick in memory, and only the scheduler leader
(``cloud.leader``) runs the scheduled ones: a follower's job returns ``JOB_NOT_LEADER`` at once.
A schedule shared through a job store would not do: APScheduler does not coordinate schedulers
that share a store, and a follower that found the job due and skipped it would still move the
shared next run time on, taking the period from the leader. A tick is idempotent and leased per
rollout (``engine.py``), so the overlap of a leadership change does no step twice.

``kick()`` runs a tick now, on whichever replica is kicked, leader or not: after an operator's
action (the API), and when ingest stores an event a gate reacts to (a rollback, a failed
update), so a failing canary stops within one tick. The job names :func:`run_tick` and a key
(database and fleet); each process maps the key to its own scheduler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from google.protobuf.message import DecodeError

from cloud.context import HubContext
from cloud.observability.metrics import JOB_FAILED, JOB_NOT_LEADER
from cloud.rollouts import engine
from cloud.services.ingest import InboundMessage
from edgefleet_proto.v1 import event_pb2

__all__ = ["RolloutScheduler", "is_gate_event", "run_tick"]

log = logging.getLogger(__name__)

_K = event_pb2.EventKind
# Events that can fail a gate: worth a tick at once rather than at the next interval.
GATE_EVENTS = frozenset(
    {
        _K.EVENT_KIND_ROLLED_BACK,
        _K.EVENT_KIND_INSTALL_FAILED,
        _K.EVENT_KIND_VERIFY_FAILED,
        _K.EVENT_KIND_DESIRED_REJECTED,
        _K.EVENT_KIND_FIRMWARE_ROLLED_BACK,
        _K.EVENT_KIND_FIRMWARE_FAILED,
    }
)

# The schedulers running in this process, by job key; the stored job finds its own here.
_running: dict[str, RolloutScheduler] = {}
_running_lock = threading.Lock()


def run_tick(key: str) -> bool | str | None:
    """What the job calls: a tick by this process's scheduler of ``key``, when it leads or was kicked."""
    fleet = key.rpartition("#")[2]
    with _running_lock:
        scheduler = _running.get(key)
        if scheduler is None:
            same_fleet = [s for k, s in _running.items() if k.rpartition("#")[2] == fleet]
            scheduler = same_fleet[0] if len(same_fleet) == 1 else None
    if scheduler is None:
        return None
    if not scheduler.is_leader() and not scheduler.kicked:
        return JOB_NOT_LEADER
    scheduler.tick_now()
    # A failed tick is logged and retried at the next interval; the job's listener counts it.
    return JOB_FAILED if scheduler.last_tick_failed else None


def is_gate_event(message: InboundMessage) -> bool:
    """Whether ``message`` is a device event that a rollout gate reacts to."""
    if not message.topic.endswith("/events") or not message.payload:
        return False
    try:
        kind = event_pb2.Event.FromString(message.payload).kind
    except DecodeError:
        return False  # ingest counts and logs it
    return kind in GATE_EVENTS


class RolloutScheduler:
    """Ticks the rollout engine every ``interval_s`` seconds, and at once when kicked."""

    def __init__(
        self,
        ctx: HubContext,
        *,
        interval_s: float | None = None,
        owner: str = engine.OWNER,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.ctx = ctx
        self.is_leader = is_leader
        self.interval_s = interval_s or ctx.settings.rollout_tick_s
        self.owner = owner
        url = ctx.engine.url.render_as_string(hide_password=True)
        self.key = f"{url}#{ctx.settings.fleet}"
        self.job_id = f"edgefleet-rollout-tick/{ctx.settings.fleet}"
        self._scheduler: BackgroundScheduler | None = None
        self._tick_lock = threading.Lock()
        # Set by a kick; a tick under way when it comes runs once more, so no kick is lost.
        self._kicked = threading.Event()
        self.ticks = 0
        self.last_tick_failed = False

    def tick_now(self) -> list[str]:
        """Run ticks until no kick came during one; never raises (the next interval retries)."""
        advanced: list[str] = []
        with self._tick_lock:
            failed = False
            while True:
                self._kicked.clear()
                try:
                    advanced += engine.tick(self.ctx, owner=self.owner)
                except Exception:
                    failed = True
                    log.exception("rollout tick failed; retrying at the next interval")
                self.ticks += 1
                if not self._kicked.is_set():
                    self.last_tick_failed = failed
                    return advanced

    @property
    def kicked(self) -> bool:
        """A kick waits for its tick (which any replica runs, leader or not)."""
        return self._kicked.is_set()

    def kick(self) -> None:
        """Tick as soon as possible (coalesced with a tick already due or under way)."""
        scheduler = self._scheduler
        if scheduler is None or self._kicked.is_set():
            return
        self._kicked.set()
        if self._tick_lock.locked():
            return  # the tick under way sees the flag and runs once more
        try:
            scheduler.modify_job(self.job_id, next_run_time=datetime.now(UTC))
        except JobLookupError:
            log.warning("the rollout tick job %s is gone; the next start adds it again", self.job_id)

    def kick_on_events(self, messages: Sequence[InboundMessage]) -> None:
        """Kick when a batch that ingest stored holds an event a gate reacts to."""
        if any(is_gate_event(m) for m in messages):
            self.kick()

    def start(self) -> None:
        if self._scheduler is not None:
            raise RuntimeError("the rollout scheduler is already running")
        with _running_lock:
            if self.key in _running:
                raise RuntimeError(f"a rollout scheduler for {self.key} already runs in this process")
            _running[self.key] = self
        scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
            daemon=True,
        )
        scheduler.add_job(
            run_tick,
            "interval",
            seconds=self.interval_s,
            id=self.job_id,
            args=[self.key],
            next_run_time=datetime.now(UTC),
        )
        self.ctx.metrics.jobs.attach(scheduler)  # runs, failures, durations for /metrics
        try:
            scheduler.start()
        except BaseException:
            with _running_lock:
                _running.pop(self.key, None)
            raise
        self._scheduler = scheduler
        log.info("rollout engine ticks every %g s", self.interval_s)

    def stop(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        with _running_lock:
            if _running.get(self.key) is self:
                del _running[self.key]
