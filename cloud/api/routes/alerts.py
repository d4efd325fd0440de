"""Alerts, alert rules and webhook receivers (viewers read, operators change), and ``/metrics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cloud.alerts import receivers, rules, views
from cloud.alerts.machine import AlertState
from cloud.alerts.prometheus import HubCollector
from cloud.alerts.service import cohort_names
from cloud.alerts.spec import format_duration, parse_rules, validate_rule
from cloud.alerts.tables import Alert, AlertReceiver, AlertRule
from cloud.alerts.webhooks import webhook_secret
from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.schemas.alerts import (
    AlertDeliveryPublic,
    AlertDetailPublic,
    AlertNotificationPublic,
    AlertPublic,
    AlertReceiverCreate,
    AlertReceiverPublic,
    AlertReceiversPublic,
    AlertReceiverUpdate,
    AlertRulePublic,
    AlertRulesApplied,
    AlertRulesPublic,
    AlertsPublic,
    AlertTransitionPublic,
)
from cloud.api.schemas.base import MAX_ROW_ID
from cloud.db import read_session_factory
from cloud.errors import InvalidInputError, TooLargeError
from cloud.observability.collectors import Forward, RolloutStateCollector
from cloud.services import cohorts
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from cloud.telemetry.tables import FLEET_SCOPE

__all__ = ["MAX_RULES_BYTES", "metrics_router", "router"]

router = APIRouter()
metrics_router = APIRouter(tags=["metrics"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")]
Cursor = Annotated[str | None, Query(description="the next_cursor of the previous page")]
AlertId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
# A rules file is a page or two of text.
MAX_RULES_BYTES = 256 * 1024
# YAML is a superset of JSON, so one parser reads every one of these.
_RULES_TYPES = frozenset(
    {"application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}
)
_RULE_BODY = Body(
    description="An alert rule: name, metric, comparison, threshold, and optionally feature, reference, "
    "for, scope, severity, enabled, description (see docs/alerts.md).",
    examples=[
        {"name": "drift", "metric": "drift_score", "comparison": ">", "threshold": 1, "for": "10m",
         "scope": "cohorts", "severity": "warning"}
    ],
)  # fmt: skip


# --- alerts ----------------------------------------------------------------------------------------


def _alert(row: Alert, names: dict[int, str]) -> AlertPublic:
    assert row.id is not None
    return AlertPublic(
        id=row.id,
        rule=row.rule_name,
        metric=row.metric,
        severity=row.severity,
        state=row.state,
        cohort_id=row.cohort_id,
        cohort=None if row.cohort_id == FLEET_SCOPE else names.get(row.cohort_id),
        model_name=row.model_name,
        model_version=row.model_version,
        value=row.value,
        feature=row.feature,
        reference=row.reference,
        since=row.since,
        last_evaluated=row.last_evaluated,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
    )


@router.get("/alerts", tags=["alerts"])
def list_alerts(
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    state: Annotated[AlertState | None, Query(description="only alerts in this state")] = None,
    cohort: Annotated[str | None, Query(description="only alerts of this cohort (by name)")] = None,
    cohort_id: Annotated[
        int | None, Query(ge=0, le=MAX_ROW_ID, description="only alerts of this cohort id (0: the fleet)")
    ] = None,
    rule: Annotated[str | None, Query(description="only alerts of this rule (by name)")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> AlertsPublic:
    """The fleet's alerts, newest first."""
    fleet = ctx.settings.fleet
    if cohort is not None:
        found = cohorts.get_cohort(session, fleet, cohort).id
        if cohort_id is not None and cohort_id != found:
            raise InvalidInputError(
                f"cohort_id: expected {found} (the id of cohort {cohort!r}) or none, got {cohort_id}"
            )
        cohort_id = found
    page = views.list_alerts(
        session, fleet, state=state, cohort_id=cohort_id, rule=rule, limit=limit, cursor=cursor
    )
    names = cohort_names(session, fleet)
    rows = [_alert(a, names) for a in page.items]
    return AlertsPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)


