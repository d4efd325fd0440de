"""Firmware images: upload a bundle (a delta from the previous image is made too), list, assign."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, status

from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.routes.tuf import SigningDep
from cloud.api.schemas.signing import (
    FirmwareAssignmentCreate,
    FirmwareAssignmentPublic,
    FirmwareListPublic,
    FirmwarePublic,
)
from cloud.api.upload import receive_upload
from cloud.artifacts import ArtifactInfo
from cloud.context import HubContext
from cloud.models import FirmwareImage
from cloud.services import firmware
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from cloud.services.signing import Signing

router = APIRouter(prefix="/firmware", tags=["firmware"])

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "a .efw bundle"}
                    },
                }
            }
        },
    }
}


def _register(ctx: HubContext, signing: Signing, info: ArtifactInfo) -> list[FirmwareImage]:
    with ctx.sessions() as session:
        return firmware.register_bundle(session, ctx.store, signing, info, clock=ctx.clock)


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra=_UPLOAD_BODY)
async def upload_firmware(
    request: Request, ctx: ContextDep, signing: SigningDep, _token: OperatorDep
) -> FirmwareListPublic:
    """Register a firmware bundle; the response lists it and the delta made from the previous image."""
    upload = await receive_upload(request, ctx.store, max_file_bytes=ctx.settings.max_upload_bytes)
    rows = await anyio.to_thread.run_sync(_register, ctx, signing, upload.artifact)
    data = [FirmwarePublic.model_validate(r) for r in rows]
    return FirmwareListPublic(data=data, count=len(data))


@router.get("")
def list_firmware(
    session: SessionDep,
    _token: ViewerDep,
    name: Annotated[str | None, Query(description="only images of this firmware")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> FirmwareListPublic:
    """Firmware images (full and delta) by name, oldest first, a page at a time (follow ``next_cursor``)."""
    page = firmware.page_firmware(session, name, limit=limit, cursor=cursor)
    rows = [FirmwarePublic.model_validate(r) for r in page.items]
    return FirmwareListPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)


@router.post("/assignments")
def assign_firmware(
    body: FirmwareAssignmentCreate,
    ctx: ContextDep,
    session: SessionDep,
    signing: SigningDep,
    _token: OperatorDep,
) -> FirmwareAssignmentPublic:
    """Make a registered full image the desired firmware of devices named by id or chosen by labels.

    Each device's desired state keeps its model part as it is (the same variant and artifact, at
    the same generation); only the firmware part changes, and the whole is signed again.

    The image's hardware id must be the one each chosen device reports. When any device differs
    (or reports none), the whole request is refused with 409 and the mismatching devices listed,
    for a selector as for named devices: nothing is assigned, not even to the devices that match,
    so a request never half succeeds. Narrow the selector (e.g. add a hardware label) and retry.
    """
    devices = firmware.assign_firmware(
        session,
        signing,
        ctx.publisher,
        body.name,
        body.version,
        device_ids=body.devices,
        selector=body.selector,
        hardware_id=body.hardware_id,
        fleet=ctx.settings.fleet,
        artifact_endpoint=ctx.artifact_endpoint,
        clock=ctx.clock,
    )
    return FirmwareAssignmentPublic(devices=devices, count=len(devices))
