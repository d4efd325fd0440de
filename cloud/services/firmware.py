"""Firmware images: register a bundle (and a delta from the previous image), assign it to devices.

A registered bundle is stored by content like any artifact, recorded in ``FirmwareImage``
and published as a TUF target whose custom fields repeat its manifest, so a device can
compare the manifest it reads with what the targets role signed. Registering a full
image also makes a delta from the newest older image of the same name and hardware
(the smaller of bsdiff4 and zstd, see ``firmware_images.delta``) when that pays off.

Assigning an image changes only the firmware part of each device's desired state; the whole
state is composed by ``cloud.services.desired``, so the model part (variant, artifact,
generation) stays exactly as it was. An image for other hardware than a chosen device reports
is refused before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.artifacts import ArtifactInfo, ArtifactStore, without_path
from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError, InvalidArtifactError, NotFoundError
from cloud.models import DesiredFirmware, Device, FirmwareImage
from cloud.services import desired
from cloud.services.labels import Selector, as_selector, selector_clause
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page
from cloud.services.publisher import DesiredPublisher
from cloud.services.signing import Signing
from cloud.tuf.metadata import TargetSpec
from cloud.tuf.sync import firmware_target_path
from firmware_images.build import Bundle, build_delta, load_bundle
from firmware_images.format import BundleError, BundleKind, Manifest, compare_versions

__all__ = ["HardwareMismatchError", "assign_firmware", "list_firmware", "page_firmware", "register_bundle"]

log = logging.getLogger(__name__)


def _row_for(manifest: Manifest, info: ArtifactInfo, clock: Clock) -> FirmwareImage:
    base = manifest.base_version if manifest.kind is BundleKind.DELTA else ""
    return FirmwareImage(
        name=manifest.name,
        hardware_id=manifest.hardware_id,
        version=manifest.version,
        kind=manifest.kind.value,
        base_version=base,
        min_agent_version=manifest.min_agent_version,
        algorithm=manifest.algorithm,
        target_path=firmware_target_path(
            manifest.name, manifest.hardware_id, manifest.version, info.sha256, base_version=base
        ),
        sha256=info.sha256,
        length=info.length,
        payload_sha256=manifest.payload_sha256,
        payload_length=manifest.payload_length,
        created_at=clock(),
    )


def _spec(row: FirmwareImage, manifest: Manifest) -> TargetSpec:
    custom = {**manifest.custom(), "hardware": [row.hardware_id]}
    return TargetSpec(row.target_path, row.sha256, row.length, custom)


def _previous_full(session: Session, manifest: Manifest) -> FirmwareImage | None:
    rows = session.exec(
        select(FirmwareImage).where(
            FirmwareImage.name == manifest.name,
            FirmwareImage.hardware_id == manifest.hardware_id,
            FirmwareImage.kind == BundleKind.FULL.value,
        )
    ).all()
    older = [r for r in rows if compare_versions(r.version, manifest.version) < 0]
    if not older:
        return None
    newest = older[0]
    for r in older[1:]:
        if compare_versions(r.version, newest.version) > 0:
            newest = r
    return newest


def register_bundle(
    session: Session, store: ArtifactStore, signing: Signing, info: ArtifactInfo, *, clock: Clock = utcnow
) -> list[FirmwareImage]:
    """Register a bundle already in the store; returns its row and, for a full image, a delta's."""
    try:
        bundle = load_bundle(store.path(info.sha256))
    except BundleError as e:
        said = without_path(str(e), store.path(info.sha256), f"artifact {info.sha256}")
        raise InvalidArtifactError(f"not a firmware bundle: {said}") from e
    manifest = bundle.manifest
    rows = [(_row_for(manifest, info, clock), manifest)]
    if manifest.kind is BundleKind.FULL:
        previous = _previous_full(session, manifest)
        if previous is not None:
            delta = _make_delta(store, previous, bundle, clock)
            if delta is not None:
                rows.append(delta)
    for row, _ in rows:
        session.add(row)
    try:
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(
            f"firmware {manifest.name} {manifest.version} for {manifest.hardware_id} is already registered"
        ) from e
    specs = [_spec(row, m) for row, m in rows]
    if len(rows) > 1:
        # The full image's target names its delta, keyed by the image the delta applies to: a device
        # finds the delta for what it runs in metadata the targets role signed.
        delta_row, delta_manifest = rows[1]
        full = specs[0]
        deltas = {delta_manifest.base_payload_sha256: delta_row.target_path}
        specs[0] = TargetSpec(full.path, full.sha256, full.length, {**full.custom, "deltas": deltas})
    signing.repo.update_targets(add=specs)
    for row, _ in rows:
        session.refresh(row)
        log.info("registered firmware %s %s (%s) for %s", row.name, row.version, row.kind, row.hardware_id)
    return [row for row, _ in rows]


def _make_delta(
    store: ArtifactStore, previous: FirmwareImage, new: Bundle, clock: Clock
) -> tuple[FirmwareImage, Manifest] | None:
    try:
        base = load_bundle(store.path(previous.sha256))
        delta = build_delta(base, new)
    except BundleError as e:
        log.warning("no delta from firmware %s to %s: %s", previous.version, new.manifest.version, e)
        return None
    if delta is None:
        return None
    info = store.put_bytes(delta.data)
    return _row_for(delta.manifest, info, clock), delta.manifest


