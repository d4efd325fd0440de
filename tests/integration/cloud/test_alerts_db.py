"""Alert evaluation against cohort_metric rows, on SQLite and on the real PostgreSQL (see conftest.db_url)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

import pytest
from sqlmodel import col, select

from cloud.alerts import rules as rule_service
from cloud.alerts.machine import AlertState
from cloud.alerts.service import AlertChange, evaluate
from cloud.alerts.spec import parse_rules
from cloud.alerts.tables import Alert, AlertNotification, AlertRule, AlertTransition
from cloud.db import SessionFactory
from cloud.drift.tables import CohortMetric
from cloud.models import Cohort
from tests.unit.cloud.helpers import T0

pytestmark = pytest.mark.integration

FLEET = "unit"
SPAN = 300
S = AlertState


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cohort(sessions: SessionFactory, name: str) -> int:
    with sessions() as s:
        row = Cohort(fleet=FLEET, name=name, selector=f"site={name}")
        s.add(row)
        s.commit()
        assert row.id is not None
        return row.id


def metric(
    sessions: SessionFactory,
    name: str,
    values: Iterable[float | None],
    *,
    cohort_id: int = 0,
    model: tuple[str, str] = ("digits", "1"),
    feature: str = "",
    reference: str = "",
) -> None:
    """One row per 5-minute bucket from T0 (None: no row for that bucket)."""
    with sessions() as s:
        for i, value in enumerate(values):
            if value is None:
                continue
            s.add(
                CohortMetric(
                    fleet=FLEET,
                    cohort_id=cohort_id,
                    model_name=model[0],
                    model_version=model[1],
                    bucket_start=at(i * SPAN),
                    bucket_s=SPAN,
                    metric=name,
                    feature=feature,
                    reference=reference,
                    value=value,
                )
            )
        s.commit()


def apply(sessions: SessionFactory, text: str) -> None:
    with sessions() as s:
        rule_service.apply_rules(s, fleet=FLEET, specs=parse_rules(text))


def moves(changes: list[AlertChange]) -> list[tuple[str, str | None, str, str]]:
    return [(c.rule, c.cohort, c.previous.value, c.state.value) for c in changes]


def transitions(sessions: SessionFactory) -> list[tuple[int, str, str, str]]:
    with sessions() as s:
        rows = s.exec(select(AlertTransition).order_by(col(AlertTransition.id))).all()
        return [(t.alert_id, t.from_state, t.to_state, t.event) for t in rows]


def notifications(sessions: SessionFactory) -> list[AlertNotification]:
    with sessions() as s:
        return list(s.exec(select(AlertNotification).order_by(col(AlertNotification.id))).all())


DRIFT = "- {name: drift, metric: drift_score, comparison: '>', threshold: 1, for: 10m, scope: cohorts}"


def test_a_drift_rule_pends_fires_and_resolves_with_history_and_notifications(
    sessions: SessionFactory,
) -> None:
    lab, office = cohort(sessions, "lab"), cohort(sessions, "office")
    apply(sessions, DRIFT)
    metric(sessions, "drift_score", [1.5, 1.8, 2.4, 0.3], cohort_id=lab, reference="baseline")
    metric(sessions, "drift_score", [0.2, 0.3, 0.2, 0.1], cohort_id=office, reference="baseline")
    metric(sessions, "drift_score", [5.0, 5.0, 5.0, 5.0], cohort_id=0, reference="baseline")  # not in scope

    assert moves(evaluate(sessions, fleet=FLEET, now=at(10))) == [("drift", "lab", "inactive", "pending")]
    assert evaluate(sessions, fleet=FLEET, now=at(400)) == []
    fired = evaluate(sessions, fleet=FLEET, now=at(610))
    assert moves(fired) == [("drift", "lab", "pending", "firing")]
    change = fired[0]
    assert (change.metric, change.cohort_id, change.model_name, change.model_version, change.value) == (
        "drift_score",
        lab,
        "digits",
        "1",
        2.4,
    )
    assert moves(evaluate(sessions, fleet=FLEET, now=at(910))) == [("drift", "lab", "firing", "resolved")]

    with sessions() as s:
        (alert,) = s.exec(select(Alert)).all()
    assert (alert.state, alert.rule_name, alert.cohort_id, alert.value, alert.open_key) == (
        "resolved",
        "drift",
        lab,
        0.3,
        None,
    )
    assert (alert.since, alert.fired_at, alert.resolved_at, alert.last_evaluated) == (
        T0,
        at(610),
        at(910),
        at(910),
    )
    assert alert.reference == "baseline"
    assert [(f, t, e) for _, f, t, e in transitions(sessions)] == [
        ("inactive", "pending", "breach"),
        ("pending", "firing", "held"),
        ("firing", "resolved", "clear"),
    ]
    sent = notifications(sessions)
    assert [(n.state, n.alert_id) for n in sent] == [("firing", alert.id), ("resolved", alert.id)]
    payload = sent[0].payload
    assert payload["state"] == "firing" and payload["fleet"] == FLEET
    assert payload["alert"]["cohort"] == "lab" and payload["alert"]["value"] == 2.4
    assert payload["rule"] == {
        "name": "drift", "metric": "drift_score", "feature": None, "reference": None, "comparison": ">",
        "threshold": 1.0, "for": "10m", "scope": "cohorts", "severity": "warning", "description": "",
    }  # fmt: skip


def test_evaluating_twice_at_one_instant_changes_nothing_the_second_time(sessions: SessionFactory) -> None:
    apply(sessions, "- {name: errors, metric: error_rate, comparison: '>', threshold: 0.05}")
    metric(sessions, "error_rate", [0.2])
    assert moves(evaluate(sessions, fleet=FLEET, now=at(60))) == [("errors", None, "inactive", "firing")]
    before = (transitions(sessions), len(notifications(sessions)))
    assert evaluate(sessions, fleet=FLEET, now=at(60)) == []
    assert (transitions(sessions), len(notifications(sessions))) == before


def test_a_pending_alert_that_clears_ends_inactive_and_tells_nobody(sessions: SessionFactory) -> None:
    apply(sessions, "- {name: acc, metric: accuracy, comparison: '<', threshold: 0.9, for: 30m}")
    metric(sessions, "accuracy", [0.7, 0.95])
    assert moves(evaluate(sessions, fleet=FLEET, now=at(60))) == [("acc", None, "inactive", "pending")]
    assert moves(evaluate(sessions, fleet=FLEET, now=at(360))) == [("acc", None, "pending", "inactive")]
    assert notifications(sessions) == []
    # A new breach opens a new alert; the ended one keeps its history.
    metric(sessions, "accuracy", [None, None, 0.5])
    assert moves(evaluate(sessions, fleet=FLEET, now=at(660))) == [("acc", None, "inactive", "pending")]
    with sessions() as s:
        assert [a.state for a in s.exec(select(Alert).order_by(col(Alert.id)))] == ["inactive", "pending"]


def test_scopes_and_model_versions_each_get_their_own_alert(sessions: SessionFactory) -> None:
    lab, office = cohort(sessions, "lab"), cohort(sessions, "office")
    apply(
        sessions,
        """
