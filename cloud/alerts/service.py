"""Alert evaluation: every enabled rule against the latest cohort metric buckets, once per observe cycle.

For each rule, in a transaction of its own: read the rule's series from ``cohort_metric``, judge
each one (``cloud.alerts.condition``), post the event to its open alert's state machine, record
each move as an ``AlertTransition``, and queue a notification for each move into FIRING or
RESOLVED. The notification is written in the same transaction as the move, so none is lost.

Safe on two hub replicas: the rule's open alerts are read under a row lock (``FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers anyway), so a second replica judges
after the first committed and finds nothing left to move. Two replicas that both open a new
alert for the same series collide on the unique ``open_key``: the loser rolls back and judges
the rule again. Idempotent: a second run at the same instant changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.alerts.condition import STALE_BUCKETS, Bucket, Judgement, judge, worst
from cloud.alerts.machine import ACTIVE, NOTIFY, TRANSITIONS, AlertEvent, AlertState, next_state
from cloud.alerts.spec import Comparison, ScopeKind, format_duration, parse_scope
from cloud.alerts.tables import Alert, AlertNotification, AlertRule, AlertTransition
from cloud.db import SessionFactory, transaction
from cloud.drift.tables import CohortMetric
from cloud.models import Cohort
from cloud.telemetry.tables import FLEET_SCOPE

__all__ = [
    "AlertChange",
    "cohort_names",
    "end_open_alerts",
    "evaluate",
    "notification_payload",
    "open_alerts",
]

log = logging.getLogger(__name__)

SeriesKey = tuple[int, str, str]  # cohort_id, model_name, model_version


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One committed move of one alert: what the continuous-training triggers and the log read."""

    alert_id: int
    rule: str
    metric: str
    severity: str
    cohort_id: int
    cohort: str | None  # the cohort's name; None for the fleet-wide series (or a deleted cohort)
    model_name: str
    model_version: str
    previous: AlertState
    state: AlertState
    value: float | None
    comparison: str
    threshold: float
    at: datetime
    detail: str = ""


def evaluate(
    sessions: SessionFactory, *, fleet: str, now: datetime, stale_after_s: float | None = None
) -> list[AlertChange]:
    """Judge every rule of ``fleet`` at ``now``; the moves committed, in rule order.

    ``stale_after_s``: a series whose latest bucket ended longer ago than this has no data
    (default: two of its buckets).
    """
    if now.tzinfo is None:
        raise ValueError(f"expected a timezone-aware now, got naive {now.isoformat()}")
    with sessions() as session:
        rule_ids = list(
            session.exec(select(AlertRule.id).where(AlertRule.fleet == fleet).order_by(AlertRule.name))
        )
        names = cohort_names(session, fleet)
        session.rollback()
    changes: list[AlertChange] = []
    for rule_id in rule_ids:
        assert rule_id is not None
        changes.extend(_evaluate_rule(sessions, rule_id, names, now, stale_after_s))
    for change in changes:
        log.info(
            "alert %s (%s) on %s %s:%s: %s -> %s (%s)",
            change.alert_id, change.rule, _cohort_text(change.cohort_id, change.cohort), change.model_name,
            change.model_version, change.previous, change.state, change.detail,
        )  # fmt: skip
    return changes


def cohort_names(session: Session, fleet: str) -> dict[int, str]:
    """Cohort id -> name for ``fleet``."""
    rows = session.exec(select(Cohort.id, Cohort.name).where(Cohort.fleet == fleet)).all()
    return {int(cid): name for cid, name in rows if cid is not None}


def _cohort_text(cohort_id: int, name: str | None) -> str:
    return "the fleet" if cohort_id == FLEET_SCOPE else f"cohort {name or f'#{cohort_id}'}"


def _evaluate_rule(
    sessions: SessionFactory, rule_id: int, names: Mapping[int, str], now: datetime, stale: float | None
) -> list[AlertChange]:
    for attempt in (1, 2):
        try:
            with transaction(sessions) as session:
                rule = session.get(AlertRule, rule_id)
                if rule is None:  # deleted meanwhile; deleting ended its alerts
                    return []
                return _judge_rule(session, rule, names, now, stale)
        except IntegrityError:
            if attempt == 2:
                raise
            # Another replica opened the same alert first: judge again against what it stored.
            log.info("alert rule %d: another hub opened the same alert; judging it again", rule_id)
    return []


