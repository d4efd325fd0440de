"""Rollouts as the API and the CLI see them: create, find, list, and an operator's actions.

Every change of state goes through :func:`record_transition`, which asks the state machine
(``machine.next_state``) and stores the step with who did it (``system`` for the engine, the
token's name for a person), why, and the figures that caused it. Role checks are the API's;
the actor is recorded here. The engine (``engine.py``) advances rollouts on its own; after an
action the API kicks it (``HubContext.kick_rollouts``) so the change takes effect at once.

One ACTIVE rollout per device and target kind: a new rollout whose stages would take a device
that an active rollout of the same kind holds (offered, or would still offer) is refused with
the devices listed, unless it supersedes that rollout.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, func, select

from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError, InvalidInputError, NotFoundError
from cloud.models import FirmwareImage, ModelVersion, Rollout, RolloutDevice, RolloutTransition
from cloud.rollouts.machine import ACTIVE, RolloutEvent, RolloutState, next_state
from cloud.rollouts.membership import load_plan, plan_members
from cloud.rollouts.plan import FirmwareTarget, PlanError, RolloutPlan
from cloud.rollouts.view import RolloutView, rollout_view
from cloud.services.cohorts import get_cohort, register_cohort_in_use
from cloud.services.lookup import resolve
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page

__all__ = [
    "SYSTEM",
    "RolloutView",
    "abort",
    "approve",
    "create_rollout",
    "get_rollout",
    "list_rollouts",
    "lock_rollout",
    "pause",
    "record_transition",
    "resume",
    "rollback",
    "rollout_view",
]

log = logging.getLogger(__name__)

# The actor of the engine's own transitions.
SYSTEM = "system"
# How many held devices a conflict lists before "and N more".
SHOWN_DEVICES = 10


def record_transition(
    session: Session,
    rollout: Rollout,
    event: RolloutEvent,
    *,
    actor: str,
    now: datetime,
    reason: str = "",
    figures: dict[str, Any] | None = None,
    stage: int | None = None,
) -> RolloutState:
    """Move ``rollout`` by ``event`` (IllegalTransition when the table has no row) and store the step.

    ``stage``: the stage the rollout moves to (promotion), else it stays. The caller holds the row
    (``lock_rollout``) and commits.
    """
    before = RolloutState(rollout.state)
    after = next_state(before, event)
    seq = session.exec(
        select(func.coalesce(func.max(RolloutTransition.seq), 0)).where(
            RolloutTransition.rollout_id == rollout.id
        )
    ).one()
    if stage is not None and stage != rollout.stage:
        rollout.stage = stage
        rollout.stage_entered_at = now
    session.add(
        RolloutTransition(
            rollout_id=rollout.id,
            seq=int(seq) + 1,
            at=now,
            from_state=before.value,
            to_state=after.value,
            event=RolloutEvent(event).value,
            stage=rollout.stage,
            actor=actor,
            reason=reason,
            figures=figures or {},
        )
    )
    rollout.state = after.value
    rollout.state_entered_at = now
    rollout.updated_at = now
    rollout.next_action_at = None
    session.add(rollout)
    log.info(
        "rollout %s (%s): %s -[%s by %s]-> %s%s",
        rollout.name, rollout.id[:8], before, event, actor, after, f": {reason}" if reason else "",
    )  # fmt: skip
    return after


def lock_rollout(session: Session, rollout_id: str, *, skip_locked: bool = False) -> Rollout | None:
    """The rollout's row, fresh and locked until the caller commits (PostgreSQL; SQLite's write
    lock serialises writers anyway). ``skip_locked``: None when another transaction holds it."""
    query = (
        select(Rollout)
        .where(Rollout.id == rollout_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    return session.exec(query).first()


def get_rollout(session: Session, fleet: str, rollout_id: str) -> Rollout:
    """A rollout of ``fleet`` by its id or a unique prefix of it."""
    return resolve(
        session, Rollout, Rollout.id, rollout_id, what="rollout", where=[col(Rollout.fleet) == fleet]
    )


def list_rollouts(
    session: Session,
    fleet: str,
    *,
    state: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[Rollout]:
    """A page of the fleet's rollouts, newest first."""
    query = select(Rollout).where(Rollout.fleet == fleet)
    if state is not None:
        try:
            query = query.where(Rollout.state == RolloutState(state).value)
        except ValueError:
            raise InvalidInputError(
                f"invalid rollout state {state!r}: expected one of {', '.join(RolloutState)}"
            ) from None
    return keyset_page(
        session,
        query,
        [Rollout.created_at, Rollout.id],
        listing="rollouts",
        key_of=lambda r: (r.created_at, r.id),
        limit=limit,
        cursor=cursor,
        descending=True,
    )


