"""The audit log: every mutation made through the API. Operators and admins read it; viewers do not,
since before/after values show more of the fleet's configuration than the read routes do."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from cloud.api.deps import ContextDep, OperatorDep, SessionDep
from cloud.api.schemas.auth import AuditEntryPublic, AuditPublic
from cloud.api.schemas.base import IsoDateTime
from cloud.audit.service import AuditFilter, list_entries
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/audit", tags=["audit"])

Text = Annotated[str | None, Query(max_length=255)]


@router.get("")
def list_audit(
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: OperatorDep,
    actor: Annotated[str | None, Query(max_length=64, description="a token's name")] = None,
    action: Annotated[Literal["create", "update", "delete"] | None, Query()] = None,
    object_type: Annotated[str | None, Query(max_length=64, description="a table, e.g. cohort")] = None,
    object_id: Text = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[IsoDateTime | None, Query(description="from this time on (inclusive)")] = None,
    until: Annotated[IsoDateTime | None, Query(description="before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> AuditPublic:
    """The fleet's audit entries, newest first."""
    where = AuditFilter(
        fleet=ctx.settings.fleet,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        request_id=request_id,
        since=since,
        until=until,
    )
    page = list_entries(session, where, limit=limit, cursor=cursor)
    rows = [AuditEntryPublic.model_validate(e, from_attributes=True) for e in page.items]
    return AuditPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)
