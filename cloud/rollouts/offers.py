"""Offering a rollout's target to devices, and giving them their previous version back.

Both write the device's desired-state rows the way an assignment does (``cloud.services
.assignments`` for a model: the variant its runtimes run best, a generation above anything the
device applied; ``cloud.services.firmware`` for firmware: the image for its board, the model
part untouched). The caller composes, seals and publishes through ``cloud.services.desired``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from cloud.models import (
    DesiredFirmware,
    DesiredState,
    Device,
    FirmwareImage,
    ModelVariant,
    ModelVersion,
    RolloutDevice,
)
from cloud.rollouts.eligibility import Target
from cloud.sql_lists import in_list

__all__ = ["lock_devices", "offer", "restore"]


def lock_devices(session: Session, device_ids: Sequence[str]) -> list[Device]:
    """The devices' rows, fresh and locked (PostgreSQL) so no concurrent assignment hands out one
    generation twice; SQLite serialises writers anyway."""
    if not device_ids:
        return []
    query = (
        select(Device)
        .where(in_list(Device.id, device_ids))
        .order_by(col(Device.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(session.exec(query).all())


def _previous_model(
    session: Session, device: Device, row: DesiredState | None, models: dict[int, ModelVersion | None]
) -> dict[str, Any]:
    if row is not None:
        # Most devices of a stage ran the same version: looked up once (the session alone would
        # forget it between devices, as nothing else holds it).
        if row.model_version_id not in models:
            models[row.model_version_id] = session.get(ModelVersion, row.model_version_id)
        model = models[row.model_version_id]
        return {
            "model_version_id": row.model_version_id,
            "variant_id": row.variant_id,
            "name": model.name if model else "",
            "version": model.version if model else "",
        }
    if device.active_model_name and device.active_model_version:
        # Never assigned by this hub (pre-installed): give back what it reported, if registered.
        model = session.exec(
            select(ModelVersion).where(
                ModelVersion.name == device.active_model_name,
                ModelVersion.version == device.active_model_version,
            )
        ).first()
        if model is not None:
            variant = session.exec(
                select(ModelVariant).where(
                    ModelVariant.model_version_id == model.id,
                    ModelVariant.sha256 == device.active_model_sha256,
                )
            ).first()
            return {
                "model_version_id": model.id,
                "variant_id": variant.id if variant else None,
                "name": model.name,
                "version": model.version,
            }
    return {}


def _previous_firmware(
    session: Session, device: Device, row: DesiredFirmware | None, name: str
) -> dict[str, Any]:
    image: FirmwareImage | None = None
    if row is not None:
        image = session.get(FirmwareImage, row.firmware_image_id)
    elif device.firmware_version:
        image = session.exec(
            select(FirmwareImage).where(
                FirmwareImage.name == name,
                FirmwareImage.hardware_id == device.hardware_id,
                FirmwareImage.version == device.firmware_version,
                FirmwareImage.kind == "full",
            )
        ).first()
    if image is None:
        return {}
    return {"firmware_image_id": image.id, "version": image.version}


def _set_model(
    session: Session,
    device: Device,
    model_version_id: int,
    variant_id: int | None,
    now: datetime,
    *,
    trial_policy: dict[str, Any] | None = None,
) -> None:
    row = session.get(DesiredState, device.id)
    # Never below what the device already applied: a rebuilt database must still issue new generations.
    generation = max(row.generation if row else 0, device.applied_generation) + 1
    if row is None:
        row = DesiredState(
            device_id=device.id, model_version_id=model_version_id, generation=0, issued_at=now
        )
    row.model_version_id = model_version_id
    row.variant_id = variant_id
    row.generation = generation
    row.issued_at = now
    row.trial_policy = trial_policy
    session.add(row)


def _set_firmware(session: Session, device: Device, image_id: int, now: datetime) -> None:
    row = session.get(DesiredFirmware, device.id)
    if row is None:
        row = DesiredFirmware(device_id=device.id, firmware_image_id=image_id, issued_at=now)
    row.firmware_image_id, row.issued_at = image_id, now
    session.add(row)


def offer(
    session: Session,
    *,
    rollout_id: str,
    stage: int,
    target: Target,
    devices: Sequence[Device],
    variants: Mapping[str, int],
    now: datetime,
    trial_policy: dict[str, Any] | None = None,
) -> None:
    """Make the target the desired state of ``devices`` and record each one's previous state.

    ``trial_policy`` is the assignment row's stored override (``desired.override``) for a model.
    """
    # Held while the loop runs: each device's lookup by id then finds its row in the session.
    rows = _desired_rows(session, DesiredState if target.kind == "model" else DesiredFirmware, devices)
    models: dict[int, ModelVersion | None] = {}
    for device in devices:
        if target.kind == "model":
            assert target.model is not None and target.model.id is not None
            row = session.get(DesiredState, device.id)
            previous = _previous_model(session, device, row, models)
            _set_model(session, device, target.model.id, variants[device.id], now, trial_policy=trial_policy)
        else:
            image = target.images[device.hardware_id]
            assert image.id is not None
            previous = _previous_firmware(
                session, device, session.get(DesiredFirmware, device.id), target.name
            )
            _set_firmware(session, device, image.id, now)
        session.add(
            RolloutDevice(
                rollout_id=rollout_id, device_id=device.id, stage=stage, offered_at=now, previous=previous
            )
        )
    del rows


def _desired_rows(
    session: Session, table: type[DesiredState] | type[DesiredFirmware], devices: Sequence[Device]
) -> list[object]:
    """The devices' desired-state rows, loaded with one query rather than one query per device."""
    ids = [d.id for d in devices]
    if not ids:
        return []
    return list(session.exec(select(table).where(in_list(table.device_id, ids))).all())


