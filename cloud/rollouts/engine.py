"""The rollout engine: one ``tick`` advances every ACTIVE rollout of the hub's fleet by what is due.

A tick is idempotent: it reads each rollout's stored state and acts on what the database says
now, so ticking twice, or on two replicas, or after a crash, does no step twice. Per state:

- draft: start;
- running / baking: judge the stage's gates first (a failure pauses or aborts at once, as the
  plan says), then offer the target to the stage's devices not offered yet (late joiners
  included), at most ``max_rate`` a minute and only inside the maintenance window; a running
  stage whose online devices were all offered (at least ``min_devices``) bakes; a baking stage
  whose bake time passed with gates that pass is promoted, or waits for an operator's approval;
- waiting_approval: the gates still watch the stage's devices;
- promoting: the next stage becomes current, or the rollout completes;
- aborting: every offered device gets its previous version back, then the rollout is rolled back.

Devices that are offline now are offered when they come back (a late joiner): they cannot report,
and offering them would only count them against the offline gate.

One replica advances a rollout at a time: its row is locked for the decision (``FOR UPDATE SKIP
LOCKED`` and ``pg_try_advisory_xact_lock`` on PostgreSQL; on SQLite ``BEGIN IMMEDIATE`` makes the
database write lock the lease), and the lease columns cover the signing that follows the commit.
Desired states are written in the decision's transaction, then sealed and published.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text, update
from sqlmodel import Session, col, func, select

from cloud.context import HubContext
from cloud.errors import DeliveryError
from cloud.models import Device, DeviceState, Rollout, RolloutDevice
from cloud.rollouts import windows
from cloud.rollouts.eligibility import Target, eligible, load_target
from cloud.rollouts.figures import device_outcomes, figures_json, stage_figures
from cloud.rollouts.gates import Verdict, judge_all
from cloud.rollouts.machine import ACTIVE, RolloutEvent, RolloutState
from cloud.rollouts.membership import load_plan, plan_members
from cloud.rollouts.offers import lock_devices, offer, restore
from cloud.rollouts.plan import RolloutPlan, Stage
from cloud.rollouts.service import SYSTEM, lock_rollout, record_transition
from cloud.services import desired
from cloud.sql_lists import in_list
from model_tools.trial_policy import PolicySource

__all__ = ["LEASE", "OWNER", "rate_window", "tick"]

log = logging.getLogger(__name__)

# This process's name in the lease columns.
OWNER = f"{socket.gethostname()[:32]}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
# Long enough to seal and publish a stage's desired states; a crashed replica's lease lapses after it.
LEASE = timedelta(seconds=60)
# Steps one rollout may take in one tick (draft -> running -> baking ... without waiting a tick each).
MAX_STEPS = 8


@dataclass(slots=True)
class _Step:
    transitioned: bool = False
    changed: list[Device] = field(default_factory=list)


def tick(ctx: HubContext, now: datetime | None = None, *, owner: str = OWNER) -> list[str]:
    """Advance every ACTIVE rollout of the fleet once; returns the ids of those that changed.

    A rollout that fails to advance does not hold the others up: each is tried, then the first
    error is raised.
    """
    now = now or ctx.clock()
    with ctx.sessions() as session:
        ids = list(
            session.exec(
                select(Rollout.id)
                .where(Rollout.fleet == ctx.settings.fleet, col(Rollout.state).in_([s.value for s in ACTIVE]))
                .order_by(col(Rollout.created_at), col(Rollout.id))
            ).all()
        )
        session.rollback()  # on SQLite the read began a write transaction: end it at once
    advanced: list[str] = []
    errors: list[Exception] = []
    for rollout_id in ids:
        try:
            if _advance(ctx, rollout_id, now, owner):
                advanced.append(rollout_id)
        except Exception as e:
            log.exception("rollout %s did not advance", rollout_id)
            errors.append(e)
    if errors:
        raise errors[0]
    return advanced


def _advance(ctx: HubContext, rollout_id: str, now: datetime, owner: str) -> bool:
    moved = False
    for _ in range(MAX_STEPS):
        step = _step(ctx, rollout_id, now, owner)
        if step is None:
            break
        moved = moved or step.transitioned or bool(step.changed)
        if not step.transitioned:
            break
    return moved


def _advisory_key(rollout_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"rollout/{rollout_id}".encode()).digest()[:8], "big", signed=True)


def _take(session: Session, rollout_id: str, now: datetime, owner: str) -> Rollout | None:
    """The rollout locked for this step, or None when another replica has it or it has ended."""
    rollout = lock_rollout(session, rollout_id, skip_locked=True)
    if rollout is None:
        return None
    if session.get_bind().dialect.name == "postgresql":
        key = _advisory_key(rollout_id)
        got = session.exec(text("SELECT pg_try_advisory_xact_lock(:key)").bindparams(key=key)).scalar()  # type: ignore[call-overload]
        if not got:
            return None
    if RolloutState(rollout.state) not in ACTIVE:
        return None
    leased = rollout.lease_owner and rollout.lease_owner != owner
    if leased and rollout.lease_until is not None and rollout.lease_until > now:
        return None
    return rollout


def _step(ctx: HubContext, rollout_id: str, now: datetime, owner: str) -> _Step | None:
    with ctx.sessions() as session:
        try:
            rollout = _take(session, rollout_id, now, owner)
            if rollout is None:
                session.rollback()
                return None
            step = _act(session, rollout, load_plan(rollout), now)
            states = []
            if step.changed:
                rollout.lease_owner, rollout.lease_until = owner, now + LEASE
                session.add(rollout)
                session.flush()
                states = desired.compose(
                    session, step.changed, fleet=rollout.fleet, artifact_endpoint=ctx.artifact_endpoint
                )
            session.commit()
        except BaseException:
            session.rollback()
            raise
        if step.changed:
            # Signed after the commit (signing may need a transaction of its own), and the
            # director's counters committed before anything is published.
            payloads = desired.seal(session, states, ctx.signing)
            session.exec(
                update(Rollout)
                .where(col(Rollout.id) == rollout_id, col(Rollout.lease_owner) == owner)
                .values(lease_owner="", lease_until=None)
            )
            session.commit()
            try:
                desired.publish(ctx.publisher, payloads)
            except DeliveryError as e:
                log.warning("rollout %s: %s", rollout_id, e)
    return step


def _act(session: Session, rollout: Rollout, plan: RolloutPlan, now: datetime) -> _Step:
    state = RolloutState(rollout.state)
    _sync_outcomes(session, rollout)
    if state is RolloutState.DRAFT:
        return _transition(session, rollout, RolloutEvent.START, now, "the engine picked it up")
    if state is RolloutState.ABORTING:
        return _restore_all(session, rollout, now)
    if state is RolloutState.PROMOTING:
        if rollout.stage + 1 < len(plan.stages):
            nxt = plan.stages[rollout.stage + 1]
            return _transition(
                session,
                rollout,
                RolloutEvent.PROMOTED,
                now,
                f"stage {nxt.name} is current",
                stage=rollout.stage + 1,
            )
        return _transition(session, rollout, RolloutEvent.PROMOTED_LAST, now, "every stage was promoted")
    if state is RolloutState.PAUSED:
        _plan_next(rollout, "paused: waiting for an operator to resume, abort or roll back", None)
        return _Step()
    stage = plan.stages[rollout.stage]
    figures = stage_figures(session, rollout, rollout.stage, now=now, offline_grace=_grace(plan))
    verdict = judge_all(figures, plan.gates)
    if verdict.outcome == "fail":
        event = (
            RolloutEvent.GATES_FAILED_PAUSE if plan.on_failure == "pause" else RolloutEvent.GATES_FAILED_ABORT
        )
        return _transition(
            session,
            rollout,
            event,
            now,
            verdict.detail,
            figures=figures_json(rollout.stage, figures, verdict),
        )
    if state is RolloutState.WAITING_APPROVAL:
        _plan_next(rollout, f"stage {stage.name} baked: waiting for an operator to approve", None)
        return _Step()
    step, remaining, next_at, why = _offer_stage(session, rollout, plan, now)
    # Percents are cumulative, and so is a stage's size: a stage that adds no device of its own
    # (its share was reached already) still holds those of the stages before it.
    in_stage = _offered_count(session, rollout.id, rollout.stage)
    if state is RolloutState.RUNNING:
        if remaining == 0 and in_stage >= stage.min_devices:
            figures = stage_figures(session, rollout, rollout.stage, now=now, offline_grace=_grace(plan))
            done = _transition(
                session, rollout, RolloutEvent.STAGE_OFFERED, now,
                f"every device of stage {stage.name} was offered ({in_stage} so far)",
                figures=figures_json(rollout.stage, figures, judge_all(figures, plan.gates)),
            )  # fmt: skip
            done.changed = step.changed
            return done
        if remaining == 0:
            needs = f"{in_stage} of the {stage.min_devices} devices it needs"
            why = f"stage {stage.name} has {needs}: waiting for more"
        _plan_next(rollout, why, next_at)
        return step
    return _bake(session, rollout, stage, verdict, step, now=now, offline_grace=_grace(plan))


def _grace(plan: RolloutPlan) -> timedelta:
    return timedelta(seconds=plan.gates.offline_grace)


def _bake(
    session: Session,
    rollout: Rollout,
    stage: Stage,
    verdict: Verdict,
    step: _Step,
    *,
    now: datetime,
    offline_grace: timedelta,
) -> _Step:
    baked_at = rollout.state_entered_at + timedelta(seconds=stage.bake)
    if now < baked_at:
        _plan_next(rollout, f"stage {stage.name} bakes until {baked_at.isoformat()}", baked_at)
        return step
    if verdict.outcome != "pass":
        _plan_next(rollout, f"stage {stage.name} baked; gates wait: {verdict.detail}", None)
        return step
    event = RolloutEvent.BAKED_NEEDS_APPROVAL if stage.approval else RolloutEvent.BAKED
    figures = stage_figures(session, rollout, rollout.stage, now=now, offline_grace=offline_grace)
    done = _transition(
        session, rollout, event, now, f"stage {stage.name} baked {stage.bake:g} s; {verdict.detail}",
        figures=figures_json(rollout.stage, figures, verdict),
    )  # fmt: skip
    done.changed = step.changed
    return done


def _transition(
    session: Session,
    rollout: Rollout,
    event: RolloutEvent,
    now: datetime,
    reason: str,
    *,
    figures: dict[str, object] | None = None,
    stage: int | None = None,
) -> _Step:
    record_transition(
        session, rollout, event, actor=SYSTEM, now=now, reason=reason, figures=figures, stage=stage
    )
    rollout.next_action = ""
    return _Step(transitioned=True)


def _plan_next(rollout: Rollout, what: str, at: datetime | None) -> None:
    # Written only when it changes: an unchanged row is not rewritten every tick.
    if rollout.next_action != what or rollout.next_action_at != at:
        rollout.next_action, rollout.next_action_at = what, at


def _sync_outcomes(session: Session, rollout: Rollout) -> None:
    """Copy each offered device's outcome from its events onto its row (what the view lists)."""
    found = device_outcomes(session, rollout)
    if not found:
        return
    rows = session.exec(
        select(RolloutDevice).where(
            RolloutDevice.rollout_id == rollout.id,
            in_list(RolloutDevice.device_id, found),
            RolloutDevice.outcome != "restored",
        )
    ).all()
    for row in rows:
        if row.outcome != found[row.device_id]:
            row.outcome = found[row.device_id]
            session.add(row)


