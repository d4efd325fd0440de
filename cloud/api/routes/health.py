"""Liveness and readiness, without authentication (load balancers and orchestrators call it)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response

from cloud.api.deps import ContextDep
from cloud.api.schemas.fleet import Health
from cloud.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(ctx: ContextDep, response: Response) -> Health:
    """``db``: the database answers; ``mqtt``: connected to the broker. 503 when the database is down."""
    db_ok = await anyio.to_thread.run_sync(ping, ctx.engine)
    if not db_ok:
        response.status_code = 503
    return Health(status="ok" if db_ok else "unavailable", db=db_ok, mqtt=ctx.mqtt_connected())
