"""One training run from claim to decision, and the worker that runs them off the observe cycle.

:func:`run_pending` claims the oldest queued run of a fleet, one at a time per fleet, with a
guarded UPDATE (and, on PostgreSQL, a lock on the fleet's name), so two hub replicas never run
the same run or two runs of one fleet. :class:`TrainingWorker` runs the claimed run in a training
process of its own (``child.py``: not in the hub's threads, whose API must keep answering), at a
lower CPU priority; the observe cycle only starts it. :func:`execute_run` is the run itself:

1. **prepare**: the serving champion, its recipe (kind, seed, epochs) and the labelled uploads;
2. **train** (``cloud.training.runs.train_run``) on the base data set's training split plus the
   labelled rows not held out, validated first;
3. **optimize** (``model_tools.pipeline.optimize``) into a gated bundle whose lineage names the
   champion as parent, the trigger, every data set hash and this run;
4. **evaluate** the challenger's fp32 ONNX against the champion's artifact on the same held-out
   rows (``evaluate.py``);
5. **register** the bundle as a new version (``cloud.services.bundles``), whatever the decision:
   the registry keeps every version made, the run says whether it was promoted;
6. **policy** (``policy.py``): keep the champion, await approval, or start the canary rollout.

A step that fails ends the run in ``failed`` with a sentence naming the step and the cause; a
training process that dies (killed, out of memory) without recording why is failed by the worker
with its exit status or signal and the end of its log. The claim is a lease renewed while the run
makes progress; a run whose lease ran out (its replica died) is failed by the next
:func:`run_pending` with the reason, so the model can be retrained.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import exists, text, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from cloud.context import HubContext
from cloud.db import SessionFactory, transaction
from cloud.training.continuous.child import LOG_NAME, ChildJob, ChildProcess, check_picklable, child_env
from cloud.training.continuous.evaluate import DEFAULT_TOLERANCE
from cloud.training.continuous.machine import RunEvent, RunState
from cloud.training.continuous.service import SYSTEM, TrainingRunRecord, lock_run, record_transition
from cloud.training.continuous.tables import TrainingRun

if TYPE_CHECKING:
    from model_tools.data import DigitsSplits
    from model_tools.pipeline import OptimizeOptions

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_STOP_GRACE_S",
    "LostClaimError",
    "PipelineConfig",
    "TrainingWorker",
    "execute_run",
    "remove_bundle",
    "renewed_lease",
    "run_pending",
    "work_dir",
]

log = logging.getLogger(__name__)

# How long a claim holds without a heartbeat; a run renews it at every epoch and step.
DEFAULT_LEASE_S = 15 * 60.0
# How long a stopping hub waits for its training process to end after SIGTERM before it sends SIGKILL.
DEFAULT_STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class PipelineConfig:
    """How the worker trains; the defaults are the production ones, tests make it small.

    Pickled to the training process: ``base_data`` must be a function defined at a module's top level.
    """

    epochs: int | None = None
    """None: the champion's epochs, else the model kind's recipe."""
    optimize: OptimizeOptions | None = None
    """None: model_tools' defaults (prune, int8, TFLite when installed, full latency plan)."""
    base_data: Callable[[int], DigitsSplits] | None = None
    """The base data set for a seed; None: the digits splits (model_tools.data)."""
    tolerance: float = DEFAULT_TOLERANCE
    device: str | None = None
    lease_s: float = DEFAULT_LEASE_S


class LostClaimError(RuntimeError):
    """The run is no longer this worker's: its lease ran out and another replica failed it, or the hub
    is stopping."""


# --- claiming -------------------------------------------------------------------------------------


def _serialise_fleet(session: Session, fleet: str) -> None:
    # Two replicas claiming different queued runs of one fleet would both see no running run on
    # PostgreSQL (READ COMMITTED); SQLite's write lock serialises them already.
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(uuid.uuid5(uuid.NAMESPACE_URL, f"training/{fleet}").bytes[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=key))


def _expire_stale(session: Session, fleet: str, now: datetime) -> None:
    stale = session.exec(
        select(TrainingRun).where(
            TrainingRun.fleet == fleet,
            TrainingRun.state == RunState.RUNNING.value,
            col(TrainingRun.lease_until) < now,
        )
    ).all()
    for run in stale:
        run.error = (
            f"the hub replica {run.owner or 'unknown'} running it stopped answering: no progress "
            f"since its claim ran out at {run.lease_until:%Y-%m-%d %H:%M:%S} UTC"
        )
        record_transition(session, run, RunEvent.FAIL, actor=SYSTEM, now=now, reason=run.error)


