"""Devices as the hub knows them: reported state, desired state, events, telemetry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import col

from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.schemas.base import IsoDateTime
from cloud.api.schemas.cohorts import DeviceLabelsPatch, DeviceLabelsPublic, DeviceLabelsReplace
from cloud.api.schemas.fleet import (
    DeviceDetailPublic,
    DeviceEventPublic,
    DeviceEventsPublic,
    DevicesPublic,
    FleetSummaryPublic,
    TelemetryWindowPublic,
    TelemetryWindowsPublic,
    VersionCountPublic,
)
from cloud.models import Device, DeviceState
from cloud.services import cohorts, devices, labels, lookup, telemetry_series
from cloud.services.devices import HealthKind
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/devices", tags=["devices"])
# Fleet-wide figures live beside /devices, not under it: any string can be a device id.
fleet_router = APIRouter(prefix="/fleet", tags=["devices"])

Limit = Annotated[int, Query(ge=1, le=1000, description="newest first, at most this many")]


@router.get("", responses={404: {"description": "the cohort is not known in this fleet"}})
def list_devices(
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    state: DeviceState | None = None,
    label: Annotated[
        list[str] | None,
        Query(
            description="a label selector: key=value, key!=value, key in (a,b), key notin (a,b), key, !key; "
            "comma-separate or repeat to require several"
        ),
    ] = None,
    cohort: Annotated[str | None, Query(description="only members of this cohort of the fleet")] = None,
    model: Annotated[str | None, Query(description="name of the active model")] = None,
    version: Annotated[str | None, Query(description="version of the active model")] = None,
    health: Annotated[
        HealthKind | None,
        Query(description="kind of the reported health: 'degraded' matches 'degraded: <why>'"),
    ] = None,
    seen_after: Annotated[
        IsoDateTime | None,
        Query(description="last heard from at or after this instant (ISO 8601 with offset)"),
    ] = None,
    seen_before: Annotated[
        IsoDateTime | None, Query(description="last heard from before this instant (ISO 8601 with offset)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many, by id")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> DevicesPublic:
    """The fleet's devices by id, a page at a time (follow ``next_cursor``), matching every filter."""
    selector = ",".join(item for item in label or [] if item.strip())
    page = devices.page_devices(
        session,
        fleet=ctx.settings.fleet,
        state=state,
        labels=labels.parse_selector(selector),
        model=model,
        version=version,
        cohort=cohorts.get_cohort(session, ctx.settings.fleet, cohort) if cohort is not None else None,
        health=health,
        seen_after=seen_after,
        seen_before=seen_before,
        limit=limit,
        cursor=cursor,
    )
    return DevicesPublic(data=page.items, count=len(page.items), next_cursor=page.next_cursor)


@fleet_router.get("/summary")
def devices_summary(ctx: ContextDep, session: SessionDep, _token: ViewerDep) -> FleetSummaryPublic:
    """How many of the fleet's devices are in each state, health, active model version and cohort."""
    found = devices.fleet_summary(session, ctx.settings.fleet)
    return FleetSummaryPublic(
        fleet=ctx.settings.fleet,
        total=found.total,
        by_state=found.by_state,
        by_health=found.by_health,
        by_version=[
            VersionCountPublic(name=v.name, version=v.version, count=v.count) for v in found.by_version
        ],
        by_cohort=found.by_cohort,
    )


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
    device_id: str,
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    limit: Limit = 50,
    since: Annotated[
        IsoDateTime | None,
        Query(description="windows ending at or after this instant (ISO 8601 with offset)"),
    ] = None,
    until: Annotated[IsoDateTime | None, Query(description="windows ending before this instant")] = None,
) -> TelemetryWindowsPublic:
    """The device's telemetry windows, newest first: its series over time for charts."""
    found = _in_fleet(ctx, session, device_id)
    rows = telemetry_series.device_windows(session, found, limit=limit, since=since, until=until)
    return TelemetryWindowsPublic(
        data=[TelemetryWindowPublic.model_validate(r) for r in rows], count=len(rows)
    )


def _labels_public(device: Device) -> DeviceLabelsPublic:
    return DeviceLabelsPublic(
        device_id=device.id,
        labels=labels.effective_labels(device.labels, device.operator_labels),
        reported_labels=device.labels,
        operator_labels=device.operator_labels,
    )


_LABEL_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"description": "a key or value a selector cannot name, or a key both set and removed"}
}


@router.put("/{device_id}/labels", responses=_LABEL_ERRORS)
def replace_labels(
    device_id: str, body: DeviceLabelsReplace, ctx: ContextDep, session: SessionDep, _token: OperatorDep
) -> DeviceLabelsPublic:
    """Replace the device's operator labels; they win over reported ones (null or "-" hides one)."""
    found = _in_fleet(ctx, session, device_id)
    return _labels_public(
        labels.update_operator_labels(session, ctx.settings.fleet, found, replace=body.labels)
    )


@router.patch("/{device_id}/labels", responses=_LABEL_ERRORS)
def patch_labels(
    device_id: str, body: DeviceLabelsPatch, ctx: ContextDep, session: SessionDep, _token: OperatorDep
) -> DeviceLabelsPublic:
    """Set some operator labels and drop others; a dropped key shows its reported value again."""
    found = _in_fleet(ctx, session, device_id)
    device = labels.update_operator_labels(
        session, ctx.settings.fleet, found, set_labels=body.set, remove=body.remove
    )
    return _labels_public(device)
