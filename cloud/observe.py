"""The observe cycle: what turns device reports into rollups, scores, alerts and retraining.

Every ``observe_interval_s`` the hub runs, in order:

1. rebuild the cohort rollups whose buckets received rows (``cloud.telemetry.rollup``);
2. score drift and labelled accuracy on the rebuilt rollups (``cloud.drift.score``);
3. evaluate the alert rules (``cloud.alerts.service``) and deliver due notifications;
4. check the continuous-training triggers with the alert changes of step 3, and start a
   queued training run on the worker (``cloud.training.continuous``);
5. expire raw rows and old rollups (``cloud.telemetry.retention``), at most hourly.

Only the scheduler leader (``cloud.leader``) runs the scheduled cycles; on the other replicas the
job returns ``JOB_NOT_LEADER`` at once. Each step is also idempotent and keyed in the database, so
two replicas running the cycle at once (a kick, the overlap of a leadership change) store each
rollup, score and alert transition once. A step that fails is logged and the cycle goes on: a
broken webhook receiver must not stop drift scoring. ``kick()`` runs a cycle now, leader or not
(the demo, tests, an operator who does not want to wait for the interval).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from cloud.alerts import service as alerts
from cloud.alerts import webhooks
from cloud.context import HubContext
from cloud.drift import score as drift
from cloud.drift.baseline import BaselineSource
from cloud.observability.metrics import JOB_FAILED, JOB_NOT_LEADER
from cloud.telemetry import retention, rollup
from cloud.training.continuous import pipeline as ct_pipeline
from cloud.training.continuous import triggers

__all__ = ["CycleReport", "ObserveCycle"]

log = logging.getLogger(__name__)

_RETENTION_EVERY = timedelta(hours=1)


@dataclass
class CycleReport:
    """What one cycle did; ``failed`` names the steps that raised (and were logged)."""

    at: datetime
    seconds: float = 0.0
    rollups: int = 0
    scores: int = 0
    alert_changes: list[Any] = field(default_factory=list)
    training_runs: int = 0
    expired: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


class ObserveCycle:
    """Runs the cycle every ``interval_s`` seconds on a background scheduler, and at once when kicked."""

    def __init__(
        self,
        ctx: HubContext,
        *,
        interval_s: float | None = None,
        training: ct_pipeline.PipelineConfig | None = None,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.ctx = ctx
        self._is_leader = is_leader
        self._kicked = threading.Event()
        self.interval_s = interval_s or ctx.settings.observe_interval_s
        self.baseline = BaselineSource(ctx.sessions, ctx.store)
        self._scheduler: BackgroundScheduler | None = None
        self._lock = threading.Lock()
        self._last_retention: datetime | None = None
        self._done = threading.Condition()
        self.cycles = 0
        self.last: CycleReport | None = None
        self.worker = ct_pipeline.TrainingWorker(ctx, config=training)

    # --- one cycle ------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> CycleReport:
        """One cycle now (serialized with the scheduled ones); never raises."""
        with self._lock:
            started = time.monotonic()
            at = now or self.ctx.clock()
            report = CycleReport(at=at)
            s, fleet, sessions = self.ctx.settings, self.ctx.settings.fleet, self.ctx.sessions
            keys: Sequence[Any] = (
                self._step(
                    report,
                    "rollup",
                    lambda: rollup.rebuild(
                        sessions,
                        fleet=fleet,
                        bucket_s=s.rollup_bucket_s,
                        now=at,
                        raw_retention_s=s.raw_retention_s,
                    ),
                )
                or []
            )
            report.rollups = len(keys)
            if keys:
                report.scores = (
                    self._step(
                        report,
                        "drift",
                        lambda: drift.score(
                            sessions,
                            fleet=fleet,
                            keys=keys,
                            alpha=s.drift_alpha,
                            now=at,
                            baseline=self.baseline,
                        ),
                    )
                    or 0
                )
            report.alert_changes = (
                self._step(report, "alerts", lambda: alerts.evaluate(sessions, fleet=fleet, now=at)) or []
            )
            self._step(report, "webhooks", lambda: webhooks.deliver_due(sessions, settings=s, now=at))
            queued = (
                self._step(
                    report,
                    "training-triggers",
                    lambda: triggers.check(
                        sessions, fleet=fleet, now=at, changes=report.alert_changes, settings=s
                    ),
                )
                or []
            )
            report.training_runs = len(queued)
            self._step(report, "training", lambda: self.worker.start_pending(now=at))
            if self._last_retention is None or at - self._last_retention >= _RETENTION_EVERY:
                report.expired = (
                    self._step(
                        report,
                        "retention",
                        lambda: retention.expire(
                            sessions,
                            now=at,
                            raw_retention_s=s.raw_retention_s,
                            rollup_retention_days=s.rollup_retention_days,
                        ),
                    )
                    or {}
                )
                self._last_retention = at
            report.seconds = time.monotonic() - started
            if report.seconds > self.interval_s:
                log.warning(
                    "an observe cycle took %.1f s, longer than its interval of %g s",
                    report.seconds,
                    self.interval_s,
                )
            with self._done:
                self.cycles += 1
                self.last = report
                self._done.notify_all()
            return report

    @staticmethod
    def _step(report: CycleReport, name: str, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except Exception:
            log.exception("observe step %s failed; the next cycle retries it", name)
            report.failed.append(name)
            return None

    def wait_cycles(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` cycles have run in this process; False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self.cycles >= count, timeout)

    # --- scheduling -----------------------------------------------------------------------------

    def _job(self) -> bool | str | None:
        kicked = self._kicked.is_set()
        self._kicked.clear()
        if not kicked and not self._is_leader():
            return JOB_NOT_LEADER
        # A cycle already under way (a kick, the demo) covers this one: skip rather than queue behind it.
        if self._lock.locked():
            return None
        # A failed step is logged and retried by the next cycle; the job's listener counts it.
        return JOB_FAILED if self.run_once().failed else None

    def kick(self) -> None:
        """Run a cycle as soon as possible (coalesced with one due or under way)."""
        scheduler = self._scheduler
        if scheduler is not None:
            self._kicked.set()
            scheduler.modify_job("edgefleet-observe", next_run_time=datetime.now(UTC))

    def start(self) -> None:
        if self._scheduler is not None:
            raise RuntimeError("the observe cycle is already running")
        scheduler = BackgroundScheduler(
            # Two instances: the second finds the cycle under way and returns at once (``_job``),
            # rather than APScheduler logging a skipped run each time a cycle outlasts its interval.
            job_defaults={"coalesce": True, "max_instances": 2, "misfire_grace_time": None},
            timezone=UTC,
            daemon=True,
        )
        scheduler.add_job(self._job, "interval", seconds=self.interval_s, id="edgefleet-observe")
        self.ctx.metrics.jobs.attach(scheduler)  # runs, failures, durations for /metrics
        scheduler.start()
        self._scheduler = scheduler
        log.info("observe cycle every %g s", self.interval_s)

    def stop(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        self.worker.stop()
