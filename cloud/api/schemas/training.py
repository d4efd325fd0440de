"""Request and response shapes of the continuous-training API: runs, their actions, labelled uploads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloud.validation import MODEL_NAME_PATTERN

__all__ = [
    "LabelledDatasetPublic",
    "LabelledDatasetsPublic",
    "TrainingRunAction",
    "TrainingRunApprove",
    "TrainingRunCreate",
    "TrainingRunDetailPublic",
    "TrainingRunPublic",
    "TrainingRunTransitionPublic",
    "TrainingRunsPublic",
]

Reason = Annotated[str, StringConstraints(max_length=500)]


class TrainingRunCreate(BaseModel):
    """Start a run by hand: retrain ``model`` on its base data set plus the labelled uploads."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)] = Field(
        description="the registered model to retrain"
    )
    reason: Reason = Field(default="", description="why, in a sentence; stored with the run")


class TrainingRunAction(BaseModel):
    """An operator's action on a run; the reason is stored with the transition it causes."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(default="", description="why, in a sentence; shown with the transition")


class TrainingRunApprove(TrainingRunAction):
    supersede: bool = Field(
        default=False,
        description="let the challenger's rollout take over devices another active model rollout holds",
    )


class TrainingRunPublic(BaseModel):
    """One run as a listing shows it."""

    id: str
    fleet: str
    model: str
    trigger: str = Field(description="schedule, drift, accuracy, labelled or manual")
    summary: str = Field(description="why the run was queued, in a sentence")
    state: str = Field(
        description="queued, running, succeeded, failed, awaiting_approval, approved, rolled_out or rejected"
    )
    step: str = Field(description="what a running run is doing now; empty otherwise")
    champion_version: str | None = Field(description="the version served when the run started")
    challenger_version: str | None = Field(description="the version the run made (registered once built)")
    decision: str = Field(description="promote or keep_champion once evaluated; empty before")
    error: str = Field(description="why a failed run failed, in a sentence; empty otherwise")
    created_by: str = Field(description="'system' for a trigger, else the token that started it")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TrainingRunsPublic(BaseModel):
    data: list[TrainingRunPublic]
    count: int
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class TrainingRunTransitionPublic(BaseModel):
    seq: int
    at: datetime
    from_state: str = Field(description="empty for the run's creation")
    to_state: str
    event: str
    actor: str = Field(description="a token's name for an operator's action; 'system' for the hub's own")
    reason: str


class TrainingRunDetailPublic(TrainingRunPublic):
    """The full run: what fired it, the data by hash, both models' figures, the decision, its history."""

    trigger_detail: dict[str, Any] = Field(
        description="which alert, cohort, metric and figures fired it; 'also': triggers that fired with it"
    )
    datasets: list[dict[str, Any]] = Field(
        description="every data set trained on or judged on: role (base or labelled), name, hash, samples"
    )
    dataset_hash: str = Field(description="content hash of the arrays the challenger was trained on")
    champion_metrics: dict[str, Any] = Field(description="the champion's figures on the held-out samples")
    challenger_metrics: dict[str, Any] = Field(description="the challenger's figures on the same samples")
    decision_reason: str = Field(description="the decision with its figures, in a sentence")
    rollout_id: str | None = Field(description="the challenger's rollout, once created")
    owner: str = Field(description="the hub replica running it; empty when not running")
    lease_until: datetime | None = Field(description="when a running run's claim runs out without progress")
    allowed_actions: list[str] = Field(description="what an operator may do now: approve, reject")
    transitions: list[TrainingRunTransitionPublic] = Field(description="every state change, oldest first")


class LabelledDatasetPublic(BaseModel):
    """An uploaded file of labelled samples; its sha256 is what training runs' lineage names."""

    model_config = ConfigDict(from_attributes=True)

    sha256: str
    fleet: str
    length: int = Field(description="bytes of the .npz file")
    samples: int
    model_name: str = Field(description="the model the samples are for; empty for every model of the fleet")
    class_counts: dict[str, int] = Field(description="samples per label")
    filename: str
    uploaded_by: str
    created_at: datetime


class LabelledDatasetsPublic(BaseModel):
    data: list[LabelledDatasetPublic]
    count: int
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
