"""Training runs as the triggers, the worker, the API and the CLI see them: queue, find, list, decide.

Every change of state goes through :func:`record_transition`, which asks the state machine
(``machine.next_state``) and appends the step, with who did it (``system`` for the triggers and
the worker, the token's name for a person) and why, to the run's ``transitions``. The caller
holds the row (:func:`lock_run`) and commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError, InvalidInputError, NotFoundError
from cloud.models import ModelVersion
from cloud.services.lookup import resolve
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page
from cloud.training.continuous.machine import ACTIVE, TERMINAL, RunEvent, RunState, next_state
from cloud.training.continuous.tables import TrainingRun
from cloud.validation import check_model_name

__all__ = [
    "SYSTEM",
    "TrainingRunRecord",
    "active_run",
    "conflict_with",
    "get_run",
    "last_run_at",
    "list_runs",
    "lock_run",
    "queue_run",
    "record_transition",
    "reject",
    "start_manual",
]

log = logging.getLogger(__name__)

# The actor of the triggers' and the worker's own transitions.
SYSTEM = "system"


@dataclass(frozen=True)
class TrainingRunRecord:
    """A training run as it was read: a plain value, safe to hand to another thread."""

    id: str
    fleet: str
    model_name: str
    trigger: str
    trigger_detail: dict[str, Any]
    state: str
    step: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str
    lease_until: datetime | None
    datasets: list[dict[str, Any]]
    dataset_hash: str
    champion_version: str | None
    challenger_version: str | None
    champion_metrics: dict[str, Any]
    challenger_metrics: dict[str, Any]
    decision: str
    decision_reason: str
    rollout_id: str | None
    error: str
    transitions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, row: TrainingRun) -> TrainingRunRecord:
        data = row.model_dump()
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def record_transition(
    session: Session,
    run: TrainingRun,
    event: RunEvent,
    *,
    actor: str,
    now: datetime,
    reason: str = "",
) -> RunState:
    """Move ``run`` by ``event`` (IllegalRunTransition when the table has no row) and store the step."""
    before = RunState(run.state)
    after = next_state(before, event)
    step = {
        "seq": len(run.transitions) + 1,
        "at": now.isoformat(),
        "from": before.value,
        "to": after.value,
        "event": event.value,
        "actor": actor,
        "reason": reason,
    }
    # A new list, not an append: the JSON column is stored when the attribute is assigned.
    run.transitions = [*run.transitions, step]
    run.state = after.value
    run.updated_at = now
    if after is RunState.RUNNING:
        run.started_at = now
    else:
        # Only a running run is a worker's: the claim ends with the work.
        run.step = ""
        run.owner = ""
        run.lease_until = None
    if after in TERMINAL:
        run.finished_at = now
    session.add(run)
    log.info(
        "training run %s (%s): %s -[%s by %s]-> %s%s",
        run.id[:8], run.model_name, before, event, actor, after, f": {reason}" if reason else "",
    )  # fmt: skip
    return after


def lock_run(session: Session, run_id: str) -> TrainingRun | None:
    """The run's row, fresh and locked until the caller commits (PostgreSQL; SQLite's write lock
    serialises writers anyway)."""
    query = (
        select(TrainingRun)
        .where(TrainingRun.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.exec(query).first()


def active_run(session: Session, fleet: str, model_name: str) -> TrainingRun | None:
    """The model's queued or running run, if it has one."""
    return session.exec(
        select(TrainingRun).where(
            TrainingRun.fleet == fleet,
            TrainingRun.model_name == model_name,
            col(TrainingRun.state).in_([s.value for s in ACTIVE]),
        )
    ).first()


def last_run_at(session: Session, fleet: str, model_name: str) -> datetime | None:
    """When the model's newest run (of any state) was queued; None when it never had one."""
    return session.exec(
        select(TrainingRun.created_at)
        .where(TrainingRun.fleet == fleet, TrainingRun.model_name == model_name)
        .order_by(col(TrainingRun.created_at).desc())
    ).first()


