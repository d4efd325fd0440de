"""Request and response shapes of alerts, alert rules and alert receivers.

Rules arrive as ``cloud.alerts.spec.RuleSpec`` (validated there, with messages that name the field).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloud.alerts.receivers import RECEIVER_NAME_PATTERN

__all__ = [
    "AlertDeliveryPublic",
    "AlertDetailPublic",
    "AlertNotificationPublic",
    "AlertPublic",
    "AlertReceiverCreate",
    "AlertReceiverPublic",
    "AlertReceiverUpdate",
    "AlertReceiversPublic",
    "AlertRulePublic",
    "AlertRulesApplied",
    "AlertRulesPublic",
    "AlertTransitionPublic",
    "AlertsPublic",
]

_NEXT = "pass as `cursor` for the next page"


class AlertRulePublic(BaseModel):
    """A stored rule, in the shape a rules file spells it (``for`` as text), with its bookkeeping."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    fleet: str
    metric: str
    feature: str | None = Field(description="null: the worst of the metric's features")
    reference: str | None = Field(description="null: the worst of baseline and previous")
    comparison: str = Field(description="'>' or '<'")
    threshold: float
    for_: str = Field(alias="for", description="how long the condition must hold before firing, e.g. 10m")
    for_s: int = Field(description="the same, in seconds")
    scope: str = Field(description="fleet, cohorts (every cohort, one alert each) or cohort:<name>")
    severity: str
    enabled: bool
    description: str
    created_at: datetime
    updated_at: datetime


class AlertRulesPublic(BaseModel):
    data: list[AlertRulePublic]
    count: int
    next_cursor: str | None = Field(default=None, description=_NEXT)


class AlertRulesApplied(BaseModel):
    created: list[str] = Field(description="names of the rules created")
    updated: list[str] = Field(description="names of the rules replaced with a changed definition")
    unchanged: list[str] = Field(description="names of the rules that were already as given")


class AlertPublic(BaseModel):
    """One alert: one episode of a rule's condition on one cohort's model version."""

    id: int
    rule: str
    metric: str
    severity: str
    state: str = Field(description="pending, firing, resolved or inactive")
    cohort_id: int = Field(description="0: the whole fleet")
    cohort: str | None = Field(description="the cohort's name; null for the whole fleet or a deleted cohort")
    model_name: str
    model_version: str
    value: float | None = Field(description="the latest judged value")
    feature: str = Field(description="the feature the value came from, when the rule takes the worst")
    reference: str = Field(description="the reference the value came from, when the rule takes the worst")
    since: datetime = Field(description="start of the run of breaching buckets")
    last_evaluated: datetime
    fired_at: datetime | None
    resolved_at: datetime | None


class AlertsPublic(BaseModel):
    data: list[AlertPublic]
    count: int
    next_cursor: str | None = Field(default=None, description=_NEXT)


class AlertTransitionPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    event: str = Field(description="breach, held, clear, no_data or disable")
    at: datetime
    value: float | None
    detail: str


class AlertDeliveryPublic(BaseModel):
    receiver: str
    state: str = Field(description="pending, delivered or failed")
    attempts: int
    last_status: int | None = Field(description="the receiver's HTTP status on the last attempt")
    last_error: str
    next_attempt_at: datetime | None = Field(description="while pending: when it is tried next")
    delivered_at: datetime | None


class AlertNotificationPublic(BaseModel):
    id: int
    state: str = Field(description="firing or resolved")
    created_at: datetime
    deliveries: list[AlertDeliveryPublic]


class AlertDetailPublic(AlertPublic):
    history: list[AlertTransitionPublic] = Field(description="every transition, oldest first")
    notifications: list[AlertNotificationPublic]


ReceiverName = Annotated[str, StringConstraints(pattern=RECEIVER_NAME_PATTERN)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Description = Annotated[str, StringConstraints(max_length=1024)]


class AlertReceiverCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ReceiverName
    url: Url = Field(description="http:// or https://; JSON notifications are POSTed to it, signed")
    enabled: bool = True
    description: Description = ""


class AlertReceiverUpdate(BaseModel):
    """What to change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    enabled: bool | None = None
    description: Description | None = None


class AlertReceiverPublic(BaseModel):
    name: str
    url: str = Field(description="shown up to its host: the rest may hold a credential")
    enabled: bool
    description: str
    created_at: datetime
    updated_at: datetime


class AlertReceiversPublic(BaseModel):
    data: list[AlertReceiverPublic]
    count: int
    next_cursor: str | None = Field(default=None, description=_NEXT)