@router.get("/alerts/{alert_id}", tags=["alerts"], responses={404: {"description": "no such alert"}})
def get_alert(
    alert_id: AlertId, ctx: ContextDep, session: SessionDep, _token: ViewerDep
) -> AlertDetailPublic:
    """One alert with every transition it went through and the delivery of each notification."""
    detail = views.get_alert(session, ctx.settings.fleet, alert_id)
    history = [
        AlertTransitionPublic(
            from_=t.from_state, to=t.to_state, event=t.event, at=t.at, value=t.value, detail=t.detail
        )
        for t in detail.history
    ]
    notes = [
        AlertNotificationPublic(
            id=n.id or 0,
            state=n.state,
            created_at=n.created_at,
            deliveries=[
                AlertDeliveryPublic(
                    receiver=d.receiver_name,
                    state=d.state,
                    attempts=d.attempts,
                    last_status=d.last_status,
                    last_error=d.last_error,
                    next_attempt_at=d.next_attempt_at if d.state == "pending" else None,
                    delivered_at=d.delivered_at,
                )
                for d in deliveries
            ],
        )
        for n, deliveries in detail.notifications
    ]
    base = _alert(detail.alert, cohort_names(session, ctx.settings.fleet))
    return AlertDetailPublic(**base.model_dump(), history=history, notifications=notes)


# --- rules -----------------------------------------------------------------------------------------


def _rule(row: AlertRule) -> AlertRulePublic:
    return AlertRulePublic(
        name=row.name,
        fleet=row.fleet,
        metric=row.metric,
        feature=row.feature,
        reference=row.reference,
        comparison=row.comparison,
        threshold=row.threshold,
        for_=format_duration(row.for_s),
        for_s=row.for_s,
        scope=row.scope,
        severity=row.severity,
        enabled=row.enabled,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/alert-rules", tags=["alert rules"])
def list_rules(
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> AlertRulesPublic:
    """The fleet's alert rules by name."""
    page = rules.list_rules(session, ctx.settings.fleet, limit=limit, cursor=cursor)
    rows = [_rule(r) for r in page.items]
    return AlertRulesPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)


@router.post(
    "/alert-rules",
    tags=["alert rules"],
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "the fleet has a rule of that name"},
        422: {"description": "invalid rule"},
    },
)
def create_rule(
    body: Annotated[dict[str, Any], _RULE_BODY], ctx: ContextDep, session: SessionDep, _token: OperatorDep
) -> AlertRulePublic:
    spec = validate_rule(body)
    return _rule(rules.create_rule(session, fleet=ctx.settings.fleet, spec=spec, clock=ctx.clock))


_RULES_DOCUMENT: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": {"type": "object"}},
        {
            "type": "object",
            "required": ["rules"],
            "properties": {"rules": {"type": "array", "items": {"type": "object"}}},
        },
        {"type": "null"},
    ]
}


async def _read_rules(request: Request) -> bytes:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in _RULES_TYPES:
        raise InvalidInputError(
            f"expected alert rules as {', '.join(sorted(_RULES_TYPES))}; got content type {ctype or 'none'!r}"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_RULES_BYTES:
            raise TooLargeError(MAX_RULES_BYTES, len(body))
    return bytes(body)


@router.post(
    "/alert-rules/apply",
    tags=["alert rules"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A rules file: a list of rules, or a mapping with a `rules` list (YAML or JSON).",
            # YAML (or JSON) text that holds the rules document: a list of rules, or a mapping with a
            # `rules` list (null: no rules). Each rule is checked by the rule model, and 422 lists why.
            "content": {t: {"schema": _RULES_DOCUMENT} for t in ("application/yaml", "application/json")},
        }
    },
    responses={422: {"description": "a rule is invalid: nothing was stored; every problem is listed"}},
)
async def apply_rules(request: Request, ctx: ContextDep, _token: OperatorDep) -> AlertRulesApplied:
    """Create or replace every rule of a file in one transaction; rules it does not name stay."""
    specs = parse_rules(await _read_rules(request))
    with ctx.sessions() as session:
        result = rules.apply_rules(session, fleet=ctx.settings.fleet, specs=specs, clock=ctx.clock)
    return AlertRulesApplied(created=result.created, updated=result.updated, unchanged=result.unchanged)


@router.get("/alert-rules/{name}", tags=["alert rules"], responses={404: {"description": "no such rule"}})
def get_rule(name: str, ctx: ContextDep, session: SessionDep, _token: ViewerDep) -> AlertRulePublic:
    return _rule(rules.get_rule(session, ctx.settings.fleet, name))


