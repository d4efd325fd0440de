"""Rollbacks: versions devices rolled back on their own, and why."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import ContextDep, SessionDep, ViewerDep
from cloud.api.schemas.fleet import RollbackPublic, RollbacksPublic
from cloud.services import rollbacks

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
    limit: Annotated[int, Query(ge=1, le=1000, description="newest first, at most this many")] = 100,
) -> RollbacksPublic:
    """Rollbacks devices reported (ROLLED_BACK events): the failed gate, the reason and the figures."""
    rows = rollbacks.list_rollbacks(
        session, fleet=ctx.settings.fleet, device_id=device, model_name=model, version=version, limit=limit
    )
    return RollbacksPublic(data=[RollbackPublic.model_validate(r) for r in rows], count=len(rows))
