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
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last page"
    )


# --- experiments, bundles and variants -----------------------------------------------------

RunId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8,64}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ExperimentCreate(BaseModel):
    """A training run as ``fleet train`` records it (its run.json without the validation report)."""

    model_config = ConfigDict(extra="forbid")

    run_id: RunId
    name: ModelName
    kind: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    params: dict[str, Any]
    seed: int
    metrics: dict[str, float]
    dataset_name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    dataset_hash: Sha256Hex
    dataset_sizes: dict[str, int] = Field(default_factory=dict)
    code_revision: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    duration_s: float = Field(ge=0)
    device: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    world_size: int = Field(default=1, ge=1)
    started_at: datetime
    finished_at: datetime

    @model_validator(mode="after")
    def _aware_times(self) -> Self:
        if self.started_at.tzinfo is None or self.finished_at.tzinfo is None:
            raise ValueError("started_at and finished_at must carry a time zone (ISO 8601 with an offset)")
        return self


class ModelVersionRef(BaseModel):
    name: str
    version: str
    variants: list[str]
    created_at: datetime


class ExperimentPublic(_Public):
    run_id: str
    name: str
    kind: str
    params: dict[str, Any]
    seed: int
    metrics: dict[str, float]
    dataset_name: str
    dataset_hash: str
    dataset_sizes: dict[str, int]
    code_revision: str
    duration_s: float
    device: str
    world_size: int
    started_at: datetime
    finished_at: datetime
    created_at: datetime


class ExperimentDetailPublic(ExperimentPublic):
    versions: list[ModelVersionRef] = Field(description="model versions this run produced")


class ExperimentsPublic(BaseModel):
    data: list[ExperimentPublic]
    count: int
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last page"
    )


class VariantPublic(_Public):
    variant: str
    format: str
    precision: str
    sha256: str
    length: int
    runtimes: list[dict[str, str]] = Field(description="any one of these runs it: name and min_version")
    metrics: dict[str, Any]
    derived_from: str | None
    is_baseline: bool


class RejectedVariantPublic(BaseModel):
    name: str
    format: str
    precision: str
    reasons: list[str]


class ArtifactRefPublic(BaseModel):
    sha256: str
    length: int
    media_type: str


class BundlePublic(BaseModel):
    """A version's variants, the ones the gates kept out, its profile and lineage."""

    name: str
    version: str
    experiment_run_id: str | None
    variants: list[VariantPublic]
    rejected: list[RejectedVariantPublic]
    profile: ArtifactRefPublic | None
    lineage: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime


# --- devices ------------------------------------------------------------------------------


class ModelRefPublic(BaseModel):
    name: str
    version: str
    sha256: str
    variant: str = Field(default="", description="the bundle variant, e.g. tflite-int8 (empty: not known)")
    precision: str = Field(default="", description="fp32 or int8 (empty: not known)")


class TrialPublic(BaseModel):
    """A version on trial on the device, as it last reported it."""

    model: ModelRefPublic
    # str, not an enum: a newer agent's mode must not make the device unreadable.
    mode: str = Field(
        description="serve (the new version answers) or shadow (the previous one answers; the new one runs "
        "beside it)"
    )
    requests: int = Field(description="requests judged so far")
    window_requests: int = Field(description="requests that end the trial")
    started_at: datetime
    window_ends_at: datetime | None = Field(description="the trial ends at this instant at the latest")


class DevicePublic(BaseModel):
    id: str
    fleet: str
    state: DeviceState
    agent_version: str
    health: str
    capabilities: dict[str, Any]
    labels: dict[str, str] = Field(
        description="effective: the reported labels with the operator's laid over them; selectors match these"
    )
    reported_labels: dict[str, str] = Field(default_factory=dict, description="as the device reports them")
    operator_labels: dict[str, str | None] = Field(
        default_factory=dict, description="set by an operator; null hides the reported label of that key"
    )
    active_model: ModelRefPublic | None
    previous_model: ModelRefPublic | None
    desired_model: ModelRefPublic | None
    desired_generation: int | None
    applied_generation: int
    trial: TrialPublic | None = Field(default=None, description="the version on trial; null when none runs")
    in_sync: bool = Field(
        description="committed: the active model is the desired one, the applied generation has reached the "
        "desired one, and no trial runs (true with no desired model and no trial)"
    )
    hardware_id: str = Field(default="", description="the board; empty when the device takes no firmware")
    firmware_version: str = Field(default="", description="the firmware the device runs; empty without slots")
    firmware_slot: str = Field(default="", description="a or b: the firmware slot it runs")
    trusted_root_version: int = Field(default=0, description="the TUF root version it trusts (0: none)")
    queued_messages: int = Field(default=0, description="messages waiting in its outgoing queue")
    dropped_messages: int = Field(default=0, description="messages its full outgoing queue dropped")
    trial_policy_source: str = Field(
        default="",
        description="where the trial policy that judged its last trial came from: assignment, "
        "rollout, bundle or default (empty before any trial)",
    )
    trial_policy_digest: str = Field(default="", description="sha256 of that policy's canonical form")
    last_load_ms: float = Field(default=0.0, description="how long its last model load took, in ms")
    session_memory_bytes: int = Field(default=0, description="memory its last model load added, in bytes")
    first_seen: datetime
    last_seen: datetime


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last page"
    )


