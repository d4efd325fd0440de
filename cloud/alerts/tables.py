"""Tables of the alerts part: rules, alert episodes and their history, notifications, receivers.

An :class:`Alert` row is one episode of one rule's condition on one cohort and model version:
it opens in PENDING (or FIRING) and ends in INACTIVE or RESOLVED; the next breach opens a new
row. While an episode is open its ``open_key`` is set, and a unique index on it makes sure two
hub replicas evaluating at once open one row, not two.

A notification is queued in the same transaction as the move into FIRING or RESOLVED that it
tells of, so a hub that stops right after loses none; one :class:`AlertDelivery` per enabled
receiver then carries its attempts, back-off and outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from cloud.clock import utcnow
from cloud.models import UTCDateTime

__all__ = ["Alert", "AlertDelivery", "AlertNotification", "AlertReceiver", "AlertRule", "AlertTransition"]


class AlertRule(SQLModel, table=True):
    """A condition on one cohort metric, e.g. ``drift_score > 1 for 10m`` on every cohort."""

    __tablename__ = "alert_rule"
    __table_args__ = (UniqueConstraint("fleet", "name", name="uq_alert_rule_fleet_name"),)

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(index=True, max_length=128)
    name: str = Field(max_length=64)
    metric: str = Field(max_length=64)
    # None: every value of the column counts, and the worst one is judged.
    feature: str | None = Field(default=None, max_length=128)
    reference: str | None = Field(default=None, max_length=16)
    comparison: str = Field(max_length=2)  # ">" or "<"
    threshold: float
    for_s: int = 0  # seconds the condition must hold before the alert fires
    # "fleet" (cohort_id 0), "cohorts" (every cohort, one alert each) or "cohort:<name>".
    scope: str = Field(max_length=80)
    severity: str = Field(default="warning", max_length=16)
    enabled: bool = True
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Alert(SQLModel, table=True):
    """One episode of a rule's condition on one cohort's model version."""

    __tablename__ = "alert"
    __table_args__ = (
        Index("ix_alert_fleet_state", "fleet", "state"),
        Index("ix_alert_rule", "rule_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(max_length=128)
    # None once the rule is deleted; its name and metric stay below for the record.
    rule_id: int | None = Field(default=None, foreign_key="alert_rule.id")
    rule_name: str = Field(max_length=64)
    metric: str = Field(max_length=64)
    severity: str = Field(default="warning", max_length=16)
    cohort_id: int = 0  # cloud.telemetry.tables.FLEET_SCOPE for the whole fleet
    model_name: str = ""
    model_version: str = ""
    state: str = Field(max_length=16)  # cloud.alerts.machine.AlertState
    value: float | None = None  # the judged value of the latest bucket
    # Where the judged value came from when the rule takes every feature or reference (the worst one).
    feature: str = ""
    reference: str = ""
    since: datetime = Field(sa_type=UTCDateTime)  # start of the run of breaching buckets
    last_evaluated: datetime = Field(sa_type=UTCDateTime)
    fired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # sha256 of (rule, cohort, model, version) while the episode is open, None once it ended.
    open_key: str | None = Field(default=None, max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertTransition(SQLModel, table=True):
    """One move of an alert's state machine, with the value that caused it."""

    __tablename__ = "alert_transition"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    from_state: str = Field(max_length=16)
    to_state: str = Field(max_length=16)
    event: str = Field(max_length=16)  # cloud.alerts.machine.AlertEvent
    at: datetime = Field(sa_type=UTCDateTime)
    value: float | None = None
    detail: str = ""


class AlertReceiver(SQLModel, table=True):
    """A webhook that hears of every alert that fires or resolves in its fleet."""

    __tablename__ = "alert_receiver"
    __table_args__ = (UniqueConstraint("fleet", "name", name="uq_alert_receiver_fleet_name"),)

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(index=True, max_length=128)
    name: str = Field(max_length=64)
    url: str = Field(max_length=2048)
    enabled: bool = True
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertNotification(SQLModel, table=True):
    """What receivers are told of one transition into FIRING or RESOLVED (the JSON they get)."""

    __tablename__ = "alert_notification"
    __table_args__ = (Index("ix_alert_notification_fan_out", "fleet", "fanned_out"),)

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(max_length=128)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    state: str = Field(max_length=16)  # firing or resolved
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    # Set once a delivery row exists for every receiver enabled then; later receivers get none.
    fanned_out: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertDelivery(SQLModel, table=True):
    """One notification to one receiver: its attempts, back-off and outcome."""

    __tablename__ = "alert_delivery"
    __table_args__ = (
        UniqueConstraint("notification_id", "receiver_id", name="uq_alert_delivery_receiver"),
        Index("ix_alert_delivery_due", "fleet", "state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    fleet: str = Field(max_length=128)
    notification_id: int = Field(foreign_key="alert_notification.id", index=True)
    # None once the receiver is deleted; its name stays for the record.
    receiver_id: int | None = Field(default=None, foreign_key="alert_receiver.id")
    receiver_name: str = Field(max_length=64)
    state: str = Field(max_length=16)  # cloud.alerts.machine.DeliveryState
    attempts: int = 0
    # When the next attempt is due; while an attempt is under way, the end of its lease (a hub that
    # dies mid-attempt leaves the delivery to be retried once the lease has passed).
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    last_error: str = ""
    last_status: int | None = None  # the receiver's HTTP status on the last attempt
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
