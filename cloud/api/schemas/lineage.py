"""Response shape of a model version's lineage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from cloud.api.schemas.fleet import ExperimentPublic, VariantPublic


class TrainingRunRefPublic(BaseModel):
    id: str
    trigger: str = Field(description="what started it: schedule, drift, accuracy, labelled or manual")
    state: str
    champion_version: str | None = Field(description="the version it was measured against")
    decision: str
    decision_reason: str
    created_at: datetime


_EXAMPLE: JsonDict = {
    "name": "digits",
    "version": "1.5.0",
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "format": "onnx",
    "created_at": "2026-01-31T12:00:00Z",
    "dataset_hash": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    "code_revision": "3f1c2e9",
    "parent_version": "1.4.0",
    "children": ["1.6.0"],
    "experiment": None,
    "training_run": None,
    "metrics": {"accuracy": 0.974},
    "variants": [],
    "lineage": {},
}


class ModelLineagePublic(BaseModel):
    """Where a version came from: its data, code and parent; what it produced; what it ships as."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    name: str
    version: str
    sha256: str
    format: str
    created_at: datetime
    dataset_hash: str | None = Field(description="content hash of the training data; null: not recorded")
    code_revision: str | None = Field(description="the training code's revision; null: not recorded")
    parent_version: str | None = Field(
        description="the version this one was trained to replace (the champion of its training run)"
    )
    children: list[str] = Field(description="versions trained to replace this one, oldest first")
    experiment: ExperimentPublic | None = Field(description="the training run's record, when registered")
    training_run: TrainingRunRefPublic | None = Field(description="the continuous-training run, if any")
    metrics: dict[str, Any] = Field(description="the bundle's metrics, else the experiment's")
    variants: list[VariantPublic]
    lineage: dict[str, Any] = Field(description="the bundle manifest's lineage, as registered")
