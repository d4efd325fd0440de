"""Reading the audit log: newest first, filtered, in keyset pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from cloud.audit.tables import AuditEntry
from cloud.errors import InvalidInputError
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page

__all__ = ["AuditFilter", "list_entries"]

ACTIONS = ("create", "update", "delete")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Each field given narrows the listing; ``since`` is inclusive, ``until`` exclusive."""

    fleet: str | None = None
    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_entries(
    session: Session, where: AuditFilter, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[AuditEntry]:
    """One page of entries, newest first. Ids grow with every insert, so they order the log."""
    if where.action is not None and where.action not in ACTIONS:
        raise InvalidInputError(f"invalid action {where.action!r}: expected one of {', '.join(ACTIONS)}")
    for name in ("since", "until"):
        moment = getattr(where, name)
        if moment is not None and moment.tzinfo is None:
            raise InvalidInputError(f"invalid {name}: expected a time with a timezone, got {moment}")
    query = select(AuditEntry)
    for column, value in (
        (AuditEntry.fleet, where.fleet),
        (AuditEntry.actor, where.actor),
        (AuditEntry.action, where.action),
        (AuditEntry.object_type, where.object_type),
        (AuditEntry.object_id, where.object_id),
        (AuditEntry.request_id, where.request_id),
    ):
        if value is not None:
            query = query.where(col(column) == value)
    if where.since is not None:
        query = query.where(col(AuditEntry.at) >= where.since)
    if where.until is not None:
        query = query.where(col(AuditEntry.at) < where.until)
    return keyset_page(
        session,
        query,
        [AuditEntry.id],
        listing="audit",
        key_of=lambda e: (e.id or 0,),
        limit=limit,
        cursor=cursor,
        descending=True,
    )
