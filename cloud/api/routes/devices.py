"""Devices as the hub knows them: reported state, desired state, events, telemetry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col

from cloud.api.deps import ContextDep, SessionDep, ViewerDep
from cloud.api.schemas.fleet import (
    DeviceDetailPublic,
    DeviceEventPublic,
    DeviceEventsPublic,
    DevicesPublic,
    TelemetryWindowPublic,
    TelemetryWindowsPublic,
)
from cloud.models import Device, DeviceState
from cloud.services import devices, lookup
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


def _in_fleet(ctx: ContextDep, session: SessionDep, device_id: str) -> str:
    """The id of the device of this fleet that ``device_id`` names in full or as a unique prefix."""
    fleet = ctx.settings.fleet
    return lookup.resolve(
        session,
        Device,
        Device.id,
        device_id,
        what="device",
        where=[col(Device.fleet) == fleet],
        not_found=f"device {device_id!r} is not known in fleet {fleet!r}",
    ).id


@router.get("/{device_id}", responses={409: {"description": "the device id prefix is ambiguous"}})
def get_device(device_id: str, ctx: ContextDep, session: SessionDep, _token: ViewerDep) -> DeviceDetailPublic:
    """One device (its id in full or a unique prefix) with recent events, telemetry and rollbacks."""
    return devices.device_detail(session, _in_fleet(ctx, session, device_id))


@router.get("/{device_id}/events")
def device_events(
    device_id: str, ctx: ContextDep, session: SessionDep, _token: ViewerDep, limit: Limit = 50
) -> DeviceEventsPublic:
    rows = devices.recent_events(session, _in_fleet(ctx, session, device_id), limit)
    return DeviceEventsPublic(data=[DeviceEventPublic.model_validate(r) for r in rows], count=len(rows))


@router.get("/{device_id}/telemetry")
def device_telemetry(
    device_id: str, ctx: ContextDep, session: SessionDep, _token: ViewerDep, limit: Limit = 50
) -> TelemetryWindowsPublic:
    rows = devices.recent_telemetry(session, _in_fleet(ctx, session, device_id), limit)
    return TelemetryWindowsPublic(
        data=[TelemetryWindowPublic.model_validate(r) for r in rows], count=len(rows)
    )
