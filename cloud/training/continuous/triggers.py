"""When to retrain: a schedule, a drift alert, an accuracy drop, or enough new labelled samples.

:func:`check` is step 4 of the hub's observe cycle. For every model the fleet serves it asks
each trigger in turn and queues one training run per model that any trigger wants, naming the
first trigger as the cause and the others under ``also``. A model with a queued or running run
gets no second one (the run table's partial unique index makes that hold across hub replicas),
so running the check twice, or on two replicas at once, queues one run.

- **drift**: an alert change to state ``firing`` whose metric starts with ``drift`` (the alerts
  engine hands its changes in; :class:`AlertChangeLike` is all that is read of them);
- **accuracy**: a cohort's labelled accuracy (``cloud.drift.tables.CohortMetric`` ``accuracy``
  rows on the champion since the model's last run, on at least :data:`MIN_ACCURACY_SAMPLES`
  labelled predictions) below the champion's recorded held-out accuracy by more than
  ``settings.ct_accuracy_drop``;
- **labelled**: at least ``settings.ct_labelled_samples`` new labelled samples since the model's
  last run: the fleet-wide ``labelled`` metric rows plus the samples uploaded to the hub;
- **schedule**: ``settings.ct_schedule`` (crontab, UTC) fires between the model's last run (or,
  before its first, the champion's registration) and now.

Pure apart from the database: ``now`` is a parameter.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlmodel import Session, col, func, select

from cloud.db import SessionFactory, transaction
from cloud.drift.tables import CohortMetric
from cloud.models import Cohort, ModelVersion
from cloud.rollouts.windows import cron_trigger
from cloud.settings import Settings
from cloud.telemetry.tables import FLEET_SCOPE
from cloud.training.continuous.champion import recorded_accuracy, served_models, serving_champion
from cloud.training.continuous.datasets import uploaded_since
from cloud.training.continuous.service import SYSTEM, TrainingRunRecord, last_run_at, queue_run

__all__ = [
    "MIN_ACCURACY_SAMPLES",
    "AlertChangeLike",
    "Trigger",
    "TriggerKind",
    "accuracy_trigger",
    "check",
    "drift_triggers",
    "labelled_trigger",
    "schedule_trigger",
]

log = logging.getLogger(__name__)

# Fewer labelled predictions than this in a bucket say too little about accuracy to retrain on.
MIN_ACCURACY_SAMPLES: Final = 30
_FIRING = "firing"
_DRIFT_PREFIX = "drift"
# APScheduler's cron resolution is a second: a run queued exactly at a fire time must not be due again.
_AFTER = timedelta(microseconds=1)


class TriggerKind(enum.StrEnum):
    DRIFT = "drift"
    ACCURACY = "accuracy"
    LABELLED = "labelled"
    SCHEDULE = "schedule"
    MANUAL = "manual"


class AlertChangeLike(Protocol):
    """What a trigger reads of an alert change from the alerts engine."""

    @property
    def rule(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def cohort_id(self) -> int: ...
    @property
    def cohort(self) -> str | None: ...
    @property
    def model_name(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def state(self) -> str: ...


@dataclass(frozen=True)
class Trigger:
    """One reason to retrain one model, with the figures that made it fire."""

    kind: TriggerKind
    model_name: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_detail(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "summary": self.summary, **self.detail}


def _state(value: object) -> str:
    # A StrEnum, a plain Enum or text: the value is what counts.
    return str(getattr(value, "value", value))


def drift_triggers(changes: Sequence[AlertChangeLike], models: Sequence[str]) -> list[Trigger]:
    """A trigger per drift alert that started firing (an alert over every model applies to each)."""
    found = []
    for change in changes:
        if _state(change.state) != _FIRING or not change.metric.startswith(_DRIFT_PREFIX):
            continue
        for model in [change.model_name] if change.model_name else models:
            detail = {
                "rule": change.rule,
                "metric": change.metric,
                "cohort_id": change.cohort_id,
                "cohort": change.cohort,
                "model_version": change.model_version,
                "state": _state(change.state),
            }
            if change.cohort_id == FLEET_SCOPE:
                where = "the fleet"
            else:
                where = f"cohort {change.cohort or change.cohort_id}"
            summary = f"alert {change.rule} fires: {change.metric} on {where}"
            found.append(Trigger(TriggerKind.DRIFT, model, summary, detail))
    return found


def accuracy_trigger(
    session: Session, fleet: str, champion: ModelVersion, *, since: datetime | None, drop: float
) -> Trigger | None:
    """The cohort whose labelled accuracy on the champion fell furthest below its held-out accuracy."""
    if drop <= 0:
        return None
    reference = recorded_accuracy(session, champion)
    if reference is None:
        return None
    query = select(CohortMetric).where(
        CohortMetric.fleet == fleet,
        CohortMetric.metric == "accuracy",
        CohortMetric.model_name == champion.name,
        CohortMetric.model_version == champion.version,
        CohortMetric.n >= MIN_ACCURACY_SAMPLES,
        CohortMetric.value < reference - drop,
    )
    if since is not None:
        query = query.where(CohortMetric.bucket_start >= since)
    worst = session.exec(query.order_by(col(CohortMetric.value), col(CohortMetric.bucket_start))).first()
    if worst is None:
        return None
    cohort = _cohort_name(session, worst.cohort_id)
    detail = {
        "metric": "accuracy",
        "cohort_id": worst.cohort_id,
        "cohort": cohort,
        "model_version": champion.version,
        "accuracy": worst.value,
        "labelled": worst.n,
        "champion_accuracy": reference,
        "allowed_drop": drop,
        "bucket_start": worst.bucket_start.isoformat(),
    }
    summary = (
        f"labelled accuracy on {cohort} is {worst.value:.3f} ({worst.n} labelled), more than {drop:g} "
        f"below the champion's held-out {reference:.3f}"
    )
    return Trigger(TriggerKind.ACCURACY, champion.name, summary, detail)


def _cohort_name(session: Session, cohort_id: int) -> str:
    if cohort_id == FLEET_SCOPE:
        return "the fleet"
    name = session.exec(select(Cohort.name).where(Cohort.id == cohort_id)).first()
    return f"cohort {name}" if name is not None else f"cohort {cohort_id}"


def labelled_trigger(
    session: Session, fleet: str, model_name: str, *, since: datetime | None, threshold: int
) -> Trigger | None:
    """Enough new labelled samples since the model's last run: reported by devices plus uploaded."""
    if threshold <= 0:
        return None
    query = select(func.coalesce(func.sum(CohortMetric.value), 0.0)).where(
        CohortMetric.fleet == fleet,
        CohortMetric.metric == "labelled",
        # The fleet-wide rows only: every cohort's rows count the same predictions again.
        CohortMetric.cohort_id == FLEET_SCOPE,
        CohortMetric.model_name == model_name,
    )
    if since is not None:
        query = query.where(CohortMetric.bucket_start >= since)
    reported = int(session.exec(query).one())
    uploaded = uploaded_since(session, fleet, model_name, since)
    total = reported + uploaded
    if total < threshold:
        return None
    detail = {"reported": reported, "uploaded": uploaded, "total": total, "threshold": threshold,
              "since": since.isoformat() if since is not None else None}  # fmt: skip
    summary = (
        f"{total} new labelled samples ({reported} reported, {uploaded} uploaded), threshold {threshold}"
    )
    return Trigger(TriggerKind.LABELLED, model_name, summary, detail)


