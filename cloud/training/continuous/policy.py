"""What happens to a challenger that won: a canary rollout at once, or an operator's approval first.

``settings.ct_policy``:

- ``canary``: the worker approves the challenger itself and creates its rollout: a canary stage on
  a few percent of the fleet, then the rest, each baked and judged by the plan's default gates;
- ``approval``: the run waits in ``awaiting_approval`` until an operator approves it (the same
  rollout is created then) or rejects it.

The rollout is created by the rollout engine's own service, so it is checked like any plan (the
model version must be registered; devices an active rollout holds are a conflict unless
superseded) and it advances, pauses or rolls back as any rollout does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlmodel import Session

from cloud.clock import Clock, utcnow
from cloud.models import Rollout
from cloud.rollouts import service as rollouts
from cloud.rollouts.plan import RolloutPlan
from cloud.training.continuous.machine import RunEvent, RunState
from cloud.training.continuous.service import get_run, lock_run, record_transition
from cloud.training.continuous.tables import TrainingRun

__all__ = ["CANARY_PERCENT", "approve", "rollout_plan", "start_rollout"]

# The canary stage's share of the fleet's eligible devices (at least one device: the stage default).
CANARY_PERCENT: Final = 5.0
_NAME_MAX = 128


def rollout_plan(run: TrainingRun) -> RolloutPlan:
    """A canary stage on a few percent of the fleet, then every device; gates and bake times by default."""
    if run.challenger_version is None:
        raise RuntimeError(f"training run {run.id} has no challenger to roll out")
    name = f"ct-{run.model_name}-{run.challenger_version}"[:_NAME_MAX]
    return RolloutPlan.model_validate(
        {
            "name": name,
            "target": {"kind": "model", "model": run.model_name, "version": run.challenger_version},
            "stages": [
                {"name": "canary", "percent": CANARY_PERCENT},
                {"name": "rest", "percent": 100},
            ],
        }
    )


def start_rollout(
    session: Session, run: TrainingRun, *, actor: str, now: datetime, supersede: bool = False
) -> Rollout:
    """Create the challenger's rollout and move the APPROVED run to ROLLED_OUT, in one commit.

    ``run`` is locked by the caller and APPROVED in this transaction or an earlier one. When the
    rollout engine refuses the plan (PlanError, ConflictError), nothing is committed and the error
    is raised: the caller decides what the run becomes.
    """
    plan = rollout_plan(run)
    reason = f"rollout {plan.name}: canary on {CANARY_PERCENT:g}% of the fleet, then every device"
    record_transition(session, run, RunEvent.ROLLOUT_STARTED, actor=actor, now=now, reason=reason)
    try:
        # create_rollout commits: the run's new state is stored with the rollout or not at all.
        rollout = rollouts.create_rollout(
            session, fleet=run.fleet, plan=plan, actor=actor, supersede=supersede, clock=lambda: now
        )
    except BaseException:
        session.rollback()
        raise
    run.rollout_id = rollout.id
    session.add(run)
    session.commit()
    return rollout


def approve(
    session: Session,
    fleet: str,
    run_id: str,
    *,
    actor: str,
    reason: str = "",
    supersede: bool = False,
    clock: Clock = utcnow,
) -> TrainingRun:
    """An operator's approval: the challenger's rollout is created and the run is ROLLED_OUT.

    When the rollout cannot be created (devices held by an active rollout, without ``supersede``)
    the error is raised and the run still awaits approval, so the operator can approve again.
    """
    found = get_run(session, fleet, run_id)
    run = lock_run(session, found.id)
    assert run is not None
    now = clock()
    record_transition(session, run, RunEvent.APPROVE, actor=actor, now=now, reason=reason)
    start_rollout(session, run, actor=actor, now=now, supersede=supersede)
    assert RunState(run.state) is RunState.ROLLED_OUT
    return run