- {name: fleet-errors, metric: error_rate, comparison: '>', threshold: 0.1, scope: fleet}
- {name: lab-errors, metric: error_rate, comparison: '>', threshold: 0.1, scope: 'cohort:lab'}
- {name: gone, metric: error_rate, comparison: '>', threshold: 0.1, scope: 'cohort:office'}
""",
    )
    for cohort_id in (0, lab):
        metric(sessions, "error_rate", [0.5], cohort_id=cohort_id, model=("digits", "1"))
        metric(sessions, "error_rate", [0.5], cohort_id=cohort_id, model=("digits", "2"))
    metric(sessions, "error_rate", [0.01], cohort_id=office)
    changes = evaluate(sessions, fleet=FLEET, now=at(60))
    assert sorted((c.rule, c.cohort_id, c.model_version, c.state.value) for c in changes) == [
        ("fleet-errors", 0, "1", "firing"),
        ("fleet-errors", 0, "2", "firing"),
        ("lab-errors", lab, "1", "firing"),
        ("lab-errors", lab, "2", "firing"),
    ]


def test_a_rule_without_a_feature_judges_the_worst_feature_and_a_filter_judges_one(
    sessions: SessionFactory,
) -> None:
    apply(
        sessions,
        """
- {name: any-feature, metric: drift_ks, comparison: '>', threshold: 0.3}
- {name: pixel-3, metric: drift_ks, feature: pixel_3, comparison: '>', threshold: 0.3}
""",
    )
    metric(sessions, "drift_ks", [0.1], feature="pixel_3", reference="baseline")
    metric(sessions, "drift_ks", [0.6], feature="pixel_9", reference="baseline")
    assert moves(evaluate(sessions, fleet=FLEET, now=at(60))) == [("any-feature", None, "inactive", "firing")]
    with sessions() as s:
        alert = s.exec(select(Alert)).one()
    assert (alert.feature, alert.reference, alert.value) == ("pixel_9", "baseline", 0.6)


def test_stale_data_resolves_and_a_disabled_or_deleted_rule_ends_its_alerts(sessions: SessionFactory) -> None:
    apply(
        sessions,
        """