def _offered_count(session: Session, rollout_id: str, stage: int) -> int:
    return int(
        session.exec(
            select(func.count()).where(
                RolloutDevice.rollout_id == rollout_id, col(RolloutDevice.stage) <= stage
            )
        ).one()
    )


def rate_window(max_rate: float) -> tuple[int, timedelta]:
    """At most ``n`` offers per window: ``max_rate`` a minute on average, with bursts of at most
    ``max(1, floor(max_rate))`` devices (a rate below one a minute offers one at a time)."""
    n = max(1, math.floor(max_rate))
    return n, timedelta(seconds=60.0 * n / max_rate)


def _budget(session: Session, rollout: Rollout, stage: Stage, now: datetime) -> tuple[int, datetime | None]:
    """How many devices may be offered now, and when the next may be when none can."""
    if stage.max_rate is None:
        return 1 << 30, None
    n, window = rate_window(stage.max_rate)
    recent = list(
        session.exec(
            select(RolloutDevice.offered_at)
            .where(RolloutDevice.rollout_id == rollout.id, col(RolloutDevice.offered_at) > now - window)
            .order_by(col(RolloutDevice.offered_at))
        ).all()
    )
    allowed = max(0, n - len(recent))
    oldest = recent[0] if recent else None
    return allowed, (oldest + window if allowed == 0 and oldest is not None else None)


