"""Which of a stage's devices may be offered the target, and why the others may not.

A device a stage takes is left out when another ACTIVE rollout of the same target kind holds
it, when it rolled this target back (``cloud.services.rollbacks`` for models; a firmware
rollback recorded by any rollout of the same image), when it already runs the target, when
no variant of the model runs on it, or when the firmware image has no build for its board.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from cloud.models import Device, FirmwareImage, ModelVariant, ModelVersion, Rollout, RolloutDevice
from cloud.rollouts.membership import held_by_others
from cloud.services.rollbacks import refusals
from cloud.services.variants import NoCompatibleVariantError, VariantOption, choose_variant
from cloud.sql_lists import in_list

__all__ = ["Eligible", "Target", "eligible", "load_target"]

_CHUNK = 500  # devices judged per round of queries: bounds the rows one round loads


@dataclass(frozen=True, slots=True)
class Target:
    """The rollout's target as rows: a model version with its variants, or firmware images by board."""

    kind: str
    name: str
    version: str
    model: ModelVersion | None = None
    variants: tuple[VariantOption, ...] = ()
    images: dict[str, FirmwareImage] = field(default_factory=dict)  # hardware id -> full image


@dataclass(slots=True)
class Eligible:
    devices: dict[str, Device] = field(default_factory=dict)
    # device id -> the chosen variant's id (model targets)
    variant: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # device id -> why


def load_target(session: Session, rollout: Rollout) -> Target:
    """The target's rows; a target deleted since the rollout was created has none (nothing is offered)."""
    if rollout.target_kind == "firmware":
        images = session.exec(
            select(FirmwareImage).where(
                FirmwareImage.name == rollout.target_name,
                FirmwareImage.version == rollout.target_version,
                FirmwareImage.kind == "full",
            )
        ).all()
        return Target(
            "firmware", rollout.target_name, rollout.target_version, images={i.hardware_id: i for i in images}
        )
    model = session.exec(
        select(ModelVersion).where(
            ModelVersion.name == rollout.target_name, ModelVersion.version == rollout.target_version
        )
    ).first()
    variants: tuple[VariantOption, ...] = ()
    if model is not None:
        rows = session.exec(
            select(ModelVariant)
            .where(ModelVariant.model_version_id == model.id)
            .order_by(col(ModelVariant.id))
        ).all()
        variants = tuple(VariantOption.from_row(v) for v in rows)
    return Target("model", rollout.target_name, rollout.target_version, model=model, variants=variants)


def _rolled_back_here(session: Session, rollout: Rollout, ids: Sequence[str]) -> set[str]:
    """Devices that rolled this same target back under any rollout (firmware has no other record)."""
    query = (
        select(RolloutDevice.device_id)
        .join(Rollout, col(Rollout.id) == col(RolloutDevice.rollout_id))
        .where(
            in_list(RolloutDevice.device_id, ids),
            RolloutDevice.outcome == "rolled_back",
            Rollout.target_kind == rollout.target_kind,
            Rollout.target_name == rollout.target_name,
            Rollout.target_version == rollout.target_version,
        )
    )
    return set(session.exec(query).all())


def eligible(session: Session, rollout: Rollout, target: Target, device_ids: Sequence[str]) -> Eligible:
    """The devices among ``device_ids`` that may be offered the target now (in input order)."""
    out = Eligible()
    for start in range(0, len(device_ids), _CHUNK):
        _eligible_chunk(session, rollout, target, list(device_ids[start : start + _CHUNK]), out)
    return out


def _eligible_chunk(
    session: Session, rollout: Rollout, target: Target, ids: list[str], out: Eligible
) -> None:
    rows = {d.id: d for d in session.exec(select(Device).where(in_list(Device.id, ids))).all()}
    held = held_by_others(session, rollout, ids)
    refused = set(_rolled_back_here(session, rollout, ids))
    if target.kind == "model":
        refused |= set(refusals(session, target.name, target.version, ids))
    for device_id in ids:
        device = rows.get(device_id)
        why = _why_not(rollout, target, device, held.get(device_id), device_id in refused)
        if why is not None:
            out.skipped[device_id] = why
            continue
        assert device is not None
        if target.kind == "model":
            try:
                out.variant[device_id] = choose_variant(
                    target.variants, device.capabilities, device.labels
                ).id
            except NoCompatibleVariantError as e:
                out.skipped[device_id] = e.reasons.get("device", str(e))
                continue
        out.devices[device_id] = device


def _why_not(
    rollout: Rollout, target: Target, device: Device | None, holder: str | None, refused: bool
) -> str | None:
    if device is None:
        return "the device is no longer known"
    if holder is not None:
        return f"held by active rollout {holder[:8]}"
    if refused:
        return f"it rolled {target.name} {target.version} back; the hub does not offer it again"
    if target.kind == "model":
        if target.model is None or not target.variants:
            return f"model {target.name} {target.version} is not registered with a variant to offer"
        if device.active_model_name == target.name and device.active_model_version == target.version:
            return "it already runs the target"
        return None
    if device.hardware_id not in target.images:
        return f"firmware {target.name} {target.version} has no image for its hardware {device.hardware_id!r}"
    if device.firmware_version == target.version:
        return "it already runs the target"
    return None
