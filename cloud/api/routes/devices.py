"""Devices as the hub knows them: reported state, desired state, events, telemetry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import ContextDep, SessionDep, ViewerDep
from cloud.errors import NotFoundError
from cloud.models import DeviceState
from cloud.schemas import (
    DeviceDetailPublic,
    DeviceEventPublic,
    DeviceEventsPublic,
    DevicesPublic,
    TelemetryWindowPublic,
    TelemetryWindowsPublic,
)
from cloud.services import devices
from cloud.validation import parse_label_selector

router = APIRouter(prefix="/devices", tags=["devices"])

Limit = Annotated[int, Query(ge=1, le=1000, description="newest first, at most this many")]


@router.get("")
def list_devices(
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    state: DeviceState | None = None,
    label: Annotated[
        list[str] | None, Query(description="key=value; repeat or comma-separate to require several")
    ] = None,
    model: Annotated[str | None, Query(description="name of the active model")] = None,
    version: Annotated[str | None, Query(description="version of the active model")] = None,
) -> DevicesPublic:
    selector: dict[str, str] = {}
    for item in label or []:
        selector.update(parse_label_selector(item))
    rows = devices.list_devices(
        session, fleet=ctx.settings.fleet, state=state, labels=selector, model=model, version=version
    )
    return DevicesPublic(data=rows, count=len(rows))


def _in_fleet(ctx: ContextDep, session: SessionDep, device_id: str) -> None:
    if devices.get_device(session, device_id).fleet != ctx.settings.fleet:
        raise NotFoundError(f"device {device_id!r} is not in fleet {ctx.settings.fleet!r}")


@router.get("/{device_id}")
def get_device(device_id: str, ctx: ContextDep, session: SessionDep, _token: ViewerDep) -> DeviceDetailPublic:
    _in_fleet(ctx, session, device_id)
    return devices.device_detail(session, device_id)


@router.get("/{device_id}/events")
def device_events(
    device_id: str, ctx: ContextDep, session: SessionDep, _token: ViewerDep, limit: Limit = 50
) -> DeviceEventsPublic:
    _in_fleet(ctx, session, device_id)
    rows = devices.recent_events(session, device_id, limit)
    return DeviceEventsPublic(data=[DeviceEventPublic.model_validate(r) for r in rows], count=len(rows))


@router.get("/{device_id}/telemetry")
def device_telemetry(
    device_id: str, ctx: ContextDep, session: SessionDep, _token: ViewerDep, limit: Limit = 50
) -> TelemetryWindowsPublic:
    _in_fleet(ctx, session, device_id)
    rows = devices.recent_telemetry(session, device_id, limit)
    return TelemetryWindowsPublic(
        data=[TelemetryWindowPublic.model_validate(r) for r in rows], count=len(rows)
    )