def queue_run(
    session: Session,
    *,
    fleet: str,
    model_name: str,
    trigger: str,
    detail: Mapping[str, Any],
    actor: str,
    now: datetime,
) -> TrainingRun | None:
    """Add a queued run to the session; None when the model has a queued or running run already.

    The partial unique index is the guard: two hub replicas queueing at once both pass the check
    above it on PostgreSQL, and the second insert fails inside its savepoint. The caller commits.
    """
    if active_run(session, fleet, model_name) is not None:
        return None
    run = TrainingRun(
        id=uuid.uuid4().hex,
        fleet=fleet,
        model_name=model_name,
        trigger=trigger,
        trigger_detail=dict(detail),
        state=RunState.QUEUED.value,
        created_by=actor,
        created_at=now,
        updated_at=now,
        transitions=[
            {"seq": 0, "at": now.isoformat(), "from": "", "to": RunState.QUEUED.value,
             "event": f"trigger:{trigger}", "actor": actor, "reason": str(detail.get("summary", ""))},
        ],
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        return None
    log.info("training run %s queued for %s (%s) by %s", run.id[:8], model_name, trigger, actor)
    return run


def get_run(session: Session, fleet: str, run_id: str) -> TrainingRun:
    """A run of ``fleet`` by its id or a unique prefix of it."""
    return resolve(
        session,
        TrainingRun,
        TrainingRun.id,
        run_id,
        what="training run",
        where=[col(TrainingRun.fleet) == fleet],
    )


def list_runs(
    session: Session,
    fleet: str,
    *,
    state: str | None = None,
    model_name: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[TrainingRun]:
    """A page of the fleet's runs, newest first."""
    query = select(TrainingRun).where(TrainingRun.fleet == fleet)
    if state is not None:
        try:
            query = query.where(TrainingRun.state == RunState(state).value)
        except ValueError:
            raise InvalidInputError(
                f"invalid training run state {state!r}: expected one of {', '.join(RunState)}"
            ) from None
    if model_name is not None:
        query = query.where(TrainingRun.model_name == model_name)
    return keyset_page(
        session,
        query,
        [TrainingRun.created_at, TrainingRun.id],
        listing="training runs",
        key_of=lambda r: (r.created_at, r.id),
        limit=limit,
        cursor=cursor,
        descending=True,
    )


def reject(
    session: Session, fleet: str, run_id: str, *, actor: str, reason: str = "", clock: Clock = utcnow
) -> TrainingRun:
    """Turn a challenger awaiting approval down (it stays registered), or cancel a queued run. Commits."""
    found = get_run(session, fleet, run_id)
    run = lock_run(session, found.id)
    assert run is not None
    record_transition(session, run, RunEvent.REJECT, actor=actor, now=clock(), reason=reason)
    session.commit()
    return run


def conflict_with(active: TrainingRun) -> ConflictError:
    """The error for a second run of a model while one is queued or running."""
    return ConflictError(
        f"model {active.model_name} already has a training run {active.state}: {active.id} "
        f"(queued {active.created_at:%Y-%m-%d %H:%M:%S} UTC by {active.created_by}); expected no run "
        "queued or running for the model"
    )


def start_manual(
    session: Session, fleet: str, model_name: str, *, actor: str, reason: str = "", clock: Clock = utcnow
) -> TrainingRun:
    """Queue a run of ``model_name`` by hand (ConflictError when one is queued or running). Commits."""
    check_model_name(model_name)
    if session.exec(select(ModelVersion.id).where(ModelVersion.name == model_name)).first() is None:
        raise NotFoundError(f"model {model_name} is not registered: expected the name of a registered model")
    detail = {"summary": reason or f"started by {actor}", "reason": reason}
    run = queue_run(
        session, fleet=fleet, model_name=model_name, trigger="manual", detail=detail, actor=actor, now=clock()
    )
    if run is None:
        active = active_run(session, fleet, model_name)
        session.rollback()
        if active is None:  # it ended between the insert and this read: the caller may try again
            raise ConflictError(f"model {model_name} had a training run queued or running; try again")
        raise conflict_with(active)
    session.commit()
    return run
