"""Prometheus: what the hub's ``/metrics`` exposes, and a rules file with the stored rules' conditions.

``/metrics`` is read from the database at each scrape (:class:`HubCollector`), so every hub
replica answers the same:

- ``edgefleet_cohort_metric{fleet,cohort,model,version,metric,feature,reference}``: the latest
  bucket's value of each cohort metric series (series whose latest bucket is stale are left out);
  ``cohort`` is the cohort's name, empty for the fleet-wide series;
- ``edgefleet_alert_firing{fleet,rule,severity,metric,cohort,model,version}``: 1 per firing alert;
- ``edgefleet_alert_deliveries{fleet,state}``: webhook deliveries pending and failed;
- ``edgefleet_broker_dropped_messages``: messages the MQTT broker dropped, where the hub knows it.

:func:`render_rules` writes the stored rules as Prometheus alerting rules over
``edgefleet_cohort_metric``, for a Prometheus (and Alertmanager) that an operator already runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import yaml
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, func
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from cloud.alerts.condition import STALE_BUCKETS
from cloud.alerts.machine import AlertState, DeliveryState
from cloud.alerts.service import cohort_names
from cloud.alerts.spec import RuleSpec, ScopeKind
from cloud.alerts.tables import Alert, AlertDelivery
from cloud.db import SessionFactory, read_transaction
from cloud.drift.tables import CohortMetric
from cloud.telemetry.tables import FLEET_SCOPE

__all__ = [
    "COHORT_METRIC",
    "DROPPED_MESSAGES",
    "FIRING",
    "HubCollector",
    "alert_name",
    "cohort_label",
    "prometheus_rules",
    "render_rules",
    "rule_expr",
]

COHORT_METRIC = "edgefleet_cohort_metric"
FIRING = "edgefleet_alert_firing"
DELIVERIES = "edgefleet_alert_deliveries"
DROPPED_MESSAGES = "edgefleet_broker_dropped_messages"
_SERIES_LABELS = ["fleet", "cohort", "model", "version", "metric", "feature", "reference"]
_ALERT_LABELS = ["fleet", "rule", "severity", "metric", "cohort", "model", "version"]


def cohort_label(cohort_id: int, names: Mapping[int, str]) -> str:
    """The ``cohort`` label: the cohort's name; "" for the fleet-wide series; ``#<id>`` once deleted."""
    if cohort_id == FLEET_SCOPE:
        return ""
    return names.get(cohort_id, f"#{cohort_id}")


