"""Alert rules of a fleet: create, replace, apply a file of them at once, list, delete.

Rules are validated by ``cloud.alerts.spec`` (shape) and here (a named cohort must exist).
No default rules are created: a hub starts with none, and ``docs/examples/alert-rules.yaml``
holds a set to start from (``fleet alerts rules apply FILE``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.alerts.service import AlertChange, cohort_names, end_open_alerts, open_alerts
from cloud.alerts.spec import RulesError, RuleSpec, ScopeKind, parse_scope
from cloud.alerts.tables import Alert, AlertRule
from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError, NotFoundError
from cloud.services.cohorts import register_cohort_in_use
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page

__all__ = [
    "ApplyResult",
    "Outcome",
    "apply_rules",
    "create_rule",
    "delete_rule",
    "get_rule",
    "list_rules",
    "put_rule",
    "rule_spec",
]

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def add(self, name: str, outcome: Outcome) -> None:
        getattr(self, outcome.value).append(name)


def rule_spec(row: AlertRule) -> RuleSpec:
    """The stored rule as the spec it was made from."""
    return RuleSpec(
        name=row.name,
        metric=row.metric,
        feature=row.feature,
        reference=row.reference,
        comparison=row.comparison,
        threshold=row.threshold,
        for_s=row.for_s,
        scope=row.scope,
        severity=row.severity,
        enabled=row.enabled,
        description=row.description,
    )


def _scope_problem(session: Session, fleet: str, spec: RuleSpec, path: str) -> str | None:
    kind, name = parse_scope(spec.scope)
    if kind is not ScopeKind.COHORT or name in cohort_names(session, fleet).values():
        return None
    return f"{path}scope: expected a cohort of fleet {fleet!r}, got {spec.scope!r} (no cohort named {name!r})"


def _values(spec: RuleSpec) -> dict[str, Any]:
    return {
        "metric": spec.metric,
        "feature": spec.feature,
        "reference": spec.reference,
        "comparison": spec.comparison.value,
        "threshold": spec.threshold,
        "for_s": spec.for_s,
        "scope": spec.scope,
        "severity": spec.severity,
        "enabled": spec.enabled,
        "description": spec.description,
    }


def _find(session: Session, fleet: str, name: str) -> AlertRule | None:
    return session.exec(select(AlertRule).where(AlertRule.fleet == fleet, AlertRule.name == name)).first()


def _store(session: Session, fleet: str, spec: RuleSpec, now: datetime) -> Outcome:
    row = _find(session, fleet, spec.name)
    if row is None:
        session.add(AlertRule(fleet=fleet, name=spec.name, created_at=now, updated_at=now, **_values(spec)))
        return Outcome.CREATED
    if rule_spec(row) == spec:
        return Outcome.UNCHANGED
    for key, value in _values(spec).items():
        setattr(row, key, value)
    row.updated_at = now
    session.add(row)
    return Outcome.UPDATED


def _commit(session: Session, fleet: str, what: str) -> None:
    try:
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(
            f"{what} in fleet {fleet!r} changed meanwhile; expected to be alone: try again"
        ) from e


def create_rule(session: Session, *, fleet: str, spec: RuleSpec, clock: Clock = utcnow) -> AlertRule:
    """A new rule; commits. ConflictError when the fleet has a rule of that name."""
    problem = _scope_problem(session, fleet, spec, "")
    if problem:
        raise RulesError("rule", [problem])
    if _find(session, fleet, spec.name) is not None:
        raise ConflictError(
            f"fleet {fleet!r} already has an alert rule named {spec.name!r}; expected a new name"
        )
    _store(session, fleet, spec, clock())
    _commit(session, fleet, f"alert rule {spec.name!r}")
    log.info("created alert rule %r in fleet %r", spec.name, fleet)
    return get_rule(session, fleet, spec.name)


def put_rule(
    session: Session, *, fleet: str, spec: RuleSpec, clock: Clock = utcnow
) -> tuple[AlertRule, Outcome]:
    """Create the rule, or replace the one of its name; commits. Open alerts are judged anew next cycle."""
    problem = _scope_problem(session, fleet, spec, "")
    if problem:
        raise RulesError("rule", [problem])
    outcome = _store(session, fleet, spec, clock())
    _commit(session, fleet, f"alert rule {spec.name!r}")
    if outcome is not Outcome.UNCHANGED:
        log.info("%s alert rule %r in fleet %r", outcome.value, spec.name, fleet)
    return get_rule(session, fleet, spec.name), outcome


def apply_rules(
    session: Session, *, fleet: str, specs: Sequence[RuleSpec], clock: Clock = utcnow, source: str = "rules"
) -> ApplyResult:
    """Create or replace every rule in ``specs`` in one transaction: all of them, or none if one is invalid.

    Rules of the fleet that ``specs`` does not name are left as they are.
    """
    problems = [
        p for i, spec in enumerate(specs) if (p := _scope_problem(session, fleet, spec, f"rules[{i}]."))
    ]
    if problems:
        raise RulesError(source, problems)
    result = ApplyResult()
    now = clock()
    for spec in specs:
        result.add(spec.name, _store(session, fleet, spec, now))
    _commit(session, fleet, "alert rules")
    log.info(
        "applied alert rules in fleet %r: %d created, %d updated, %d unchanged",
        fleet, len(result.created), len(result.updated), len(result.unchanged),
    )  # fmt: skip
    return result


def get_rule(session: Session, fleet: str, name: str) -> AlertRule:
    row = _find(session, fleet, name)
    if row is None:
        raise NotFoundError(f"alert rule {name!r} is not known in fleet {fleet!r}")
    return row


def list_rules(
    session: Session, fleet: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[AlertRule]:
    """A page of the fleet's rules by name."""
    return keyset_page(
        session,
        select(AlertRule).where(AlertRule.fleet == fleet),
        [AlertRule.name],
        listing="alert rules",
        key_of=lambda r: (r.name,),
        limit=limit,
        cursor=cursor,
    )


def delete_rule(session: Session, fleet: str, name: str, *, clock: Clock = utcnow) -> list[AlertChange]:
    """Delete a rule; commits. Its firing alerts resolve (receivers hear so), pending ones end.

    The alerts stay, with the rule's name, for their history.
    """
    row = get_rule(session, fleet, name)
    changes = end_open_alerts(
        session,
        row,
        open_alerts(session, row).values(),
        clock(),
        detail="the rule was deleted",
        names=cohort_names(session, fleet),
    )
    session.exec(update(Alert).where(col(Alert.rule_id) == row.id).values(rule_id=None))
    session.delete(row)
    session.commit()
    log.info("deleted alert rule %r in fleet %r (%d open alert(s) ended)", name, fleet, len(changes))
    return changes


def _cohort_in_use(session: Session, fleet: str, cohort: str) -> str | None:
    """Why ``cohort`` must not be deleted now: a rule watches it by name (it would silently match nothing)."""
    row = session.exec(
        select(AlertRule).where(AlertRule.fleet == fleet, AlertRule.scope == f"{ScopeKind.COHORT}:{cohort}")
    ).first()
    return None if row is None else f"alert rule {row.name} watches it (change or delete the rule first)"


register_cohort_in_use(_cohort_in_use)