def _offer_stage(
    session: Session, rollout: Rollout, plan: RolloutPlan, now: datetime
) -> tuple[_Step, int, datetime | None, str]:
    """Offer what the rate and the window allow; returns the step, how many online devices still
    wait, when the engine can offer next (None: at the next tick), and a sentence on what it waits for."""
    stage = plan.stages[rollout.stage]
    members = plan_members(session, rollout, plan)
    offered = set(
        session.exec(select(RolloutDevice.device_id).where(RolloutDevice.rollout_id == rollout.id)).all()
    )
    candidates = [d for d in members.up_to(rollout.stage) if d not in offered]
    target: Target = load_target(session, rollout)
    found = eligible(session, rollout, target, candidates)
    ready = [d for d in candidates if d in found.devices and found.devices[d].state != DeviceState.OFFLINE]
    if not ready:
        return _Step(), 0, None, f"stage {stage.name}: no device waits to be offered"
    if not windows.is_open(plan.maintenance_window, now):
        opens = windows.next_open(plan.maintenance_window, now)
        return (
            _Step(),
            len(ready),
            opens,
            f"maintenance window closed: {len(ready)} device(s) wait until {opens.isoformat()}",
        )
    allowed, next_at = _budget(session, rollout, stage, now)
    chosen = ready[:allowed]
    step = _Step()
    if chosen:
        locked = lock_devices(session, chosen)
        order = {d: i for i, d in enumerate(chosen)}
        locked.sort(key=lambda d: order[d.id])
        offer(
            session, rollout_id=rollout.id, stage=rollout.stage, target=target,
            devices=locked, variants=found.variant, now=now,
            trial_policy=desired.override(plan.trial_policy_for(stage), PolicySource.ROLLOUT),
        )  # fmt: skip
        session.flush()
        step.changed = locked
        log.info(
            "rollout %s: offered %s %s to %d device(s)",
            rollout.name,
            target.name,
            target.version,
            len(locked),
        )
    remaining = len(ready) - len(chosen)
    if remaining and next_at is None and stage.max_rate is not None:
        _, window = rate_window(stage.max_rate)
        next_at = now + window
    why = (
        f"stage {stage.name}: {remaining} device(s) wait, at most {stage.max_rate:g} a minute"
        if remaining
        else ""
    )
    return step, remaining, next_at, why


def _restore_all(session: Session, rollout: Rollout, now: datetime) -> _Step:
    rows = list(
        session.exec(
            select(RolloutDevice).where(
                RolloutDevice.rollout_id == rollout.id,
                col(RolloutDevice.offered_at).is_not(None),
                RolloutDevice.outcome != "restored",
            )
        ).all()
    )
    changed, skipped = restore(session, load_target(session, rollout), rows, now)
    reason = f"gave {len(changed)} device(s) their previous version back"
    if skipped:
        shown = "; ".join(f"{d}: {why}" for d, why in sorted(skipped.items())[:10])
        reason += f"; left {len(skipped)} as they are ({shown})"
    step = _transition(
        session,
        rollout,
        RolloutEvent.ROLLED_BACK,
        now,
        reason,
        figures={"restored": len(changed), "left": len(skipped)},
    )
    step.changed = changed
    return step
