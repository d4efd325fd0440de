"""Re-signing before expiry, on an APScheduler interval job.

Each tick re-signs the online roles that have less than ``resign_fraction`` of their
validity left (timestamp every half day with the defaults), mirrors newly registered
artifacts into the targets metadata, and re-signs the desired states whose signature
expires soon, handing them to ``publish`` (the MQTT transport). A tick that fails is
logged and tried again at the next interval: expiry is days away, an interval minutes.
Only the scheduler leader (``cloud.leader``) re-signs; on the other replicas of the hub the job
returns ``JOB_NOT_LEADER`` at once, so each role gets one new version, not one per replica.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from apscheduler.schedulers.background import BackgroundScheduler

from cloud.db import SessionFactory
from cloud.observability.metrics import JOB_FAILED, JOB_NOT_LEADER, JobMetrics
from cloud.services.director import Director
from cloud.tuf.repository import TufRepository
from cloud.tuf.rotation import RotationService
from cloud.tuf.sync import sync_targets

__all__ = ["ResignScheduler", "TickResult"]

log = logging.getLogger(__name__)
JOB_ID = "edgefleet-tuf-resign"


@dataclass(slots=True)
class TickResult:
    roles: list[str] = field(default_factory=list)
    targets_synced: bool = False
    desired: int = 0


class ResignScheduler:
    def __init__(
        self,
        repo: TufRepository,
        director: Director,
        sessions: SessionFactory,
        publish: Callable[[Sequence[tuple[str, bytes]]], object],
        *,
        interval_s: float | None = None,
        jobs: JobMetrics | None = None,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.repo = repo
        self._is_leader = is_leader
        self._jobs = jobs  # counts the ticks for /metrics
        self.director = director
        self._sessions = sessions
        self._publish = publish
        self.interval_s = interval_s or repo.settings.check_interval_s()
        self._scheduler: BackgroundScheduler | None = None

    def tick(self) -> TickResult:
        result = TickResult()
        # Root first: a new root version may name new keys that the online roles are then signed with.
        root = ["root"] if RotationService(self.repo).refresh_root_if_expiring() else []
        result.roles = root + self.repo.refresh()
        result.targets_synced = sync_targets(self.repo)
        with self._sessions() as session:
            envelopes = self.director.resign(session)
            session.commit()
        result.desired = len(envelopes)
        if envelopes:
            self._publish(envelopes)
        return result

    def _safe_tick(self) -> bool | str | None:
        if not self._is_leader():
            return JOB_NOT_LEADER
        try:
            self.tick()
        except Exception:  # the next tick retries; expiry is far longer than the interval
            log.exception("re-signing tick failed; retrying at the next interval")
            return JOB_FAILED  # counted by the job listener
        return None

    def start(self) -> None:
        if self._scheduler is not None:
            raise RuntimeError("the re-sign scheduler is already running")
        scheduler = BackgroundScheduler(daemon=True)
        scheduler.add_job(
            self._safe_tick, "interval", seconds=self.interval_s, id=JOB_ID, max_instances=1, coalesce=True
        )
        if self._jobs is not None:
            self._jobs.attach(scheduler)
        scheduler.start()
        self._scheduler = scheduler
        log.info("re-signing metadata and desired states every %.0f s", self.interval_s)

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