def run_pending(
    sessions: SessionFactory, *, fleet: str, now: datetime, owner: str, lease_s: float = DEFAULT_LEASE_S
) -> TrainingRunRecord | None:
    """Claim the fleet's oldest queued run for ``owner`` and mark it running; None when one runs already
    or none waits. Runs whose claim ran out are failed first, with the reason."""
    with transaction(sessions) as session:
        _serialise_fleet(session, fleet)
        _expire_stale(session, fleet, now)
        session.flush()
        candidate = session.exec(
            select(TrainingRun.id)
            .where(TrainingRun.fleet == fleet, TrainingRun.state == RunState.QUEUED.value)
            .order_by(col(TrainingRun.created_at), col(TrainingRun.id))
        ).first()
        if candidate is None:
            return None
        other = aliased(TrainingRun)
        running = exists().where(col(other.fleet) == fleet, col(other.state) == RunState.RUNNING.value)
        # Guarded: only a queued run nobody claimed, and only while no run of the fleet is running.
        claimed = session.exec(
            update(TrainingRun)
            .where(
                col(TrainingRun.id) == candidate,
                col(TrainingRun.state) == RunState.QUEUED.value,
                col(TrainingRun.owner) == "",
                ~running,
            )
            .values(owner=owner, lease_until=now + timedelta(seconds=lease_s), step="starting")
        )
        if claimed.rowcount != 1:
            return None
        run = lock_run(session, candidate)
        assert run is not None
        record_transition(session, run, RunEvent.START, actor=SYSTEM, now=now, reason=f"claimed by {owner}")
        session.flush()
        return TrainingRunRecord.of(run)


def _default_owner() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# --- the worker -----------------------------------------------------------------------------------