def list_firmware(session: Session, name: str | None = None) -> list[FirmwareImage]:
    query = select(FirmwareImage)
    if name is not None:
        query = query.where(FirmwareImage.name == name)
    return list(session.exec(query.order_by(col(FirmwareImage.name), col(FirmwareImage.created_at))).all())


def page_firmware(
    session: Session, name: str | None = None, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[FirmwareImage]:
    """A page of ``list_firmware``: by name, then oldest first."""
    query = select(FirmwareImage)
    if name is not None:
        query = query.where(FirmwareImage.name == name)
    return keyset_page(
        session,
        query,
        [FirmwareImage.name, FirmwareImage.created_at, FirmwareImage.id],
        listing="firmware",
        key_of=lambda f: (f.name, f.created_at, f.id or 0),
        limit=limit,
        cursor=cursor,
    )


def _full_image(session: Session, name: str, version: str, hardware_id: str | None) -> FirmwareImage:
    query = select(FirmwareImage).where(
        FirmwareImage.name == name,
        FirmwareImage.version == version,
        FirmwareImage.kind == BundleKind.FULL.value,
    )
    if hardware_id is not None:
        query = query.where(FirmwareImage.hardware_id == hardware_id)
    rows = session.exec(query).all()
    if not rows:
        raise NotFoundError(f"firmware {name} {version} is not registered")
    if len(rows) > 1:
        raise ConflictError(
            f"firmware {name} {version} exists for several hardware ids "
            f"({', '.join(sorted(r.hardware_id for r in rows))}): name one with --hardware"
        )
    return rows[0]


class HardwareMismatchError(ConflictError):
    """A firmware image assigned to devices of other hardware; nothing was assigned."""

    def __init__(self, image: FirmwareImage, mismatched: Mapping[str, str]) -> None:
        self.mismatched = dict(sorted(mismatched.items()))
        shown = "; ".join(
            f"device {d} is {hw!r}" if hw else f"device {d} reports no hardware id (it takes no firmware)"
            for d, hw in list(self.mismatched.items())[:10]
        )
        more = f" (and {len(self.mismatched) - 10} more)" if len(self.mismatched) > 10 else ""
        super().__init__(
            f"image {image.name} {image.version} is for hardware {image.hardware_id!r}; {shown}{more}; "
            "nothing was assigned"
        )


def _check_hardware(image: FirmwareImage, devices: Sequence[Device]) -> None:
    # Refused here rather than by each device: an image flashed onto the wrong board bricks it, and
    # a request that half succeeds (matching devices only) is easy to misread as done.
    mismatched = {d.id: d.hardware_id for d in devices if d.hardware_id != image.hardware_id}
    if mismatched:
        raise HardwareMismatchError(image, mismatched)


def _chosen_devices(
    session: Session,
    fleet: str,
    device_ids: Sequence[str] | None,
    selector: Selector | str | Mapping[str, str] | None,
) -> list[Device]:
    query = select(Device).where(Device.fleet == fleet).order_by(col(Device.id))
    if device_ids is not None:
        wanted = set(device_ids)
        devices = list(session.exec(query.where(col(Device.id).in_(sorted(wanted)))).all())
        missing = wanted - {d.id for d in devices}
        if missing:
            raise NotFoundError(f"unknown devices: {', '.join(sorted(missing))}")
    else:
        # Matched in SQL over the effective labels (DeviceLabel).
        chosen = as_selector(selector) if selector else None
        devices = list(session.exec(query.where(selector_clause(chosen)) if chosen else query).all())
    if not devices:
        raise NotFoundError(f"no device in fleet {fleet!r} matches")
    return devices


def assign_firmware(
    session: Session,
    signing: Signing,
    publisher: DesiredPublisher,
    name: str,
    version: str,
    *,
    device_ids: Sequence[str] | None = None,
    selector: Mapping[str, str] | None = None,
    hardware_id: str | None = None,
    fleet: str,
    artifact_endpoint: str,
    clock: Clock = utcnow,
) -> list[str]:
    """Make ``name`` ``version`` the desired firmware of the chosen devices; sign and publish.

    The model part of each device's desired state stays as it is (same variant, same generation).
    Raises HardwareMismatchError, assigning nothing, when any chosen device is other hardware.
    """
    image = _full_image(session, name, version, hardware_id)
    devices = _chosen_devices(session, fleet, device_ids, selector)
    _check_hardware(image, devices)
    assert image.id is not None
    now = clock()
    for device in devices:
        row = session.get(DesiredFirmware, device.id)
        if row is None:
            row = DesiredFirmware(device_id=device.id, firmware_image_id=image.id, issued_at=now)
        row.firmware_image_id, row.issued_at = image.id, now
        session.add(row)
    session.flush()
    states = desired.compose(session, devices, fleet=fleet, artifact_endpoint=artifact_endpoint)
    session.commit()
    payloads = desired.seal(session, states, signing)
    session.commit()
    desired.publish(publisher, payloads)
    log.info("assigned firmware %s %s to %d device(s)", name, version, len(payloads))
    return [d for d, _ in payloads]