# --- creating ------------------------------------------------------------------------------------


def _target_problems(session: Session, plan: RolloutPlan) -> list[str]:
    target = plan.target
    if isinstance(target, FirmwareTarget):
        found = session.exec(
            select(FirmwareImage.id).where(
                FirmwareImage.name == target.name,
                FirmwareImage.version == target.version,
                FirmwareImage.kind == "full",
            )
        ).first()
        if found is None:
            expected = f"expected a registered version of firmware {target.name}"
            return [f"target.version: {expected}, got {target.version!r}"]
        return []
    if session.exec(select(ModelVersion.id).where(ModelVersion.name == target.model)).first() is None:
        return [f"target.model: expected a registered model's name, got {target.model!r}"]
    found_model = session.exec(
        select(ModelVersion.id).where(
            ModelVersion.name == target.model, ModelVersion.version == target.version
        )
    ).first()
    if found_model is None:
        return [
            f"target.version: expected a registered version of model {target.model}, got {target.version!r}"
        ]
    return []


def _cohort_problems(session: Session, fleet: str, plan: RolloutPlan) -> list[str]:
    problems = []
    for index, stage in enumerate(plan.stages):
        if stage.cohort is None:
            continue
        try:
            get_cohort(session, fleet, stage.cohort)
        except NotFoundError:
            problems.append(
                f"stages[{index}].cohort: expected a cohort of fleet {fleet}, got {stage.cohort!r}"
            )
    return problems


def _target_of(plan: RolloutPlan) -> tuple[str, str, str]:
    target = plan.target
    if isinstance(target, FirmwareTarget):
        return "firmware", target.name, target.version
    return "model", target.model, target.version


def _serialise_creates(session: Session, fleet: str, kind: str) -> None:
    # Two creates at once must not both pass the conflict check. SQLite's write lock serialises
    # them already; on PostgreSQL there may be no row yet to lock, so lock the (fleet, kind) name.
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(
        hashlib.sha256(f"rollout-create/{fleet}/{kind}".encode()).digest()[:8], "big", signed=True
    )
    session.exec(text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=key))  # type: ignore[call-overload]


def _holders(session: Session, rollout: Rollout, wanted: set[str]) -> dict[str, list[str]]:
    """Rollouts of the same fleet and kind (ACTIVE or completed) holding any of ``wanted``: id -> devices."""
    others = session.exec(
        select(Rollout).where(
            Rollout.fleet == rollout.fleet,
            Rollout.target_kind == rollout.target_kind,
            col(Rollout.state).in_([s.value for s in ACTIVE] + [RolloutState.COMPLETED.value]),
        )
    ).all()
    held: dict[str, list[str]] = {}
    for other in others:
        devices = set(
            session.exec(select(RolloutDevice.device_id).where(RolloutDevice.rollout_id == other.id)).all()
        )
        if other.state != RolloutState.COMPLETED:
            # An active rollout holds the devices it will still offer, not only those it offered.
            devices |= set(plan_members(session, other, load_plan(other)).stage)
        overlap = sorted(devices & wanted)
        if overlap:
            held[other.id] = overlap
    return held


def _shown(devices: Iterable[str]) -> str:
    listed = list(devices)
    more = f" and {len(listed) - SHOWN_DEVICES} more" if len(listed) > SHOWN_DEVICES else ""
    return ", ".join(listed[:SHOWN_DEVICES]) + more