def schedule_trigger(model_name: str, *, cron: str, reference: datetime, now: datetime) -> Trigger | None:
    """Due when the schedule's next fire time after ``reference`` (the last run) is not after ``now``.

    Raises ValueError for an expression that is not crontab.
    """
    fires = cron_trigger(cron, "UTC").get_next_fire_time(None, reference + _AFTER)
    if fires is None or fires > now:
        return None
    detail = {"schedule": cron, "fire_time": fires.isoformat(), "after": reference.isoformat()}
    return Trigger(
        TriggerKind.SCHEDULE, model_name, f"schedule {cron!r} fired at {fires:%Y-%m-%d %H:%M} UTC", detail
    )


def _wanted(
    session: Session, fleet: str, now: datetime, changes: Sequence[AlertChangeLike], settings: Settings
) -> dict[str, list[Trigger]]:
    models = served_models(session, fleet)
    wanted: dict[str, list[Trigger]] = {}
    for trigger in drift_triggers(changes, models):
        wanted.setdefault(trigger.model_name, []).append(trigger)
    for model in models:
        champion = serving_champion(session, fleet, model)
        if champion is None:
            continue
        since = last_run_at(session, fleet, model)
        found = [
            accuracy_trigger(session, fleet, champion, since=since, drop=settings.ct_accuracy_drop),
            labelled_trigger(session, fleet, model, since=since, threshold=settings.ct_labelled_samples),
        ]
        if settings.ct_schedule:
            try:
                found.append(
                    schedule_trigger(
                        model, cron=settings.ct_schedule, reference=since or champion.created_at, now=now
                    )
                )
            except ValueError as e:
                log.error(
                    "EDGEFLEET_CT_SCHEDULE %r is not a crontab expression (%s): no scheduled runs",
                    settings.ct_schedule,
                    e,
                )
        wanted.setdefault(model, []).extend(t for t in found if t is not None)
    return {model: triggers for model, triggers in wanted.items() if triggers}


def check(
    sessions: SessionFactory,
    *,
    fleet: str,
    now: datetime,
    changes: Sequence[AlertChangeLike] = (),
    settings: Settings,
) -> list[TrainingRunRecord]:
    """Queue a training run for each model a trigger wants and none is queued or running for; returns them."""
    queued = []
    with transaction(sessions) as session:
        for model, triggers in sorted(_wanted(session, fleet, now, changes, settings).items()):
            first, others = triggers[0], triggers[1:]
            detail = {**first.as_detail(), "also": [t.as_detail() for t in others]}
            run = queue_run(
                session, fleet=fleet, model_name=model, trigger=first.kind.value, detail=detail,
                actor=SYSTEM, now=now,
            )  # fmt: skip
            if run is not None:
                queued.append(run)
    return [TrainingRunRecord.of(run) for run in queued]
