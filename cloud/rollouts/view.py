"""A rollout as a person reads it: its stages with devices per state and gates against thresholds,
its history, and what the engine does next and when."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from cloud.models import Rollout, RolloutDevice, RolloutTransition
from cloud.rollouts.eligibility import eligible, load_target
from cloud.rollouts.figures import device_outcomes, stage_figures
from cloud.rollouts.gates import StageFigures, Verdict, judge_all
from cloud.rollouts.machine import ACTIVE, RolloutState
from cloud.rollouts.membership import load_plan, plan_members
from cloud.rollouts.plan import RolloutPlan

__all__ = ["DEVICE_STATES", "RolloutView", "StageView", "rollout_view"]

# How a stage's devices are counted: not offered yet, offered without an outcome, then each outcome.
DEVICE_STATES = ("pending", "offered", "committed", "failed", "rolled_back", "restored")


@dataclass(frozen=True, slots=True)
class StageView:
    index: int
    name: str
    cohort: str | None
    percent: float | None
    bake_s: float
    approval: bool
    status: str  # done, current or pending
    devices: int  # offered in it, plus those waiting to be
    by_state: dict[str, int]
    figures: StageFigures | None  # None: the stage has not started
    verdict: Verdict | None


@dataclass(frozen=True, slots=True)
class RolloutView:
    rollout: Rollout
    plan: RolloutPlan
    stages: list[StageView]
    transitions: list[RolloutTransition]
    next_action: str
    next_action_at: datetime | None
    missing_cohorts: tuple[str, ...] = ()


def _status(rollout: Rollout, index: int) -> str:
    if rollout.state == RolloutState.COMPLETED or index < rollout.stage:
        return "done"
    return "current" if index == rollout.stage else "pending"


def _pending(session: Session, rollout: Rollout, plan: RolloutPlan) -> tuple[Counter[int], tuple[str, ...]]:
    """Devices each stage would still offer (eligible and not offered yet), while the rollout is active."""
    members = plan_members(session, rollout, plan)
    if RolloutState(rollout.state) not in ACTIVE or rollout.state == RolloutState.ABORTING:
        return Counter(), members.missing
    offered = set(
        session.exec(select(RolloutDevice.device_id).where(RolloutDevice.rollout_id == rollout.id)).all()
    )
    waiting = [d for d in members.stage if d not in offered]
    found = eligible(session, rollout, load_target(session, rollout), waiting)
    # A device whose own stage is done waits to join the current one (a late joiner).
    return Counter(max(members.stage[d], rollout.stage) for d in found.devices), members.missing


def rollout_view(session: Session, rollout: Rollout, now: datetime) -> RolloutView:
    """Everything ``fleet rollouts show`` prints, read in one go."""
    plan = load_plan(rollout)
    rows = session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id)).all()
    live = device_outcomes(session, rollout)
    per_stage: dict[int, Counter[str]] = {}
    for row in rows:
        outcome = row.outcome if row.outcome == "restored" else live.get(row.device_id, row.outcome)
        per_stage.setdefault(row.stage, Counter())[outcome or "offered"] += 1
    pending, missing = _pending(session, rollout, plan)
    stages: list[StageView] = []
    for index, stage in enumerate(plan.stages):
        counts = per_stage.get(index, Counter())
        counts["pending"] = pending.get(index, 0)
        status = _status(rollout, index)
        figures = verdict = None
        if status != "pending":
            figures = stage_figures(
                session, rollout, index, now=now, offline_grace=timedelta(seconds=plan.gates.offline_grace)
            )
            verdict = judge_all(figures, plan.gates)
        stages.append(
            StageView(
                index=index,
                name=stage.name,
                cohort=stage.cohort,
                percent=stage.percent,
                bake_s=stage.bake,
                approval=stage.approval,
                status=status,
                devices=sum(counts.values()),
                by_state={state: counts.get(state, 0) for state in DEVICE_STATES},
                figures=figures,
                verdict=verdict,
            )
        )
    transitions = list(
        session.exec(
            select(RolloutTransition)
            .where(RolloutTransition.rollout_id == rollout.id)
            .order_by(col(RolloutTransition.seq))
        ).all()
    )
    return RolloutView(
        rollout=rollout,
        plan=plan,
        stages=stages,
        transitions=transitions,
        next_action=_next_action(rollout),
        next_action_at=rollout.next_action_at,
        missing_cohorts=missing,
    )


def _next_action(rollout: Rollout) -> str:
    state = RolloutState(rollout.state)
    if state is RolloutState.DRAFT:
        return "the engine starts it at its next tick"
    if state is RolloutState.COMPLETED:
        return "nothing: every stage is done (it can still be rolled back)"
    if state is RolloutState.ROLLED_BACK:
        return "nothing: every offered device was given its previous version back"
    if state is RolloutState.SUPERSEDED:
        return f"nothing: rollout {rollout.superseded_by or '?'} took its devices over"
    if state is RolloutState.ABORTING:
        return "giving every offered device its previous version back"
    return rollout.next_action or "the engine acts at its next tick"