def _open_key(rule_id: int, key: SeriesKey) -> str:
    text = "\x00".join([str(rule_id), str(key[0]), key[1], key[2]])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def open_alerts(session: Session, rule: AlertRule) -> dict[SeriesKey, Alert]:
    """The rule's pending and firing alerts by series, locked until the transaction ends."""
    query = (
        select(Alert)
        .where(Alert.rule_id == rule.id, col(Alert.state).in_([s.value for s in ACTIVE]))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {(a.cohort_id, a.model_name, a.model_version): a for a in session.exec(query)}


def _judge_rule(
    session: Session, rule: AlertRule, names: Mapping[int, str], now: datetime, stale: float | None
) -> list[AlertChange]:
    opened = open_alerts(session, rule)
    if not rule.enabled:
        return end_open_alerts(
            session, rule, opened.values(), now, detail="the rule is disabled", names=names
        )
    comparison = Comparison(rule.comparison)
    series = _series(session, rule, _scope_cohorts(rule, names), now, stale)
    changes = []
    for key in sorted(set(series) | set(opened)):
        judged = judge(
            series.get(key, []),
            comparison=comparison,
            threshold=rule.threshold,
            for_s=rule.for_s,
            now=now,
            stale_after_s=stale,
        )
        change = _post(session, rule, key, opened.get(key), judged, now=now, names=names)
        if change is not None:
            changes.append(change)
    return changes


def end_open_alerts(
    session: Session,
    rule: AlertRule,
    alerts: Iterable[Alert],
    now: datetime,
    *,
    detail: str,
    names: Mapping[int, str],
) -> list[AlertChange]:
    """Post DISABLE to ``alerts`` (open alerts of ``rule``): firing ones resolve, pending ones end."""
    changes = []
    for alert in list(alerts):
        key = (alert.cohort_id, alert.model_name, alert.model_version)
        change = _post(
            session, rule, key, alert, Judgement(AlertEvent.DISABLE), now=now, names=names, detail=detail
        )
        if change is not None:
            changes.append(change)
    return changes


def _scope_cohorts(rule: AlertRule, names: Mapping[int, str]) -> list[int]:
    kind, name = parse_scope(rule.scope)
    if kind is ScopeKind.FLEET:
        return [FLEET_SCOPE]
    if kind is ScopeKind.COHORTS:
        return sorted(names)
    return [cid for cid, cname in names.items() if cname == name]


def _series(
    session: Session, rule: AlertRule, cohort_ids: Sequence[int], now: datetime, stale: float | None
) -> dict[SeriesKey, list[Bucket]]:
    """The worst value per bucket of each series in the rule's scope, over the buckets it needs.

    Cohorts whose latest bucket is stale are left out: their open alerts judge as NO_DATA.
    """
    m = CohortMetric
    fresh: list[int] = []
    from_: datetime | None = None
    for cohort_id in cohort_ids:
        # Backed by ix_cohort_metric_series: one index probe per cohort, whatever the retention.
        latest = session.exec(
            select(m.bucket_start, m.bucket_s)
            .where(
                m.fleet == rule.fleet,
                m.metric == rule.metric,
                m.cohort_id == cohort_id,
                m.bucket_start <= now,
            )
            .order_by(col(m.bucket_start).desc())
            .limit(1)
        ).first()
        if latest is None:
            continue
        start, span = latest
        if start + timedelta(seconds=span + (stale if stale is not None else STALE_BUCKETS * span)) < now:
            continue
        fresh.append(cohort_id)
        # The buckets that can make up a run as long as the rule's duration, and one before them.
        begin = start - timedelta(seconds=rule.for_s + span)
        from_ = begin if from_ is None else min(from_, begin)
    if from_ is None:
        return {}
    query = select(m).where(
        m.fleet == rule.fleet,
        m.metric == rule.metric,
        col(m.cohort_id).in_(fresh),
        m.bucket_start >= from_,
        m.bucket_start <= now,
    )
    if rule.feature is not None:
        query = query.where(m.feature == rule.feature)
    if rule.reference is not None:
        query = query.where(m.reference == rule.reference)
    grouped: dict[SeriesKey, list[Bucket]] = defaultdict(list)
    for row in session.exec(query):
        grouped[(row.cohort_id, row.model_name, row.model_version)].append(
            Bucket(row.bucket_start, row.bucket_s, row.value, row.feature, row.reference)
        )
    comparison = Comparison(rule.comparison)
    return {key: worst(rows, comparison) for key, rows in grouped.items()}


def _post(
    session: Session,
    rule: AlertRule,
    key: SeriesKey,
    alert: Alert | None,
    judged: Judgement,
    *,
    now: datetime,
    names: Mapping[int, str],
    detail: str | None = None,
) -> AlertChange | None:
    """Post the judged event to the series' alert; the change when its state moved, else None."""
    assert rule.id is not None
    current = AlertState(alert.state) if alert is not None else AlertState.INACTIVE
    new = next_state(TRANSITIONS, current, judged.event)
    if alert is None:
        if new is AlertState.INACTIVE:
            return None  # nothing breaches and nothing was open: no row
        alert = Alert(
            fleet=rule.fleet,
            rule_id=rule.id,
            rule_name=rule.name,
            metric=rule.metric,
            cohort_id=key[0],
            model_name=key[1],
            model_version=key[2],
            state=new,
            since=judged.since or now,
            last_evaluated=now,
            open_key=_open_key(rule.id, key),
            created_at=now,
        )
        session.add(alert)
        session.flush()  # a second replica that opened it first fails here (unique open_key)
    alert.state = new
    alert.severity = rule.severity
    alert.last_evaluated = now
    if judged.latest is not None:
        alert.value = judged.latest.value
        alert.feature, alert.reference = judged.latest.feature, judged.latest.reference
    if new is AlertState.PENDING and judged.since is not None:
        alert.since = judged.since  # a gap restarted the run: the duration counts from the new start
    if new is AlertState.FIRING and current is not AlertState.FIRING:
        alert.fired_at = now
    if new is AlertState.RESOLVED:
        alert.resolved_at = now
    if new not in ACTIVE:
        alert.open_key = None  # the episode ended: the next breach opens a new row
    session.add(alert)
    if new is current:
        return None
    session.flush()
    assert alert.id is not None
    text = detail or _describe(rule, judged)
    session.add(
        AlertTransition(
            alert_id=alert.id,
            from_state=current,
            to_state=new,
            event=judged.event,
            at=now,
            value=alert.value,
            detail=text,
        )
    )
    cohort = names.get(alert.cohort_id) if alert.cohort_id != FLEET_SCOPE else None
    if new in NOTIFY:
        session.add(
            AlertNotification(
                fleet=rule.fleet,
                alert_id=alert.id,
                state=new,
                payload=notification_payload(rule, alert, cohort, now, text),
                created_at=now,
            )
        )
    return AlertChange(
        alert_id=alert.id,
        rule=rule.name,
        metric=rule.metric,
        severity=rule.severity,
        cohort_id=alert.cohort_id,
        cohort=cohort,
        model_name=alert.model_name,
        model_version=alert.model_version,
        previous=current,
        state=new,
        value=alert.value,
        comparison=rule.comparison,
        threshold=rule.threshold,
        at=now,
        detail=text,
    )


def _describe(rule: AlertRule, judged: Judgement) -> str:
    latest = judged.latest
    if judged.event is AlertEvent.NO_DATA:
        return (
            f"no data since {latest.end.isoformat()}"
            if latest is not None
            else "no recent data for this series"
        )
    assert latest is not None
    where = ", ".join(x for x in (latest.feature, latest.reference) if x)
    value = f"{rule.metric} {latest.value:g}{f' ({where})' if where else ''}"
    if judged.event is AlertEvent.CLEAR:
        return f"{value} is not {rule.comparison} {rule.threshold:g}"
    held = format_duration(int(judged.held_s))
    return (
        f"{value} {rule.comparison} {rule.threshold:g} for {held} (rule: for {format_duration(rule.for_s)})"
    )


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def notification_payload(
    rule: AlertRule, alert: Alert, cohort: str | None, now: datetime, detail: str
) -> dict[str, Any]:
    """The JSON body receivers get (less ``notification_id``, added when it is sent)."""
    return {
        "version": 1,
        "fleet": rule.fleet,
        "state": alert.state,
        "at": now.isoformat(),
        "detail": detail,
        "alert": {
            "id": alert.id,
            "cohort_id": alert.cohort_id,
            "cohort": cohort,
            "model_name": alert.model_name,
            "model_version": alert.model_version,
            "value": alert.value,
            "feature": alert.feature,
            "reference": alert.reference,
            "since": _when(alert.since),
            "fired_at": _when(alert.fired_at),
            "resolved_at": _when(alert.resolved_at),
        },
        "rule": {
            "name": rule.name,
            "metric": rule.metric,
            "feature": rule.feature,
            "reference": rule.reference,
            "comparison": rule.comparison,
            "threshold": rule.threshold,
            "for": format_duration(rule.for_s),
            "scope": rule.scope,
            "severity": rule.severity,
            "description": rule.description,
        },
    }