class DeviceEventPublic(_Public):
    seq: int
    ts: datetime
    kind: str
    model_name: str
    model_version: str
    model_sha256: str
    reason: str
    details: dict[str, Any] = Field(
        description="figures with their types (integers, numbers, booleans, text); all text from older agents"
    )
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
    cpu_percent: float | None = Field(default=None, description="the agent's CPU use; null: not reported")
    rss_bytes: int | None = Field(default=None, description="the agent's resident memory; null: not reported")
    peak_rss_bytes: int | None = Field(default=None, description="its peak over the window; null: none")
    received_at: datetime


class TelemetryWindowsPublic(BaseModel):
    data: list[TelemetryWindowPublic]
    count: int


class RollbackPublic(_Public):
    device_id: str
    seq: int
    ts: datetime
    model_name: str
    model_version: str
    model_sha256: str
    variant: str
    generation: int
    gate: str = Field(description="the failed gate: nonfinite, errors, latency_ratio, divergence, ...")
    reason: str
    details: dict[str, str] = Field(description="the figures the device measured")
    refused: bool = Field(description="the device refuses this version; the hub does not offer it again")
    received_at: datetime


class RollbacksPublic(BaseModel):
    data: list[RollbackPublic]
    count: int
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last page"
    )


class DeviceDetailPublic(DevicePublic):
    recent_events: list[DeviceEventPublic] = Field(description="the latest events, newest first")
    last_telemetry: TelemetryWindowPublic | None
    rollbacks: list[RollbackPublic] = Field(
        default_factory=list, description="versions this device rolled back on its own, newest first"
    )


class VersionCountPublic(BaseModel):
    name: str | None = Field(description="the active model's name; null for devices that run none")
    version: str | None
    count: int


class FleetSummaryPublic(BaseModel):
    """The fleet at a glance: how many devices in each state, health, active version and cohort."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "fleet": "default",
                    "total": 10000,
                    "by_state": {"online": 9412, "offline": 571, "unknown": 17},
                    "by_health": {
                        "serving": 9120,
                        "idle": 150,
                        "degraded": 42,
                        "trial": 100,
                        "offline": 571,
                        "unknown": 17,
                        "other": 0,
                    },
                    "by_version": [
                        {"name": "digits", "version": "1.4.0", "count": 8900},
                        {"name": "digits", "version": "1.5.0", "count": 1083},
                        {"name": None, "version": None, "count": 17},
                    ],
                    "by_cohort": {"canary": 100, "site-lab": 2500},
                }
            ]
        }
    )

    fleet: str
    total: int
    by_state: dict[str, int] = Field(description="every state, zero included")
    by_health: dict[str, int] = Field(
        description="by kind of the reported health text: serving, idle, degraded, trial, offline, "
        "unknown (none reported yet) and other (text this hub does not know); zero included"
    )
    by_version: list[VersionCountPublic] = Field(description="by active model version, most devices first")
    by_cohort: dict[str, int] = Field(description="members of each of the fleet's cohorts now")


# --- assignments --------------------------------------------------------------------------


LabelPairs = Annotated[dict[str, str], Field(min_length=1)]
SelectorText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class AssignmentCreate(BaseModel):
    """Assign one registered model version to devices named by id or chosen by labels."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    version: ModelVersionStr
    devices: list[str] | None = Field(default=None, min_length=1)
    selector: LabelPairs | SelectorText | None = Field(
        default=None,
        description="labels to match: {key: value} pairs, or a selector such as 'site in (a,b),!retired'",
    )
    trial_policy: dict[str, Any] | None = Field(
        default=None,
        description="how the devices judge this version's trial, ahead of any rollout plan's and the "
        "bundle's, e.g. {'latency': {'budget_ms': 250}, 'divergence': {'reference': 'profile'}}",
    )

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.devices is None) == (self.selector is None):
            raise ValueError("expected exactly one of 'devices' (a list of ids) or 'selector' (labels)")
        return self


class AssignedDevice(BaseModel):
    device_id: str
    generation: int


class SkippedDevice(BaseModel):
    device_id: str
    reason: str


class AssignmentsPublic(BaseModel):
    assigned: list[AssignedDevice]
    count: int
    skipped: list[SkippedDevice] = Field(
        default_factory=list, description="devices left out because they rolled this version back"
    )


# --- tokens and health --------------------------------------------------------------------


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    role: Role
    expires_in_s: int | None = Field(
        default=None, ge=1, le=10 * 365 * 86_400, description="seconds until it expires; none: never"
    )


class TokenCreated(BaseModel):
    name: str
    role: Role
    token: str = Field(description="shown once; the hub keeps only its sha256")
    expires_at: datetime | None = Field(default=None, description="none: valid until revoked")


class Health(BaseModel):
    status: str
    db: bool
    mqtt: bool
