"""What a rollout's stage measured, read from the database: the figures its gates judge.

Every figure is aggregated in SQL over the devices the stage offered the target to, and only
over what happened after each device was offered it (``received_at >= offered_at``): an event
or a telemetry window from before the offer says nothing about the target.

- outcomes come from ``DeviceEvent`` rows; a device counts once, by its most telling outcome:
  rolled back, else committed, else failed (a failed download that later committed is updated);
- requests, errors and p95 come from ``TelemetryWindow`` rows on the target version; the baseline
  p95 from the same devices' windows on any other version of the model over the last hour.
  The gates' error rate and p95 are robust to one lying device (see :mod:`cloud.rollouts.robust`):
  each device's figure is computed first, then the devices' figures are combined with a trimmed
  mean in which no device weighs more than the median device. ``requests`` and ``errors`` stay
  plain totals, for display;
- offline is ``Device.state`` now, for devices offline longer than the plan's ``offline_grace``
  (``last_seen`` is when the hub heard the device's last will);
- ``extra``: the figures of the drift and accuracy gates (``cloud.drift.gates``), from the stage's
  devices' sketch windows, computed only when the plan turns those gates on.

A firmware target has no version in its telemetry or in most of its events (the agent reports
firmware steps without a model), so its outcomes are the firmware event kinds after the offer and
its telemetry is every window after the offer, its baseline every window in the hour before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Subquery, and_, case, exists, func, or_
from sqlmodel import Session, col, select

from cloud.drift.gates import stage_extra  # also registers the drift_score and accuracy_drop gates
from cloud.models import Device, DeviceEvent, DeviceState, Rollout, RolloutDevice, TelemetryWindow
from cloud.rollouts.gates import StageFigures, Verdict
from cloud.rollouts.robust import DeviceFigures, robust_error_rate, robust_p95
from cloud.sql_lists import in_list

__all__ = [
    "BASELINE_LOOKBACK",
    "FAILED_KINDS",
    "device_outcomes",
    "figures_json",
    "stage_figures",
]

# How far back the previous version's latency counts as the baseline.
BASELINE_LOOKBACK = timedelta(hours=1)

# Event kinds (as ingest stores them: EventKind without its prefix, lower case) per outcome.
_MODEL_KINDS: dict[str, tuple[str, ...]] = {
    "rolled_back": ("rolled_back",),
    "committed": ("committed",),
    # Download failures are retried by the agent on its own; these are not.
    "failed": ("install_failed", "verify_failed", "desired_rejected"),
}
_FIRMWARE_KINDS: dict[str, tuple[str, ...]] = {
    "rolled_back": ("firmware_rolled_back",),
    "committed": ("firmware_committed",),
    "failed": ("firmware_failed",),
}
FAILED_KINDS = _MODEL_KINDS["failed"] + _FIRMWARE_KINDS["failed"]


def outcome_kinds(target_kind: str) -> dict[str, tuple[str, ...]]:
    """Event kinds per outcome for a model or firmware target."""
    return _FIRMWARE_KINDS if target_kind == "firmware" else _MODEL_KINDS


def _offered(rollout: Rollout, stage: int | None) -> Subquery:
    query = select(col(RolloutDevice.device_id), col(RolloutDevice.offered_at)).where(
        RolloutDevice.rollout_id == rollout.id, col(RolloutDevice.offered_at).is_not(None)
    )
    if stage is not None:
        query = query.where(RolloutDevice.stage == stage)
    return query.subquery("offered")


def _event_matches(rollout: Rollout, offered: Subquery) -> ColumnElement[bool]:
    kinds = outcome_kinds(rollout.target_kind)
    every = [k for group in kinds.values() for k in group]
    clause = and_(
        col(DeviceEvent.device_id) == offered.c.device_id,
        col(DeviceEvent.received_at) >= offered.c.offered_at,
        col(DeviceEvent.kind).in_(every),
    )
    if rollout.target_kind == "model":
        clause = and_(
            clause,
            col(DeviceEvent.model_name) == rollout.target_name,
            col(DeviceEvent.model_version) == rollout.target_version,
        )
    return clause


def _per_device_outcomes(rollout: Rollout, offered: Subquery) -> Subquery:
    """One row per offered device with an outcome event: device_id, rolled_back, committed, failed."""
    kinds = outcome_kinds(rollout.target_kind)

    def flag(outcome: str) -> Any:
        return func.max(case((col(DeviceEvent.kind).in_(kinds[outcome]), 1), else_=0)).label(outcome)

    return (
        select(offered.c.device_id, flag("rolled_back"), flag("committed"), flag("failed"))
        .select_from(offered)
        .join(DeviceEvent, _event_matches(rollout, offered))
        .group_by(offered.c.device_id)
        .subquery("outcomes")
    )


def _window_on_target(rollout: Rollout, offered: Subquery) -> ColumnElement[bool]:
    clause = and_(
        col(TelemetryWindow.device_id) == offered.c.device_id,
        col(TelemetryWindow.window_end) >= offered.c.offered_at,
    )
    if rollout.target_kind == "model":
        clause = and_(
            clause,
            col(TelemetryWindow.model_name) == rollout.target_name,
            col(TelemetryWindow.model_version) == rollout.target_version,
        )
    return clause


def _weighted_p95(requests: Any) -> Any:
    # A p95 over many windows cannot be rebuilt from their p95s; weighting each by its requests
    # keeps a busy window from being outvoted by idle ones, which is what a latency gate needs.
    # Within one device only: across devices, cloud.rollouts.robust combines them.
    return func.sum(col(TelemetryWindow.p95_ms) * col(TelemetryWindow.requests)) / func.nullif(requests, 0)


def stage_figures(
    session: Session,
    rollout: Rollout,
    stage: int | None,
    *,
    now: datetime,
    offline_grace: timedelta = timedelta(0),
) -> StageFigures:
    """The figures of ``stage`` (None: every stage) of ``rollout`` as of ``now``.

    A device counts as offline once it has been offline for longer than ``offline_grace``.
    """
    offered = _offered(rollout, stage)
    devices = int(session.exec(select(func.count()).select_from(offered)).one())
    first_offer = session.exec(select(func.min(offered.c.offered_at))).one()
    if devices == 0 or first_offer is None:
        return StageFigures(
            devices=0, updated=0, failed=0, rolled_back=0, offline=0, reporting=0, requests=0, errors=0,
            p95_ms=None, baseline_p95_ms=None,
        )  # fmt: skip

    outcomes = _per_device_outcomes(rollout, offered)
    rb, ok, bad = outcomes.c.rolled_back, outcomes.c.committed, outcomes.c.failed
    rolled_back, updated, failed = session.exec(
        select(
            func.coalesce(func.sum(rb), 0),
            func.coalesce(func.sum(case((and_(rb == 0, ok == 1), 1), else_=0)), 0),
            func.coalesce(func.sum(case((and_(rb == 0, ok == 0, bad == 1), 1), else_=0)), 0),
        ).select_from(outcomes)
    ).one()

    offline = session.exec(
        select(func.count())
        .select_from(offered)
        .join(Device, col(Device.id) == offered.c.device_id)
        .where(Device.state == DeviceState.OFFLINE, col(Device.last_seen) <= now - offline_grace)
    ).one()

    target = _per_device(session, offered, _window_on_target(rollout, offered))
    since = first_offer - BASELINE_LOOKBACK
    baseline = _per_device(session, offered, _baseline_clause(rollout, offered, since, now))

    on_target = exists().where(_window_on_target(rollout, offered))
    with_event = exists().where(_event_matches(rollout, offered))
    reporting = session.exec(
        select(func.count()).select_from(offered).where(or_(on_target, with_event))
    ).one()
    return StageFigures(
        devices=devices,
        updated=int(updated),
        failed=int(failed),
        rolled_back=int(rolled_back),
        offline=int(offline),
        reporting=int(reporting),
        requests=sum(d.requests for d in target),
        errors=sum(d.errors for d in target),
        error_rate=robust_error_rate(target),
        p95_ms=robust_p95(target),
        baseline_p95_ms=robust_p95(baseline),
        rate_devices=sum(1 for d in target if d.requests > 0),
        extra=stage_extra(session, rollout, stage, offered, first_offer=first_offer, now=now),
    )


def _baseline_clause(rollout: Rollout, offered: Subquery, since: datetime, now: datetime) -> Any:
    on_device = col(TelemetryWindow.device_id) == offered.c.device_id
    if rollout.target_kind == "model":
        return and_(
            on_device,
            col(TelemetryWindow.model_name) == rollout.target_name,
            col(TelemetryWindow.model_version) != rollout.target_version,
            col(TelemetryWindow.window_end) >= since,
            col(TelemetryWindow.window_end) <= now,
        )
    return and_(
        on_device,
        col(TelemetryWindow.window_end) >= since,
        col(TelemetryWindow.window_end) < offered.c.offered_at,
    )


def _per_device(session: Session, offered: Subquery, clause: ColumnElement[bool]) -> list[DeviceFigures]:
    """Requests, errors and request-weighted p95 of each offered device's windows that match ``clause``."""
    requests_sum = func.coalesce(func.sum(TelemetryWindow.requests), 0)
    rows = session.exec(
        select(
            offered.c.device_id,
            requests_sum,
            func.coalesce(func.sum(TelemetryWindow.errors), 0),
            _weighted_p95(requests_sum),
        )
        .select_from(offered)
        .join(TelemetryWindow, clause)
        .group_by(offered.c.device_id)
    ).all()
    return [DeviceFigures(str(d), int(r), int(e), float(p) if p is not None else None) for d, r, e, p in rows]


def device_outcomes(
    session: Session, rollout: Rollout, device_ids: Sequence[str] | None = None
) -> dict[str, str]:
    """Each offered device's outcome from its events ("committed", "rolled_back", "failed")."""
    offered = _offered(rollout, None)
    outcomes = _per_device_outcomes(rollout, offered)
    query = select(outcomes.c.device_id, outcomes.c.rolled_back, outcomes.c.committed, outcomes.c.failed)
    if device_ids is not None:
        query = query.where(in_list(outcomes.c.device_id, device_ids))
    found: dict[str, str] = {}
    for device_id, rb, ok, bad in session.exec(query).all():
        found[device_id] = "rolled_back" if rb else "committed" if ok else "failed" if bad else ""
    return {d: o for d, o in found.items() if o}


def figures_json(stage: int, figures: StageFigures, verdict: Verdict) -> dict[str, Any]:
    """A stage's figures and the gates' verdict as stored with a transition (JSON-ready)."""
    measured = {k: v for k, v in asdict(figures).items() if k != "extra"}
    measured.update(dict(figures.extra))
    return {
        "stage": stage,
        "figures": measured,
        "verdict": verdict.outcome,
        "detail": verdict.detail,
        "gates": [asdict(result) for result in verdict.results],
    }
