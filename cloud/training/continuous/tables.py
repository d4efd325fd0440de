"""Tables of continuous training: training runs (a persisted state machine) and labelled uploads.

``training_run`` holds one row per run: what triggered it and why, the data it trained on (by
content hash), the champion and challenger with their figures, the decision and its reason, and
every transition. A partial unique index keeps at most one queued or running run per model and
fleet, so two hub replicas checking the triggers at once cannot both queue one.

``labelled_dataset`` records labelled samples uploaded to the hub (``.npz`` files stored by
content under ``{data_dir}/datasets/labelled``): devices report only label counts, so these are
what retraining learns the field's data from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from cloud.clock import utcnow
from cloud.models import UTCDateTime
from cloud.training.continuous.machine import ACTIVE, RunState

__all__ = ["ACTIVE_RUN_INDEX", "LabelledDataset", "TrainingRun"]

ACTIVE_RUN_INDEX = "uq_training_run_active"
_ACTIVE_SQL = "state IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(ACTIVE)))


class TrainingRun(SQLModel, table=True):
    """One continuous-training run; ``state`` is a ``RunState`` value (``machine.py``)."""

    __tablename__ = "training_run"
    __table_args__ = (
        # At most one queued or running run per model of a fleet (both backends support partial indexes).
        Index(
            ACTIVE_RUN_INDEX,
            "fleet",
            "model_name",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
        Index("ix_training_run_listing", "fleet", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    fleet: str = Field(max_length=128)
    model_name: str = Field(max_length=64)
    # schedule, drift, accuracy, labelled or manual (``triggers.TriggerKind``).
    trigger: str = Field(max_length=16)
    # Which alert, cohort, metric and figures fired it; ``also`` lists triggers that fired with it.
    trigger_detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    state: str = Field(default=RunState.QUEUED.value, index=True, max_length=24)
    # What the worker is doing now (training, optimizing, evaluating, registering); "" when idle.
    step: str = Field(default="", max_length=32)
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The hub replica whose worker runs it, and until when its claim holds without a heartbeat.
    owner: str = Field(default="", max_length=64)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Every data set the challenger saw: [{"role": "base"|"labelled", "name", "hash", "samples"}].
    datasets: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    # Content hash of the training arrays as trained on (base plus labelled), as the experiment records it.
    dataset_hash: str = Field(default="", max_length=64)
    champion_version: str | None = Field(default=None, max_length=64)
    challenger_version: str | None = Field(default=None, max_length=64)
    champion_metrics: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    challenger_metrics: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    # "promote" or "keep_champion" once evaluated; the reason gives the figures in a sentence.
    decision: str = Field(default="", max_length=16)
    decision_reason: str = ""
    rollout_id: str | None = Field(default=None, max_length=32)
    # Why a failed run failed, in a sentence.
    error: str = ""
    # [{"seq", "at", "from", "to", "event", "actor", "reason"}], oldest first.
    transitions: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)


class LabelledDataset(SQLModel, table=True):
    """An uploaded ``.npz`` of labelled samples (``x`` features, ``y`` labels), stored by its sha256."""

    __tablename__ = "labelled_dataset"
    __table_args__ = (UniqueConstraint("fleet", "sha256", name="uq_labelled_dataset_fleet_sha256"),)

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(index=True, max_length=128)
    sha256: str = Field(max_length=64)
    length: int = Field(sa_type=BigInteger)
    samples: int = Field(sa_type=BigInteger)
    # The model these samples are for; "" for every model of the fleet.
    model_name: str = Field(default="", max_length=64)
    # {"0": 12, "1": 9, ...}: samples per label, as validated.
    class_counts: dict[str, int] = Field(default_factory=dict, sa_type=JSON)
    filename: str = Field(default="", max_length=255)
    uploaded_by: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
