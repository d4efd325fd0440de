"""Request and response shapes of the HTTP API, one group per resource.

Tables live in ``cloud.models``; these are what crosses the wire, documented in OpenAPI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cloud.models import DeviceState, Role
from cloud.validation import MODEL_NAME_PATTERN, VERSION_PATTERN

ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]
ModelVersionStr = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- models -------------------------------------------------------------------------------


class TensorSpec(_Public):
    name: str
    dtype: str = Field(description="numpy dtype name, e.g. float32")
    shape: list[int] = Field(description="-1 marks a dynamic dimension")


class ModelVersionPublic(_Public):
    id: int
    name: str
    version: str
    format: str
    sha256: str
    length: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    created_at: datetime


class ModelVersionsPublic(BaseModel):
    data: list[ModelVersionPublic]
    count: int


# --- devices ------------------------------------------------------------------------------


class ModelRefPublic(BaseModel):
    name: str
    version: str
    sha256: str


class DevicePublic(BaseModel):
    id: str
    fleet: str
    state: DeviceState
    agent_version: str
    health: str
    capabilities: dict[str, Any]
    labels: dict[str, str]
    active_model: ModelRefPublic | None
    previous_model: ModelRefPublic | None
    desired_model: ModelRefPublic | None
    desired_generation: int | None
    applied_generation: int
    in_sync: bool = Field(
        description="true when no model is desired or the active model's sha256 equals the desired one"
    )
    first_seen: datetime
    last_seen: datetime


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int


class DeviceEventPublic(_Public):
    seq: int
    ts: datetime
    kind: str
    model_name: str
    model_version: str
    model_sha256: str
    reason: str
    details: dict[str, str]
    generation: int
    received_at: datetime


class DeviceEventsPublic(BaseModel):
    data: list[DeviceEventPublic]
    count: int


class TelemetryWindowPublic(_Public):
    seq: int
    window_start: datetime
    window_end: datetime
    model_name: str
    model_version: str
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    received_at: datetime


class TelemetryWindowsPublic(BaseModel):
    data: list[TelemetryWindowPublic]
    count: int


class DeviceDetailPublic(DevicePublic):
    recent_events: list[DeviceEventPublic] = Field(description="the latest events, newest first")
    last_telemetry: TelemetryWindowPublic | None


# --- assignments --------------------------------------------------------------------------


class AssignmentCreate(BaseModel):
    """Assign one registered model version to devices named by id or chosen by labels."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    version: ModelVersionStr
    devices: list[str] | None = Field(default=None, min_length=1)
    selector: dict[str, str] | None = Field(default=None, min_length=1, description="labels to match")

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.devices is None) == (self.selector is None):
            raise ValueError("expected exactly one of 'devices' (a list of ids) or 'selector' (labels)")
        return self


class AssignedDevice(BaseModel):
    device_id: str
    generation: int


class AssignmentsPublic(BaseModel):
    assigned: list[AssignedDevice]
    count: int


# --- tokens and health --------------------------------------------------------------------


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    role: Role


class TokenCreated(BaseModel):
    name: str
    role: Role
    token: str = Field(description="shown once; the hub keeps only its sha256")


class Health(BaseModel):
    status: str
    db: bool
    mqtt: bool