def restore(
    session: Session, target: Target, rows: Sequence[RolloutDevice], now: datetime
) -> tuple[list[Device], dict[str, str]]:
    """Give each offered device its previous version back; returns those changed, and why not the others.

    A device whose desired state no longer names the target (an operator assigned something else
    since) is left alone: giving it the old version back would undo a newer decision.
    """
    devices = {d.id: d for d in lock_devices(session, [r.device_id for r in rows])}
    changed: list[Device] = []
    skipped: dict[str, str] = {}
    for rd in rows:
        device = devices.get(rd.device_id)
        if device is None:
            skipped[rd.device_id] = "the device is no longer known"
            continue
        why = _restore_one(session, target, rd, device, now)
        if why is None:
            rd.outcome = "restored"
            session.add(rd)
            changed.append(device)
        else:
            skipped[rd.device_id] = why
    return changed, skipped


def _restore_one(
    session: Session, target: Target, rd: RolloutDevice, device: Device, now: datetime
) -> str | None:
    previous = rd.previous or {}
    if target.kind == "model":
        current = session.get(DesiredState, device.id)
        if current is None or target.model is None or current.model_version_id != target.model.id:
            return "its desired model is no longer the target"
        model_version_id = previous.get("model_version_id")
        if model_version_id is None or session.get(ModelVersion, model_version_id) is None:
            return "the hub knows no previous model of it"
        variant_id = previous.get("variant_id")
        if variant_id is not None and session.get(ModelVariant, variant_id) is None:
            variant_id = None
        _set_model(session, device, int(model_version_id), variant_id, now)
        return None
    fw = session.get(DesiredFirmware, device.id)
    image_ids = {image.id for image in target.images.values()}
    if fw is None or fw.firmware_image_id not in image_ids:
        return "its desired firmware is no longer the target"
    image_id = previous.get("firmware_image_id")
    if image_id is None or session.get(FirmwareImage, image_id) is None:
        return "the hub knows no previous firmware of it"
    _set_firmware(session, device, int(image_id), now)
    return None