@router.put(
    "/alert-rules/{name}",
    tags=["alert rules"],
    responses={
        200: {"description": "the rule was replaced"},
        201: {"model": AlertRulePublic, "description": "the rule was created"},
        422: {"description": "invalid rule"},
    },
)
def put_rule(
    name: str,
    body: Annotated[dict[str, Any], _RULE_BODY],
    ctx: ContextDep,
    session: SessionDep,
    _token: OperatorDep,
    response: Response,
) -> AlertRulePublic:
    """Create the rule, or replace it; open alerts are judged by the new definition at the next cycle."""
    spec = validate_rule({"name": name, **body})
    if spec.name != name:
        raise InvalidInputError(f"name: expected {name!r} (the name in the path), got {spec.name!r}")
    row, outcome = rules.put_rule(session, fleet=ctx.settings.fleet, spec=spec, clock=ctx.clock)
    if outcome is rules.Outcome.CREATED:
        response.status_code = status.HTTP_201_CREATED
    return _rule(row)


@router.delete("/alert-rules/{name}", tags=["alert rules"], status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(name: str, ctx: ContextDep, session: SessionDep, _token: OperatorDep) -> Response:
    """Delete a rule: its firing alerts resolve (receivers are told), its alerts keep their history."""
    rules.delete_rule(session, ctx.settings.fleet, name, clock=ctx.clock)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- receivers -------------------------------------------------------------------------------------


def _receiver(row: AlertReceiver) -> AlertReceiverPublic:
    return AlertReceiverPublic(
        name=row.name,
        url=receivers.redact_url(row.url),
        enabled=row.enabled,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/alert-receivers", tags=["alert receivers"])
def list_receivers(
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> AlertReceiversPublic:
    """The fleet's webhook receivers by name (URLs shown up to the host)."""
    page = receivers.list_receivers(session, ctx.settings.fleet, limit=limit, cursor=cursor)
    rows = [_receiver(r) for r in page.items]
    return AlertReceiversPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)


@router.post(
    "/alert-receivers",
    tags=["alert receivers"],
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "the fleet has a receiver of that name"}},
)
def create_receiver(
    body: AlertReceiverCreate, ctx: ContextDep, session: SessionDep, _token: OperatorDep
) -> AlertReceiverPublic:
    """Add a receiver: it hears of every alert that fires or resolves from now on."""
    # The signing secret must exist before the receiver's owner can be told where to read it.
    webhook_secret(ctx.settings)
    row = receivers.create_receiver(
        session,
        fleet=ctx.settings.fleet,
        name=body.name,
        url=body.url,
        enabled=body.enabled,
        description=body.description,
        clock=ctx.clock,
    )
    return _receiver(row)


@router.get(
    "/alert-receivers/{name}", tags=["alert receivers"], responses={404: {"description": "no such receiver"}}
)
def get_receiver(name: str, ctx: ContextDep, session: SessionDep, _token: ViewerDep) -> AlertReceiverPublic:
    return _receiver(receivers.get_receiver(session, ctx.settings.fleet, name))


@router.patch("/alert-receivers/{name}", tags=["alert receivers"])
def update_receiver(
    name: str, body: AlertReceiverUpdate, ctx: ContextDep, session: SessionDep, _token: OperatorDep
) -> AlertReceiverPublic:
    """Change a receiver's URL, description, or whether it is enabled."""
    row = receivers.update_receiver(
        session,
        ctx.settings.fleet,
        name,
        url=body.url,
        enabled=body.enabled,
        description=body.description,
        clock=ctx.clock,
    )
    return _receiver(row)


@router.delete("/alert-receivers/{name}", tags=["alert receivers"], status_code=status.HTTP_204_NO_CONTENT)
def delete_receiver(name: str, ctx: ContextDep, session: SessionDep, _token: OperatorDep) -> Response:
    """Delete a receiver; its pending deliveries fail."""
    receivers.delete_receiver(session, ctx.settings.fleet, name, clock=ctx.clock)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- Prometheus ------------------------------------------------------------------------------------


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
def metrics(ctx: ContextDep, _token: ViewerDep) -> Response:
    """Cohort metrics, alerts, rollout states, ingest, API and scheduler figures, for Prometheus (viewer).

    See docs/operations.md for every metric and what to do when its alert fires.
    """
    registry = CollectorRegistry(auto_describe=False)
    reads = read_session_factory(ctx.engine)
    registry.register(RolloutStateCollector(reads, fleet=ctx.settings.fleet))
    registry.register(Forward(ctx.metrics.collect))  # this process's counters and histograms
    registry.register(
        HubCollector(
            reads,
            fleet=ctx.settings.fleet,
            now=ctx.clock(),
            bucket_s=ctx.settings.rollup_bucket_s,
            broker_dropped=ctx.broker_dropped,
        )
    )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
