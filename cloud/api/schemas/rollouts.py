"""Request and response shapes of the rollouts API: a plan goes in, the rollout's view comes out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "GateResultPublic",
    "RolloutAction",
    "RolloutDetailPublic",
    "RolloutPublic",
    "RolloutStagePublic",
    "RolloutTargetPublic",
    "RolloutTransitionPublic",
    "RolloutsPublic",
]


class RolloutAction(BaseModel):
    """An operator's action on a rollout; the reason is stored with the transition it causes."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(max_length=500)] = Field(
        default="", description="why, in a sentence; shown with the transition"
    )


class RolloutTargetPublic(BaseModel):
    kind: str = Field(description="model or firmware")
    name: str = Field(description="the model's or the firmware image's name")
    version: str


class RolloutPublic(BaseModel):
    """One rollout as a listing shows it."""

    id: str
    fleet: str
    name: str
    target: RolloutTargetPublic
    state: str = Field(
        description="draft, running, baking, waiting_approval, paused, promoting, completed, aborting, "
        "rolled_back or superseded"
    )
    stage: int = Field(description="index of the current stage, from 0")
    stage_name: str = Field(description="the current stage's name")
    stages: int = Field(description="how many stages the plan has")
    created_by: str = Field(description="the name of the token that created it")
    created_at: datetime
    updated_at: datetime
    next_action_at: datetime | None = Field(
        description="when the engine acts next on its own; null: not planned"
    )
    superseded_by: str | None = Field(default=None, description="the rollout that took its devices over")


class RolloutsPublic(BaseModel):
    data: list[RolloutPublic]
    count: int
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class GateResultPublic(BaseModel):
    gate: str = Field(description="the gate's key, e.g. max_rollback_pct")
    value: float | None = Field(description="the figure measured; null: not judged yet (no data)")
    threshold: float
    passed: bool
    detail: str = Field(description="the verdict in a sentence")


class RolloutStagePublic(BaseModel):
    index: int
    name: str
    cohort: str | None = Field(
        description="the cohort it draws devices from; null: every device of the fleet"
    )
    percent: float | None = Field(description="cumulative share of the cohort's eligible devices; null: 100")
    bake_s: float = Field(description="seconds the stage bakes once every device was offered")
    approval: bool = Field(description="an operator approves the promotion after the bake")
    status: str = Field(description="done, current or pending")
    devices: int = Field(description="devices the stage holds")
    by_state: dict[str, int] = Field(
        description="devices per state: pending (not offered yet), offered (no outcome yet), committed, "
        "failed, rolled_back, restored (given the previous version back)"
    )
    verdict: str | None = Field(
        default=None,
        description="the gates' verdict on the stage: pass, fail or insufficient; null: not judged",
    )
    verdict_detail: str = Field(default="", description="the verdict in a sentence")
    gates: list[GateResultPublic] = Field(default_factory=list, description="each gate against its threshold")
    figures: dict[str, Any] = Field(default_factory=dict, description="what the gates judged")


class RolloutTransitionPublic(BaseModel):
    seq: int
    at: datetime
    from_state: str
    to_state: str
    event: str
    stage: int = Field(description="the stage index the rollout was at after the step")
    actor: str = Field(description="a token's name for an operator's action; 'system' for the engine's own")
    reason: str
    figures: dict[str, Any] = Field(default_factory=dict, description="the figures behind an engine decision")


class RolloutDetailPublic(RolloutPublic):
    """The full view: the plan, its stages with device counts and gate figures, history, what comes next."""

    plan: dict[str, Any] = Field(description="the validated plan as stored")
    stage_detail: list[RolloutStagePublic] = Field(description="every stage of the plan, in order")
    transitions: list[RolloutTransitionPublic] = Field(description="every state change, oldest first")
    next_action: str = Field(description="what the engine does next, in a sentence")
    missing_cohorts: list[str] = Field(
        default_factory=list,
        description="cohorts the plan names that were deleted since; their stages take no one",
    )