def create_rollout(
    session: Session,
    *,
    fleet: str,
    plan: RolloutPlan,
    actor: str,
    supersede: bool = False,
    clock: Clock = utcnow,
) -> Rollout:
    """Store a new rollout in ``draft``; the engine starts it at its next tick. Commits.

    Raises PlanError naming the field for an unknown model, firmware or cohort, and ConflictError
    listing the devices an ACTIVE rollout of the same target kind holds, unless ``supersede``: then
    those rollouts end as ``superseded`` and this one takes their devices over. A completed rollout
    whose devices the new one takes is superseded too, so rolling it back cannot undo the new one.
    """
    problems = _target_problems(session, plan) + _cohort_problems(session, fleet, plan)
    if problems:
        raise PlanError("plan", problems)
    kind, name, version = _target_of(plan)
    now = clock()
    rollout = Rollout(
        id=uuid.uuid4().hex,
        fleet=fleet,
        name=plan.name,
        target_kind=kind,
        target_name=name,
        target_version=version,
        plan=plan.to_dict(),
        state=RolloutState.DRAFT.value,
        stage=0,
        stage_entered_at=now,
        state_entered_at=now,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    _serialise_creates(session, fleet, kind)
    wanted = set(plan_members(session, rollout, plan).stage)
    held = _holders(session, rollout, wanted)
    active = {rid: devices for rid, devices in held.items() if _state_of(session, rid) in ACTIVE}
    if active and not supersede:
        names = {r.id: r.name for r in session.exec(select(Rollout).where(col(Rollout.id).in_(list(active))))}
        shown = "; ".join(
            f"rollout {names[rid]} ({rid[:8]}) holds {_shown(devices)}"
            for rid, devices in sorted(active.items())
        )
        raise ConflictError(
            f"devices of this plan are held by an active {kind} rollout: {shown}; expected devices no "
            f"active {kind} rollout holds, or supersede to take them over"
        )
    session.add(rollout)
    session.flush()
    for rid in sorted(held):
        other = lock_rollout(session, rid)
        assert other is not None
        record_transition(
            session, other, RolloutEvent.SUPERSEDE, actor=actor, now=now,
            reason=f"rollout {rollout.name} ({rollout.id[:8]}) takes over {len(held[rid])} of its devices",
        )  # fmt: skip
        other.superseded_by = rollout.id
    session.commit()
    log.info("created rollout %s (%s) of %s %s %s by %s", plan.name, rollout.id, kind, name, version, actor)
    return rollout


def _state_of(session: Session, rollout_id: str) -> RolloutState:
    return RolloutState(session.exec(select(Rollout.state).where(Rollout.id == rollout_id)).one())


# --- an operator's actions -----------------------------------------------------------------------


def _act(
    session: Session,
    fleet: str,
    rollout_id: str,
    event: RolloutEvent,
    *,
    actor: str,
    reason: str,
    clock: Clock,
) -> Rollout:
    found = get_rollout(session, fleet, rollout_id)
    rollout = lock_rollout(session, found.id)
    assert rollout is not None
    record_transition(session, rollout, event, actor=actor, now=clock(), reason=reason)
    session.commit()
    return rollout


def pause(
    session: Session, fleet: str, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = utcnow
) -> Rollout:
    """Hold the rollout where it is: nothing more is offered, devices keep what they run."""
    return _act(session, fleet, rollout_id, RolloutEvent.PAUSE, actor=actor, reason=reason, clock=clock)


def resume(
    session: Session, fleet: str, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = utcnow
) -> Rollout:
    """Go on offering the current stage; a stage fully offered bakes (and is judged) again."""
    return _act(session, fleet, rollout_id, RolloutEvent.RESUME, actor=actor, reason=reason, clock=clock)


def approve(
    session: Session, fleet: str, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = utcnow
) -> Rollout:
    """Promote a stage that baked and waits for an operator."""
    return _act(session, fleet, rollout_id, RolloutEvent.APPROVE, actor=actor, reason=reason, clock=clock)


def abort(
    session: Session, fleet: str, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = utcnow
) -> Rollout:
    """Stop and give every offered device its previous version back."""
    return _act(session, fleet, rollout_id, RolloutEvent.ABORT, actor=actor, reason=reason, clock=clock)


def rollback(
    session: Session, fleet: str, rollout_id: str, *, actor: str, reason: str = "", clock: Clock = utcnow
) -> Rollout:
    """Undo a paused or completed rollout: every offered device gets its previous version back."""
    return _act(session, fleet, rollout_id, RolloutEvent.ROLLBACK, actor=actor, reason=reason, clock=clock)


def _cohort_in_use(session: Session, fleet: str, cohort: str) -> str | None:
    """Why ``cohort`` must not be deleted now: an active rollout stages over it."""
    for rollout in session.exec(
        select(Rollout).where(Rollout.fleet == fleet, col(Rollout.state).in_([s.value for s in ACTIVE]))
    ).all():
        if any(stage.get("cohort") == cohort for stage in rollout.plan.get("stages", [])):
            return f"active rollout {rollout.name} ({rollout.id[:8]}) stages over it"
    return None


register_cohort_in_use(_cohort_in_use)