- {name: a, metric: p95_ms, comparison: '>', threshold: 100}
- {name: b, metric: p95_ms, comparison: '>', threshold: 200}
- {name: c, metric: p95_ms, comparison: '>', threshold: 300}
""",
    )
    metric(sessions, "p95_ms", [500, 500])
    assert len(evaluate(sessions, fleet=FLEET, now=at(310))) == 3
    apply(sessions, "- {name: b, metric: p95_ms, comparison: '>', threshold: 200, enabled: false}")
    assert moves(evaluate(sessions, fleet=FLEET, now=at(320))) == [("b", None, "firing", "resolved")]
    with sessions() as s:
        deleted = rule_service.delete_rule(s, FLEET, "c", clock=lambda: at(330))
    assert moves(deleted) == [("c", None, "firing", "resolved")]
    # The devices stop reporting: the last bucket ended at 600; two buckets later it is stale.
    assert evaluate(sessions, fleet=FLEET, now=at(1200)) == []
    assert moves(evaluate(sessions, fleet=FLEET, now=at(1201))) == [("a", None, "firing", "resolved")]
    with sessions() as s:
        alerts = {a.rule_name: a for a in s.exec(select(Alert))}
        assert [r.name for r in s.exec(select(AlertRule))] == ["a", "b"]
    assert alerts["c"].rule_id is None and alerts["c"].state == "resolved"
    details = {t.to_state: t.detail for t in _rows(sessions, AlertTransition) if t.alert_id == alerts["a"].id}
    assert details["resolved"] == "no recent data for this series"
    assert [n.state for n in notifications(sessions)].count("resolved") == 3


def _rows(sessions: SessionFactory, table: type[AlertTransition]) -> list[AlertTransition]:
    with sessions() as s:
        return list(s.exec(select(table)))


def test_two_hubs_evaluating_at_once_record_each_move_once(sessions: SessionFactory) -> None:
    lab = cohort(sessions, "lab")
    apply(sessions, DRIFT)
    for version in ("1", "2", "3"):
        metric(sessions, "drift_score", [2.0, 2.0, 2.0], cohort_id=lab, model=("digits", version))
    replicas = 4
    start = threading.Barrier(replicas)
    results: list[list[AlertChange]] = []
    errors: list[BaseException] = []

    def replica(now: datetime) -> None:
        try:
            start.wait(30)
            results.append(evaluate(sessions, fleet=FLEET, now=now))
        except BaseException as e:
            errors.append(e)

    for now in (at(10), at(620)):
        threads = [threading.Thread(target=replica, args=(now,)) for _ in range(replicas)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
    reported = sorted((c.model_version, c.state.value) for r in results for c in r)
    assert reported == [
        ("1", "firing"),
        ("1", "pending"),
        ("2", "firing"),
        ("2", "pending"),
        ("3", "firing"),
        ("3", "pending"),
    ]
    with sessions() as s:
        assert len(s.exec(select(Alert)).all()) == 3
    assert len(transitions(sessions)) == 6
    assert len(notifications(sessions)) == 3


def test_now_must_be_aware(sessions: SessionFactory) -> None:
    with pytest.raises(ValueError, match="expected a timezone-aware now"):
        evaluate(sessions, fleet=FLEET, now=datetime(2030, 1, 1))