class HubCollector(Collector):
    """Reads the fleet's latest cohort metrics and firing alerts at each scrape."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        fleet: str,
        now: datetime,
        bucket_s: int,
        broker_dropped: Callable[[], int | None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._fleet = fleet
        self._now = now
        self._bucket_s = bucket_s
        self._broker_dropped = broker_dropped

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = GaugeMetricFamily(
            COHORT_METRIC,
            "Latest bucket's value of each cohort metric (cohort empty: the whole fleet).",
            labels=_SERIES_LABELS,
        )
        firing = GaugeMetricFamily(FIRING, "1 for each firing alert.", labels=_ALERT_LABELS)
        deliveries = GaugeMetricFamily(
            DELIVERIES, "Alert webhook deliveries by state (pending, failed).", labels=["fleet", "state"]
        )
        with read_transaction(self._sessions) as session:
            names = cohort_names(session, self._fleet)
            for row in session.exec(self._latest_query()):
                labels = [
                    self._fleet,
                    cohort_label(row.cohort_id, names),
                    row.model_name,
                    row.model_version,
                    row.metric,
                    row.feature,
                    row.reference,
                ]
                values.add_metric(labels, row.value)
            alerts = session.exec(
                select(Alert).where(Alert.fleet == self._fleet, Alert.state == AlertState.FIRING.value)
            )
            for alert in alerts:
                cohort = cohort_label(alert.cohort_id, names)
                labels = [self._fleet, alert.rule_name, alert.severity, alert.metric, cohort]
                firing.add_metric([*labels, alert.model_name, alert.model_version], 1.0)
            counts = dict(
                session.exec(
                    select(AlertDelivery.state, func.count())
                    .where(AlertDelivery.fleet == self._fleet)
                    .where(col(AlertDelivery.state).in_([DeliveryState.PENDING, DeliveryState.FAILED]))
                    .group_by(col(AlertDelivery.state))
                ).all()
            )
        for state in (DeliveryState.PENDING, DeliveryState.FAILED):
            deliveries.add_metric([self._fleet, state.value], float(counts.get(state.value, 0)))
        yield values
        yield firing
        yield deliveries
        dropped = self._broker_dropped() if self._broker_dropped is not None else None
        if dropped is not None:
            yield GaugeMetricFamily(
                DROPPED_MESSAGES, "Messages the MQTT broker dropped (its $SYS counter).", value=float(dropped)
            )

    def _latest_query(self) -> Any:
        m = CohortMetric
        # Fresh series only: a latest bucket that ended more than STALE_BUCKETS buckets ago is no data.
        since = self._now - timedelta(seconds=(STALE_BUCKETS + 1) * self._bucket_s)
        names = ("cohort_id", "model_name", "model_version", "metric", "feature", "reference")
        keys = [getattr(m, name) for name in names]
        latest = (
            sa_select(*keys, func.max(m.bucket_start).label("latest"))
            .where(col(m.fleet) == self._fleet)
            .where(col(m.bucket_start) >= since, col(m.bucket_start) <= self._now)
            .group_by(*keys)
            .subquery()
        )
        on = and_(*(key == latest.c[name] for key, name in zip(keys, names, strict=True)))
        on = and_(on, col(m.bucket_start) == latest.c.latest)
        return select(m).join(latest, on).where(m.fleet == self._fleet)


# --- a Prometheus rules file from the stored rules ------------------------------------------------


def alert_name(rule: str) -> str:
    """A Prometheus alert name (a metric name) for a rule: ``drift-high`` -> ``edgefleet_drift_high``."""
    return "edgefleet_" + re.sub(r"[^A-Za-z0-9_]", "_", rule)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def rule_expr(rule: RuleSpec, *, fleet: str) -> str:
    """The PromQL of the rule's condition over ``edgefleet_cohort_metric``, worst value per series."""
    matchers = [f"fleet={_quote(fleet)}", f"metric={_quote(rule.metric)}"]
    kind, cohort = rule.scope_parts
    if kind is ScopeKind.FLEET:
        matchers.append('cohort=""')
    elif kind is ScopeKind.COHORTS:
        matchers.append('cohort!=""')
    else:
        assert cohort is not None
        matchers.append(f"cohort={_quote(cohort)}")
    if rule.feature is not None:
        matchers.append(f"feature={_quote(rule.feature)}")
    if rule.reference is not None:
        matchers.append(f"reference={_quote(rule.reference)}")
    worst = "max" if rule.comparison.value == ">" else "min"
    selector = f"{COHORT_METRIC}{{{', '.join(matchers)}}}"
    condition = f"{rule.comparison.value} {_number(rule.threshold)}"
    return f"{worst} by (fleet, cohort, model, version) ({selector}) {condition}"


def _rule(rule: RuleSpec, fleet: str) -> dict[str, Any]:
    where = "{{ if $labels.cohort }}cohort {{ $labels.cohort }}{{ else }}the fleet{{ end }}"
    condition = f"{rule.metric} {rule.comparison.value} {_number(rule.threshold)}"
    if rule.for_s:
        condition += f" for {rule.for_text}"
    summary = f"{condition} on {where}, model {{{{ $labels.model }}}}:{{{{ $labels.version }}}}"
    entry: dict[str, Any] = {"alert": alert_name(rule.name), "expr": rule_expr(rule, fleet=fleet)}
    if rule.for_s:
        entry["for"] = rule.for_text
    entry["labels"] = {"severity": rule.severity, "rule": rule.name}
    entry["annotations"] = {
        "summary": summary,
        "description": (rule.description or summary) + " (value: {{ $value }})",
    }
    return entry


def prometheus_rules(rules: Sequence[RuleSpec], *, fleet: str) -> dict[str, Any]:
    """The enabled rules as one Prometheus rule group (disabled ones are left out)."""
    return {
        "groups": [
            {
                "name": f"edgefleet-{fleet}",
                "rules": [_rule(rule, fleet) for rule in rules if rule.enabled],
            }
        ]
    }


def render_rules(rules: Sequence[RuleSpec], *, fleet: str) -> str:
    """A Prometheus rules file (YAML) for ``rule_files:``; check it with ``promtool check rules``."""
    head = (
        f"# Prometheus alerting rules for edgefleet fleet {fleet!r}, made by `fleet alerts prometheus`.\n"
        "# They judge edgefleet_cohort_metric as scraped from the hub's /metrics.\n"
    )
    data = prometheus_rules(rules, fleet=fleet)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
    return head + body
