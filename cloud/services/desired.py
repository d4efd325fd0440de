"""Desired states: the one place that composes what a device is told to run.

A device's desired state has two parts, kept in two tables: the model part (``DesiredState``:
the version, the variant chosen for this device's runtimes, the generation) and the firmware
part (``DesiredFirmware``). Every path that publishes a desired state (a model assignment, a
firmware assignment, a republish after a reconnect, a re-sign) composes it here from both
tables, so an instruction about one part can neither drop nor change the other: assigning
firmware to a device that serves ``tflite-int8`` keeps ``tflite-int8`` at the same generation.

The database is written first and the broker second: a publish that fails leaves the stored
state to be republished on the next (re)connect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sqlmodel import Session, col, select

from cloud.clock import to_ms
from cloud.errors import DeliveryError, PublishError
from cloud.models import (
    Bundle,
    DesiredFirmware,
    DesiredState,
    Device,
    FirmwareImage,
    ModelVariant,
    ModelVersion,
)
from cloud.services.publisher import DesiredPublisher
from cloud.services.signing import Signing
from cloud.sql_lists import in_list
from edgefleet_proto.v1 import common_pb2, desired_pb2
from model_tools.trial_policy import PolicySource, TrialPolicy, TrialPolicyError, parse_trial_policy, resolve

__all__ = [
    "BatchPublisher",
    "compose",
    "fleet_payloads",
    "model_ref",
    "override",
    "publish",
    "seal",
    "trial_policy",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _ModelPart:
    row: DesiredState
    model: ModelVersion
    variant: ModelVariant | None
    bundle: Bundle | None


def model_ref(
    model: ModelVersion, variant: ModelVariant | None = None, bundle: Bundle | None = None
) -> common_pb2.ModelRef:
    """The artifact a device is told to run: the chosen variant's (the version's own without one)."""
    ref = common_pb2.ModelRef(
        name=model.name,
        version=model.version,
        format=variant.format if variant else model.format,
        sha256=variant.sha256 if variant else model.sha256,
        length=variant.length if variant else model.length,
        variant=variant.variant if variant else "",
        precision=variant.precision if variant else "",
    )
    if bundle is not None:
        ref.profile.CopyFrom(
            common_pb2.ArtifactRef(
                sha256=bundle.profile_sha256,
                length=bundle.profile_length,
                media_type=bundle.profile_media_type,
            )
        )
    return ref


def override(policy: TrialPolicy | None, source: PolicySource) -> dict[str, Any] | None:
    """What an assignment row stores for a policy an operator or a rollout set (None: nothing set)."""
    return None if policy is None else {"source": source.value, "policy": policy.to_dict()}


def _stored(data: Any, what: str) -> TrialPolicy | None:
    if not data:
        return None
    try:
        return parse_trial_policy(data)
    except TrialPolicyError as e:
        # Validated when it was written; a row edited by hand since must not stop the whole fleet.
        log.error("ignoring the unusable %s: %s", what, e)
        return None


def trial_policy(row: DesiredState, bundle: Bundle | None) -> common_pb2.TrialPolicy:
    """The trial policy in force for a device: assignment > rollout plan > bundle default > built-in."""
    stored = row.trial_policy or {}
    own = _stored(stored.get("policy"), f"trial policy of device {row.device_id}")
    by_rollout = stored.get("source") == PolicySource.ROLLOUT.value
    manifest = bundle.manifest if bundle is not None else {}
    policy, source = resolve(
        assignment=None if by_rollout else own,
        rollout=own if by_rollout else None,
        bundle=_stored(manifest.get("trial_policy"), f"bundle trial policy of model {row.model_version_id}"),
    )
    return policy.to_proto(source)


def _firmware_ref(image: FirmwareImage) -> common_pb2.FirmwareRef:
    return common_pb2.FirmwareRef(
        name=image.name,
        version=image.version,
        hardware_id=image.hardware_id,
        target=image.target_path,
        sha256=image.sha256,
        length=image.length,
    )


def _model_parts(session: Session, device_ids: Sequence[str]) -> dict[str, _ModelPart]:
    rows = session.exec(
        select(DesiredState, ModelVersion, ModelVariant, Bundle)
        .join(ModelVersion, col(DesiredState.model_version_id) == col(ModelVersion.id))
        .outerjoin(ModelVariant, col(DesiredState.variant_id) == col(ModelVariant.id))
        .outerjoin(Bundle, col(Bundle.model_version_id) == col(ModelVersion.id))
        .where(in_list(DesiredState.device_id, device_ids))
    ).all()
    return {d.device_id: _ModelPart(d, m, v, b) for d, m, v, b in rows}


def _firmware_parts(
    session: Session, device_ids: Sequence[str]
) -> dict[str, tuple[DesiredFirmware, FirmwareImage]]:
    rows = session.exec(
        select(DesiredFirmware, FirmwareImage)
        .join(FirmwareImage, col(DesiredFirmware.firmware_image_id) == col(FirmwareImage.id))
        .where(in_list(DesiredFirmware.device_id, device_ids))
    ).all()
    return {row.device_id: (row, image) for row, image in rows}


def compose(
    session: Session, devices: Sequence[Device], *, fleet: str, artifact_endpoint: str
) -> list[desired_pb2.DesiredState]:
    """The full desired state of each device that has a model or firmware assigned, in input order.

    Call it inside the transaction that wrote the rows (before committing): signing afterwards may
    need a transaction of its own, which on SQLite must not wait behind this session's reads.
    """
    ids = [d.id for d in devices]
    if not ids:
        return []
    models = _model_parts(session, ids)
    firmware = _firmware_parts(session, ids)
    out: list[desired_pb2.DesiredState] = []
    for device in devices:
        part, fw = models.get(device.id), firmware.get(device.id)
        if part is None and fw is None:
            continue
        desired = desired_pb2.DesiredState(
            device_id=device.id, fleet=fleet, artifact_endpoint=artifact_endpoint
        )
        if part is not None:
            desired.generation = part.row.generation
            desired.issued_at_ms = to_ms(part.row.issued_at)
            desired.model.CopyFrom(model_ref(part.model, part.variant, part.bundle))
            desired.trial_policy.CopyFrom(trial_policy(part.row, part.bundle))
        else:
            assert fw is not None
            # Firmware only: no model field means "keep what you serve". The generation is one the
            # device already applied, so its model updater has nothing to do (and no trial to cut).
            desired.generation = max(1, device.applied_generation)
            desired.issued_at_ms = to_ms(fw[0].issued_at)
        if fw is not None:
            desired.firmware.CopyFrom(_firmware_ref(fw[1]))
        out.append(desired)
    return out


def seal(
    session: Session, states: Sequence[desired_pb2.DesiredState], signing: Signing | None
) -> list[tuple[str, bytes]]:
    """What each desired topic carries: the director's signed envelope (bare bytes without signing).

    The caller commits afterwards, before publishing: a counter a device has seen must never be
    handed out again.
    """
    if signing is None:
        return [(d.device_id, d.SerializeToString(deterministic=True)) for d in states]
    envelopes = signing.seal_many(session, states)
    return [(d.device_id, envelope) for d, envelope in zip(states, envelopes, strict=True)]


@runtime_checkable
class BatchPublisher(Protocol):
    """A publisher that hands many desired states to the broker at once (the MQTT transport)."""

    def publish_desired_many(self, payloads: Sequence[tuple[str, bytes]]) -> dict[str, str]:
        """Publish them all; returns device id -> why for those the broker did not take."""
        ...


def publish(publisher: DesiredPublisher, payloads: Sequence[tuple[str, bytes]]) -> None:
    """Hand each payload to the broker; DeliveryError names those it did not take (stored all the same)."""
    if isinstance(publisher, BatchPublisher):
        # One wait for the broker's acknowledgements per batch rather than one per device.
        refused = publisher.publish_desired_many(payloads)
        if refused:
            order = [d for d, _ in payloads if d in refused]
            raise DeliveryError(order, refused[order[0]])
        return
    failed: list[str] = []
    reason = ""
    for device_id, payload in payloads:
        try:
            publisher.publish_desired(device_id, payload)
        except PublishError as e:
            failed.append(device_id)
            reason = str(e)
    if failed:
        raise DeliveryError(failed, reason)


def fleet_payloads(
    session: Session, *, fleet: str, artifact_endpoint: str, signing: Signing | None = None
) -> list[tuple[str, bytes]]:
    """Every stored desired state of a fleet, sealed: what a reconnecting hub republishes."""
    with_model = select(DesiredState.device_id)
    with_firmware = select(DesiredFirmware.device_id)
    devices = session.exec(
        select(Device)
        .where(
            Device.fleet == fleet,
            col(Device.id).in_(with_model) | col(Device.id).in_(with_firmware),
        )
        .order_by(col(Device.id))
    ).all()
    states = compose(session, list(devices), fleet=fleet, artifact_endpoint=artifact_endpoint)
    payloads = seal(session, states, signing)
    session.commit()
    return payloads
