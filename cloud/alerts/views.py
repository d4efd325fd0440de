"""Reading alerts: a fleet's alerts newest first, and one alert with its history and deliveries."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from cloud.alerts.machine import AlertState
from cloud.alerts.tables import Alert, AlertDelivery, AlertNotification, AlertTransition
from cloud.errors import NotFoundError
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page

__all__ = ["AlertDetail", "get_alert", "list_alerts"]


@dataclass(frozen=True)
class AlertDetail:
    alert: Alert
    history: list[AlertTransition]
    notifications: list[tuple[AlertNotification, list[AlertDelivery]]]


def list_alerts(
    session: Session,
    fleet: str,
    *,
    state: AlertState | None = None,
    cohort_id: int | None = None,
    rule: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[Alert]:
    """A page of the fleet's alerts, newest first, filtered by state, cohort and rule name."""
    query = select(Alert).where(Alert.fleet == fleet)
    if state is not None:
        query = query.where(Alert.state == state.value)
    if cohort_id is not None:
        query = query.where(Alert.cohort_id == cohort_id)
    if rule is not None:
        query = query.where(Alert.rule_name == rule)
    return keyset_page(
        session,
        query,
        [Alert.id],
        listing="alerts",
        key_of=lambda a: (a.id or 0,),
        limit=limit,
        cursor=cursor,
        descending=True,
    )


def get_alert(session: Session, fleet: str, alert_id: int) -> AlertDetail:
    """One alert, its transitions in order, and each notification with its deliveries."""
    alert = session.get(Alert, alert_id)
    if alert is None or alert.fleet != fleet:
        raise NotFoundError(f"alert {alert_id} is not known in fleet {fleet!r}")
    transitions = select(AlertTransition).where(AlertTransition.alert_id == alert_id)
    history = list(session.exec(transitions.order_by(col(AlertTransition.id))))
    notes = list(
        session.exec(
            select(AlertNotification)
            .where(AlertNotification.alert_id == alert_id)
            .order_by(col(AlertNotification.id))
        )
    )
    deliveries: dict[int, list[AlertDelivery]] = {n.id: [] for n in notes if n.id is not None}
    if deliveries:
        for row in session.exec(
            select(AlertDelivery)
            .where(col(AlertDelivery.notification_id).in_(list(deliveries)))
            .order_by(col(AlertDelivery.id))
        ):
            deliveries[row.notification_id].append(row)
    return AlertDetail(alert, history, [(n, deliveries.get(n.id or 0, [])) for n in notes])
