"""Which devices a rollout's stages take, evaluated live over the fleet's cohorts.

Cohort membership is never stored (``cloud.services.cohorts``), so a device that joins a
cohort later is a member at the next call, and the engine picks it up at its next tick.
Each device's stage comes from its sticky hash bucket (``selection.stage_of``): the same
on every replica and after every restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from cloud.errors import NotFoundError
from cloud.models import Cohort, Rollout, RolloutDevice
from cloud.rollouts.machine import ACTIVE
from cloud.rollouts.plan import RolloutPlan
from cloud.rollouts.selection import bucket, stage_of
from cloud.services.cohorts import get_cohort, member_ids_query
from cloud.sql_lists import in_list

__all__ = ["Members", "held_by_others", "load_plan", "plan_members", "stage_cohorts"]


def load_plan(rollout: Rollout) -> RolloutPlan:
    """The validated plan stored with the rollout."""
    return RolloutPlan.model_validate(rollout.plan)


def stage_cohorts(session: Session, fleet: str, plan: RolloutPlan) -> list[Cohort | None]:
    """Each stage's cohort (None: every device of the fleet); NotFoundError names a missing one."""
    found: dict[str, Cohort] = {}
    out: list[Cohort | None] = []
    for stage in plan.stages:
        if stage.cohort is None:
            out.append(None)
            continue
        if stage.cohort not in found:
            found[stage.cohort] = get_cohort(session, fleet, stage.cohort)
        out.append(found[stage.cohort])
    return out


@dataclass(frozen=True, slots=True)
class Members:
    """Every device some stage takes, with its stage and bucket; ``missing``: deleted cohorts."""

    stage: dict[str, int]
    buckets: dict[str, float]
    missing: tuple[str, ...] = ()

    def up_to(self, stage: int) -> list[str]:
        """Devices of stages 0..stage, lowest bucket first (the order they are offered in)."""
        ids = [d for d, s in self.stage.items() if s <= stage]
        return sorted(ids, key=lambda d: (self.buckets[d], d))

    def count(self, stage: int) -> int:
        return sum(1 for s in self.stage.values() if s == stage)


def plan_members(session: Session, rollout: Rollout, plan: RolloutPlan) -> Members:
    """The stage each device of the fleet falls in (devices no stage takes are left out)."""
    cohorts: list[Cohort | None] = []
    missing: list[str] = []
    for stage in plan.stages:
        if stage.cohort is None:
            cohorts.append(None)
            continue
        try:
            cohorts.append(get_cohort(session, rollout.fleet, stage.cohort))
        except NotFoundError:
            # A cohort deleted under a rollout takes no devices; the view says which.
            missing.append(stage.cohort)
            cohorts.append(Cohort(fleet=rollout.fleet, name=stage.cohort, selector="", devices=[]))
    sets: dict[str | None, set[str]] = {}
    for stage, cohort in zip(plan.stages, cohorts, strict=True):
        if stage.cohort not in sets:
            sets[stage.cohort] = set(session.exec(member_ids_query(rollout.fleet, cohort)).all())
    every = set().union(*sets.values())
    stages: dict[str, int] = {}
    buckets: dict[str, float] = {}
    for device_id in every:
        b = bucket(device_id, rollout.id)
        flags = [device_id in sets[stage.cohort] for stage in plan.stages]
        index = stage_of(b, flags, plan.stages)
        if index is not None:
            stages[device_id] = index
            buckets[device_id] = b
    return Members(stages, buckets, tuple(sorted(set(missing))))


def held_by_others(
    session: Session, rollout: Rollout, device_ids: Sequence[str] | None = None
) -> dict[str, str]:
    """Devices offered by another ACTIVE rollout of the same target kind: device id -> rollout id."""
    query = (
        select(RolloutDevice.device_id, Rollout.id)
        .join(Rollout, col(Rollout.id) == col(RolloutDevice.rollout_id))
        .where(
            Rollout.fleet == rollout.fleet,
            Rollout.target_kind == rollout.target_kind,
            Rollout.id != rollout.id,
            col(Rollout.state).in_([s.value for s in ACTIVE]),
        )
    )
    if device_ids is not None:
        query = query.where(in_list(RolloutDevice.device_id, device_ids))
    return dict(session.exec(query).all())
