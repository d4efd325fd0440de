"""Request and response shapes of cohorts and of operator labels on devices."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloud.services.cohorts import COHORT_NAME_PATTERN

CohortName = Annotated[str, StringConstraints(pattern=COHORT_NAME_PATTERN)]
SelectorText = Annotated[str, StringConstraints(max_length=4096)]


class CohortCreate(BaseModel):
    """A selector, an explicit list of device ids, or both (members are the union)."""

    model_config = ConfigDict(extra="forbid")

    name: CohortName
    selector: SelectorText | None = Field(
        default=None, description="a label selector, e.g. 'site in (lab,office),tier!=canary,!retired'"
    )
    devices: list[str] | None = Field(
        default=None, description="device ids that are members whatever their labels"
    )
    description: Annotated[str, StringConstraints(max_length=1024)] = ""


class CohortPublic(BaseModel):
    name: str
    fleet: str
    selector: str = Field(description="canonical spelling; empty when the cohort is a device list only")
    devices: list[str]
    description: str
    created_at: datetime
    member_count: int = Field(description="devices of the fleet in the cohort now")


class CohortsPublic(BaseModel):
    data: list[CohortPublic]
    count: int
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page")


class CohortMembersPublic(BaseModel):
    data: list[str] = Field(description="device ids, in order")
    count: int
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page")


class CohortDetailPublic(CohortPublic):
    members: CohortMembersPublic = Field(description="the first members (page through /members for more)")


# --- operator labels of a device -----------------------------------------------------------

LabelValue = str | None


class DeviceLabelsReplace(BaseModel):
    """The device's whole set of operator labels; a value of null (or "-") hides the reported label."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[str, LabelValue]


class DeviceLabelsPatch(BaseModel):
    """Set some operator labels and drop others (a dropped key shows its reported value again)."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, LabelValue] = Field(
        default_factory=dict, description="key: value; null (or '-') hides the reported label of that key"
    )
    remove: list[str] = Field(default_factory=list, description="keys whose operator entry is dropped")


class DeviceLabelsPublic(BaseModel):
    device_id: str
    labels: dict[str, str] = Field(description="effective: what selectors match")
    reported_labels: dict[str, str]
    operator_labels: dict[str, str | None]
