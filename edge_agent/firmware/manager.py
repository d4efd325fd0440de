"""Firmware updates on A/B slots: install to the inactive slot, restart, commit or fall back.

:meth:`FirmwareManager.boot` is the boot loader's part and runs first at every start:
with an update on trial it counts the boot, and past the boot limit it goes back to the
old slot. :meth:`confirm` is user space's part: a health check, then the commit (or one
more restart, which the next :meth:`boot` counts). :meth:`install` walks the firmware
state machine for one image offered by the director and resolved in signed metadata:
download a delta when one fits the running image (the full bundle when it does not, or
when the delta fails), verify against the signed target, write the inactive slot, switch
the boot-control file and ask for a restart. Every step is an event; the running slot is
never written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from edge_agent.details import DetailValue
from edge_agent.errors import AgentError, DownloadError, StateFileError, StoreError, VerifyError
from edge_agent.firmware.bootctl import DEFAULT_BOOTLIMIT, BootControl, BootControlFile, SlotImage, SlotName
from edge_agent.firmware.machine import FirmwareEvent, FirmwareMachine, FirmwareState
from edge_agent.firmware.slots import SlotStore
from edge_agent.logs import Log
from edge_agent.trust.errors import IncompatibleFirmwareError
from edge_agent.trust.targets import SignedTarget, verify_file
from edgefleet_proto.v1 import event_pb2
from firmware_images.delta import apply_delta
from firmware_images.format import (
    BundleError,
    BundleKind,
    Manifest,
    check_matches_custom,
    compare_versions,
    iter_payload,
    read_manifest,
)

__all__ = ["FirmwareManager", "FirmwareOffer", "FirmwareReporter"]

log = logging.getLogger(__name__)
K = event_pb2.EventKind
E, S = FirmwareEvent, FirmwareState


class FirmwareReporter(Protocol):
    def __call__(
        self,
        kind: event_pb2.EventKind.ValueType,
        reason: str = "",
        *,
        details: Mapping[str, DetailValue] | None = None,
    ) -> None: ...


class Downloader(Protocol):
    """Fetches a target's bytes into ``dest`` (resuming is the downloader's business); verifies nothing."""

    def __call__(self, target: SignedTarget, dest: Path) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class FirmwareOffer:
    """An image the director asked for: its full bundle and, when one exists, a delta from what runs."""

    name: str
    version: str
    hardware_id: str
    full: SignedTarget
    delta: SignedTarget | None = None


@dataclass(slots=True)
class _Attempt:
    offer: FirmwareOffer
    target: SignedTarget
    path: Path | None = None
    manifest: Manifest | None = None
    image: bytes | None = None  # a patched image, held until written


def _image_of(manifest: Manifest) -> SlotImage:
    return SlotImage(
        name=manifest.name,
        version=manifest.version,
        hardware_id=manifest.hardware_id,
        payload_sha256=manifest.payload_sha256,
        payload_length=manifest.payload_length,
    )


class FirmwareManager:
    """A/B firmware slots of one device."""

    def __init__(
        self,
        root: Path,
        *,
        hardware_id: str,
        agent_version: str,
        report: FirmwareReporter,
        request_restart: Callable[[], None],
        health_check: Callable[[], Awaitable[bool]] | None = None,
        bootlimit: int = DEFAULT_BOOTLIMIT,
        logger: Log = log,
    ) -> None:
        self._log = logger
        self.slots = SlotStore(root)
        self._file = BootControlFile(root / "bootctl.json")
        self._hardware_id = hardware_id
        self._agent_version = agent_version
        self._report = report
        self._request_restart = request_restart
        self._health_check = health_check
        self._bootlimit = bootlimit
        self.machine = FirmwareMachine()
        self.control = BootControl(bootlimit=bootlimit)
        self.last_failure = ""

    # -- what others read ------------------------------------------------------------------------

    @property
    def running(self) -> SlotImage | None:
        return self.control.running

    @property
    def active_slot(self) -> str:
        return self.control.active

    # -- provisioning ----------------------------------------------------------------------------

    def provision(self, bundle: Path) -> None:
        """Write a factory image into slot a, committed, when the device has no image yet."""
        control = self._file.load(bootlimit=self._bootlimit)
        if control.running is not None:
            return
        with bundle.open("rb") as f:
            manifest = read_manifest(f)
            if manifest.kind is not BundleKind.FULL:
                raise BundleError(f"factory image {bundle.name} is a delta: expected a full bundle")
            self._check_compatible(manifest.hardware_id, manifest.min_agent_version, manifest.version)
            image = _image_of(manifest)
            self.slots.write("a", iter_payload(f, manifest), image)
        self._save(BootControl(active="a", bootlimit=self._bootlimit).with_slot("a", image))

    # -- boot loader -------------------------------------------------------------------------------

    def boot(self) -> FirmwareState:
        """Decide which slot runs, as a boot loader with bootcount would; call once per start."""
        control = self.control = self._file.load(bootlimit=self._bootlimit)
        if not control.upgrade_available:
            self.machine = FirmwareMachine(S.IDLE)
            return S.IDLE
        self.machine = FirmwareMachine(S.REBOOT_PENDING)
        count = control.boot_count + 1
        trial = control.running
        version = trial.version if trial is not None else "?"
        if count > control.bootlimit:
            self._fall_back(f"firmware {version} did not pass its health check in {control.bootlimit} boots")
            return self.machine.state
        self._save(replace(control, boot_count=count))
        self.machine.post(E.BOOTED)
        self._report(
            K.EVENT_KIND_FIRMWARE_BOOTED,
            f"booted firmware {version} on slot {control.active} on trial ({count} of {control.bootlimit})",
            details={"slot": control.active, "version": version, "boot_count": count},
        )
        return S.TRIAL

    def _fall_back(self, reason: str) -> None:
        control = self.control
        failed = control.running
        back = replace(control, active=control.inactive, upgrade_available=False, boot_count=0)
        if failed is not None:
            back = back.with_failed(failed.version)
        self._save(back)
        self.machine.post(E.FELL_BACK)
        old = back.running
        where = f"{old.version} on slot {back.active}" if old is not None else f"slot {back.active}"
        self.last_failure = reason
        self._report(
            K.EVENT_KIND_FIRMWARE_ROLLED_BACK,
            f"{reason}; running {where} again",
            details={"slot": back.active, "failed_version": failed.version if failed else ""},
        )

    # -- user space: health and commit ---------------------------------------------------------------

    async def confirm(self) -> bool:
        """On trial: commit when the image verifies and the health check passes, else restart again."""
        if self.machine.state is not S.TRIAL:
            return self.machine.state is S.IDLE
        control = self.control
        image = control.running
        reason = ""
        try:
            if image is None:
                raise VerifyError(f"slot {control.active} is on trial but holds no image")
            await asyncio.to_thread(self.slots.verify, control.active, image)
            if self._health_check is not None and not await self._health_check():
                reason = "the health check failed"
        except VerifyError as e:
            reason = str(e)
        if reason:
            self.machine.post(E.UNHEALTHY)
            self.last_failure = reason
            self._report(
                K.EVENT_KIND_FIRMWARE_REBOOTING,
                f"firmware on slot {control.active} is not healthy ({reason}); restarting "
                f"(boot {control.boot_count} of {control.bootlimit})",
                details={"slot": control.active},
            )
            self._request_restart()
            return False
        assert image is not None
        self._save(replace(control, upgrade_available=False, boot_count=0))
        self.machine.post(E.HEALTHY)
        self.last_failure = ""
        self._report(
            K.EVENT_KIND_FIRMWARE_COMMITTED,
            f"firmware {image.version} on slot {control.active} committed after its health check",
            details={"slot": control.active, "version": image.version},
        )
        return True

    # -- install -----------------------------------------------------------------------------------

    async def install(self, offer: FirmwareOffer, download: Downloader) -> bool:
        """Install ``offer`` to the inactive slot and ask for a restart; False when it did not happen."""
        running = self.control.running
        same = (offer.name, offer.version, offer.hardware_id)
        if running is not None and (running.name, running.version, running.hardware_id) == same:
            return True
        if self.machine.state in {S.TRIAL, S.REBOOT_PENDING}:
            self._log.info("firmware %s waits: an update is on trial", offer.version)
            return False
        if self.machine.state is S.FAILED:
            self.machine.post(E.RETRY)
        try:
            self._check_offer(offer)
        except (IncompatibleFirmwareError, BundleError) as e:
            self.machine.post(E.FAIL)
            self._fail(offer, str(e), getattr(e, "code", "bundle"))
            return False
        attempt = _Attempt(offer, self._pick(offer))
        self.machine.post(E.FETCH)
        steps = {
            S.DOWNLOADING: self._download,
            S.VERIFYING: self._verify,
            S.PATCHING: self._patch,
            S.WRITING: self._write,
        }
        state: FirmwareState = self.machine.state
        while state in steps:
            try:
                event = await steps[state](attempt, download)
            except AgentError as e:  # a step's own refusal not mapped to an event: fail the attempt
                self._fail(offer, f"{state.value}: {e}", "error")
                event = E.FAIL
            state = self.machine.post(event)
        return state is S.REBOOT_PENDING

    def _check_offer(self, offer: FirmwareOffer) -> None:
        if offer.hardware_id != self._hardware_id:
            raise IncompatibleFirmwareError(
                f"firmware {offer.name} {offer.version} is for hardware {offer.hardware_id!r}; "
                f"this device is {self._hardware_id!r}"
            )
        custom = offer.full.custom
        self._check_compatible(
            str(custom.get("hardware_id", "")), str(custom.get("min_agent_version", "")), offer.version
        )
        if offer.version in self.control.failed:
            raise IncompatibleFirmwareError(
                f"firmware {offer.version} failed its trial on this device before; expected a newer version"
            )

    def _check_compatible(self, hardware_id: str, min_agent_version: str, version: str) -> None:
        if hardware_id != self._hardware_id:
            raise IncompatibleFirmwareError(
                f"firmware {version} is signed for hardware {hardware_id!r}; "
                f"this device is {self._hardware_id!r}"
            )
        try:
            too_old = compare_versions(self._agent_version, min_agent_version) < 0
        except BundleError as e:
            raise IncompatibleFirmwareError(f"firmware {version}: {e}") from e
        if too_old:
            raise IncompatibleFirmwareError(
                f"firmware {version} needs agent {min_agent_version} or newer; "
                f"this agent is {self._agent_version}"
            )

    def _pick(self, offer: FirmwareOffer) -> SignedTarget:
        running = self.control.running
        delta = offer.delta
        if (
            delta is not None
            and running is not None
            and delta.custom.get("base_payload_sha256") == running.payload_sha256
        ):
            return delta
        return offer.full

    def _fall_back_to_full(self, attempt: _Attempt, reason: str) -> FirmwareEvent:
        self._report(
            K.EVENT_KIND_FIRMWARE_FAILED,
            f"delta for firmware {attempt.offer.version} unusable ({reason}); fetching the full image",
            details={"target": attempt.target.path, "fallback": "full"},
        )
        self._discard(attempt)
        attempt.target, attempt.manifest, attempt.image = attempt.offer.full, None, None
        return E.DELTA_FAILED

    def _fail(self, offer: FirmwareOffer, reason: str, check: str) -> None:
        self.last_failure = reason
        self._log.warning("firmware %s %s refused: %s", offer.name, offer.version, reason)
        self._report(
            K.EVENT_KIND_FIRMWARE_FAILED,
            reason,
            details={"version": offer.version, "check": check, "slot": self.control.active},
        )

    def _discard(self, attempt: _Attempt) -> None:
        if attempt.path is not None:
            attempt.path.unlink(missing_ok=True)
            attempt.path = None

    # -- steps ---------------------------------------------------------------------------------

    async def _download(self, attempt: _Attempt, download: Downloader) -> FirmwareEvent:
        dest = self.slots.partial_dir / f"{attempt.target.sha256}.part"
        try:
            await download(attempt.target, dest)
        except DownloadError as e:
            if attempt.target is not attempt.offer.full:
                return self._fall_back_to_full(attempt, str(e))
            self._fail(attempt.offer, f"firmware download failed: {e}", "download")
            return E.FAIL
        attempt.path = dest
        return E.DONE

    async def _verify(self, attempt: _Attempt, _download: Downloader) -> FirmwareEvent:
        assert attempt.path is not None
        target, is_delta = attempt.target, attempt.target is not attempt.offer.full
        try:
            await asyncio.to_thread(verify_file, attempt.path, target)
            with attempt.path.open("rb") as f:
                manifest = read_manifest(f)
            check_matches_custom(manifest, target.custom)
            if manifest.version != attempt.offer.version or manifest.name != attempt.offer.name:
                raise BundleError(
                    f"bundle is {manifest.name} {manifest.version}; the director asked for "
                    f"{attempt.offer.name} {attempt.offer.version}"
                )
            self._check_compatible(manifest.hardware_id, manifest.min_agent_version, manifest.version)
        except (VerifyError, BundleError, IncompatibleFirmwareError) as e:
            self._discard(attempt)
            if is_delta:
                return self._fall_back_to_full(attempt, str(e))
            self._fail(attempt.offer, f"firmware bundle refused: {e}", getattr(e, "code", "verify"))
            return E.FAIL
        attempt.manifest = manifest
        return E.DELTA if manifest.kind is BundleKind.DELTA else E.FULL

    async def _patch(self, attempt: _Attempt, _download: Downloader) -> FirmwareEvent:
        manifest, running = attempt.manifest, self.control.running
        assert manifest is not None and attempt.path is not None
        try:
            if running is None or running.payload_sha256 != manifest.base_payload_sha256:
                raise BundleError(f"delta applies to base {manifest.base_version}, not to the running image")
            base = await asyncio.to_thread(self.slots.read, self.control.active, running)
            patch = await asyncio.to_thread(_read_stored, attempt.path, manifest)
            attempt.image = await asyncio.to_thread(
                apply_delta,
                base,
                patch,
                manifest.algorithm,
                expected_sha256=manifest.payload_sha256,
                expected_length=manifest.payload_length,
            )
        except (BundleError, VerifyError) as e:
            return self._fall_back_to_full(attempt, str(e))
        return E.DONE

    async def _write(self, attempt: _Attempt, _download: Downloader) -> FirmwareEvent:
        manifest = attempt.manifest
        assert manifest is not None and attempt.path is not None
        image = _image_of(manifest)
        control = self.control
        slot = control.inactive
        try:
            if attempt.image is not None:
                await asyncio.to_thread(self.slots.write, slot, [attempt.image], image)
            else:
                await asyncio.to_thread(_write_from_bundle, self.slots, slot, attempt.path, manifest, image)
            # The switch: from here the next start boots the new slot on trial.
            switched = replace(
                control.with_slot(slot, image), active=slot, upgrade_available=True, boot_count=0
            )
            self._save(switched)
        except (StoreError, BundleError, StateFileError) as e:
            self._fail(attempt.offer, f"cannot write firmware slot {slot}: {e}", "write")
            return E.FAIL
        finally:
            self._discard(attempt)
        via = f"delta ({manifest.algorithm})" if manifest.kind is BundleKind.DELTA else "full image"
        self._report(
            K.EVENT_KIND_FIRMWARE_INSTALLED,
            f"firmware {image.version} written to slot {slot} from a {via}",
            details={"slot": slot, "version": image.version, "via": via},
        )
        self._report(
            K.EVENT_KIND_FIRMWARE_REBOOTING,
            f"restarting into firmware {image.version} on slot {slot}",
            details={"slot": slot, "version": image.version},
        )
        self._request_restart()
        return E.DONE

    def _save(self, control: BootControl) -> None:
        self._file.save(control)
        self.control = control


def _read_stored(path: Path, manifest: Manifest) -> bytes:
    with path.open("rb") as f:
        read_manifest(f)
        return b"".join(iter_payload(f, manifest))


def _write_from_bundle(
    slots: SlotStore, slot: SlotName, path: Path, manifest: Manifest, image: SlotImage
) -> None:
    with path.open("rb") as f:
        read_manifest(f)
        slots.write(slot, iter_payload(f, manifest), image)