class TrainingWorker:
    """Runs one claimed training run at a time in a training process of its own, off the observe cycle.

    A thread per run hands the process its job, waits for it to end, and then settles the run: a
    process that ended without recording the outcome fails it with the reason (the hub stopping, or
    the exit status or signal and the end of its log), and a run that started its canary rollout
    kicks the rollout engine, which the process cannot reach.
    """

    def __init__(
        self,
        ctx: HubContext,
        *,
        config: PipelineConfig | None = None,
        owner: str | None = None,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
    ) -> None:
        self.ctx = ctx
        self.config = config or PipelineConfig()
        check_picklable(self.config, "the training configuration (PipelineConfig)")
        self.owner = owner or _default_owner()
        self.stop_grace_s = stop_grace_s
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._child: ChildProcess | None = None
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()
        self.finished: list[TrainingRunRecord] = []

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._watcher is not None

    @property
    def pid(self) -> int | None:
        """The process id of the run under way; None when idle."""
        with self._lock:
            return self._child.pid if self._child is not None else None

    def start_pending(self, now: datetime | None = None) -> TrainingRunRecord | None:
        """Claim the next queued run of the fleet and start it; None when busy, stopping, or none waits."""
        with self._lock:
            if self._watcher is not None or self._stopping.is_set():
                return None
            # Before claiming: a clock that cannot cross to the process must not fail runs one by one.
            check_picklable(self.ctx.clock, "the hub's clock")
            record = run_pending(
                self.ctx.sessions,
                fleet=self.ctx.settings.fleet,
                now=now or self.ctx.clock(),
                owner=self.owner,
                lease_s=self.config.lease_s,
            )
            if record is None:
                return None
            job = ChildJob.for_run(self.ctx, record.id, owner=self.owner, config=self.config)
            log_path = work_dir(self.ctx, record.id) / LOG_NAME
            try:
                child = ChildProcess(job, log_path=log_path, env=child_env(self.ctx.settings))
            except OSError as e:
                log.exception("training run %s: could not start its process", record.id[:8])
                _fail(self.ctx, record.id, self.owner, f"the training process could not be started: {e}")
                self.finished.append(_read(self.ctx, record.id))
                return None
            log.info("training run %s runs in process %d; its log: %s", record.id[:8], child.pid, log_path)
            watcher = threading.Thread(
                target=self._watch, args=(child,), name=f"training-{record.id[:8]}", daemon=True
            )
            self._child, self._watcher = child, watcher
            watcher.start()
            return record

    def _watch(self, child: ChildProcess) -> None:
        result: TrainingRunRecord | None = None
        try:
            returncode = child.wait()
            log.info("training run %s: process %d ended (%d)", child.run_id[:8], child.pid, returncode)
            result = self._settle(child, returncode)
        except Exception:
            # The database failed while recording the outcome: the lease runs out and the next
            # claim fails the run with that reason.
            log.exception("training run %s: could not record its outcome", child.run_id[:8])
        with self._idle:
            if result is not None:
                self.finished.append(result)
            self._child = self._watcher = None
            self._idle.notify_all()

    def _settle(self, child: ChildProcess, returncode: int) -> TrainingRunRecord:
        """Fail the run if its process ended without recording an outcome; kick a rollout it started."""
        run = _read(self.ctx, child.run_id)
        if run.state == RunState.RUNNING.value and run.owner == self.owner:
            if self._stopping.is_set():
                reason = f"the hub stopped while the run was {run.step or 'starting'}; start it again"
            else:
                reason = child.failure(returncode, run.step)
            _fail(self.ctx, run.id, self.owner, reason)
        elif _promoted_without_rollout(run):
            # The process approved the challenger (policy canary) and died before the rollout was created.
            _fail(self.ctx, run.id, self.owner, child.failure(returncode, "starting the canary rollout"))
        else:
            log.info("training run %s is %s", run.id[:8], run.state)
            if run.state == RunState.ROLLED_OUT.value:
                self.ctx.kick_rollouts()
            return run
        return _read(self.ctx, child.run_id)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no run is under way; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._watcher is None, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Start nothing more; a run under way is stopped (SIGTERM, then SIGKILL after the grace period)
        and failed, with the reason."""
        self._stopping.set()
        with self._lock:
            child = self._child
        if child is not None:
            child.terminate()
            if not self.wait_idle(min(self.stop_grace_s, timeout)):
                log.warning(
                    "training run %s: process %d did not stop within %g s of SIGTERM; killing it",
                    child.run_id[:8], child.pid, min(self.stop_grace_s, timeout),
                )  # fmt: skip
                child.kill()
        if not self.wait_idle(timeout):
            log.warning("training worker: the run under way did not stop within %g s", timeout)


def _read(ctx: HubContext, run_id: str) -> TrainingRunRecord:
    with ctx.sessions() as session:
        row = session.get(TrainingRun, run_id)
        assert row is not None
        return TrainingRunRecord.of(row)


def _promoted_without_rollout(run: TrainingRunRecord) -> bool:
    # APPROVED with the policy's promote as its last step: an operator's approval commits APPROVED and
    # ROLLED_OUT together, so only a run's own process leaves a run here.
    last = run.transitions[-1] if run.transitions else {}
    return (
        run.state == RunState.APPROVED.value
        and last.get("event") == RunEvent.PROMOTE.value
        and last.get("actor") == SYSTEM
    )


# --- one run --------------------------------------------------------------------------------------


def execute_run(
    ctx: HubContext,
    run_id: str,
    *,
    owner: str,
    config: PipelineConfig | None = None,
    stopping: threading.Event | None = None,
) -> TrainingRunRecord:
    """Run the claimed run ``run_id`` to its decision; a failed step fails the run with the reason."""
    from cloud.training.continuous.steps import RunSteps, StepError

    steps = RunSteps(ctx, run_id, owner=owner, config=config or PipelineConfig(), stopping=stopping)
    try:
        steps.run()
    except LostClaimError as e:
        log.warning("training run %s: %s", run_id[:8], e)
        if stopping is not None and stopping.is_set():
            _fail(ctx, run_id, owner, f"the hub stopped while the run was {steps.step}; start it again")
    except StepError as e:
        _fail(ctx, run_id, owner, str(e))
    except Exception as e:  # a bug or an unforeseen library error: still recorded, with its type
        log.exception("training run %s failed while %s", run_id[:8], steps.step)
        _fail(ctx, run_id, owner, f"{steps.step} failed: {type(e).__name__}: {e}")
    finally:
        steps.cleanup()
    return _read(ctx, run_id)


def _fail(ctx: HubContext, run_id: str, owner: str, error: str) -> None:
    with transaction(ctx.sessions) as session:
        run = lock_run(session, run_id)
        if run is None:
            return
        state = RunState(run.state)
        if state is RunState.RUNNING and run.owner == owner:
            event = RunEvent.FAIL
        elif state is RunState.APPROVED:
            event = RunEvent.ROLLOUT_FAILED
        else:
            log.warning("training run %s is %s: not failing it (%s)", run_id[:8], state, error)
            return
        run.error = error
        record_transition(session, run, event, actor=SYSTEM, now=ctx.clock(), reason=error)


def work_dir(ctx: HubContext, run_id: str) -> Path:
    """Where a run keeps its files: ``{data_dir}/training/{run id}`` (weights and run.json stay)."""
    return ctx.settings.data_dir / "training" / run_id


def remove_bundle(folder: Path) -> None:
    """The bundle's files are in the artifact store once registered; the copy is not kept."""
    shutil.rmtree(folder, ignore_errors=True)


def renewed_lease(config: PipelineConfig, now: datetime) -> datetime:
    return now + timedelta(seconds=config.lease_s)
