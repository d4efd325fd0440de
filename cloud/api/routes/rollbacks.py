"""Rollbacks: versions devices rolled back on their own, and why."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import ContextDep, SessionDep, ViewerDep
from cloud.api.schemas.fleet import RollbackPublic, RollbacksPublic
from cloud.services import rollbacks
from cloud.services.pagination import MAX_LIMIT

router = APIRouter(prefix="/rollbacks", tags=["rollbacks"])


@router.get("")
def list_rollbacks(
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    device: Annotated[str | None, Query(description="only this device")] = None,
    model: Annotated[str | None, Query(description="only this model name")] = None,
    version: Annotated[str | None, Query(description="only this model version")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="newest first, at most this many")] = 100,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> RollbacksPublic:
    """Rollbacks devices reported (ROLLED_BACK events): the failed gate, the reason and the figures.

    Newest first, a page at a time: ``next_cursor`` continues with older ones.
    """
    page = rollbacks.page_rollbacks(
        session,
        fleet=ctx.settings.fleet,
        device_id=device,
        model_name=model,
        version=version,
        limit=limit,
        cursor=cursor,
    )
    rows = [RollbackPublic.model_validate(r) for r in page.items]
    return RollbacksPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)
