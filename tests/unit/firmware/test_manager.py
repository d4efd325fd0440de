"""The firmware manager: A/B install, trial boots, commit, fall back, delta and full paths.

The repository is an in-memory fake (helpers.FakeRepo) that hands out bundle bytes; the
slots and the boot-control file are real files in a temp folder.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.firmware.bootctl import BootControlFile
from edge_agent.firmware.machine import FirmwareState
from edge_agent.firmware.manager import FirmwareManager, FirmwareOffer
from firmware_images.build import Bundle, build_bundle, build_delta
from firmware_images.samples import SAMPLE_DIR, sample_bundle
from tests.unit.firmware.helpers import Events, FakeRepo, K, Restarts, signed

S = FirmwareState
V1 = sample_bundle("sim-board", "1.0.0")
V2 = sample_bundle("sim-board", "1.1.0")
OTHER = sample_bundle("other-board", "1.0.0")


class Device:
    """One device's firmware side, restartable like the agent process it lives in."""

    def __init__(
        self, root: Path, *, healthy: bool = True, bootlimit: int = 3, agent_version: str = "0.1.0"
    ) -> None:
        self.root = root
        self.events = Events()
        self.restarts = Restarts()
        self.healthy = healthy
        self.bootlimit = bootlimit
        self.agent_version = agent_version
        self.repo = FakeRepo()
        self.fw = self.start()
        self.fw.provision(SAMPLE_DIR / "edgefleet-fw-sim-board-1.0.0.efw")
        self.fw.boot()

    def start(self) -> FirmwareManager:
        async def health() -> bool:
            return self.healthy

        return FirmwareManager(
            self.root,
            hardware_id="sim-board",
            agent_version=self.agent_version,
            report=self.events,
            request_restart=self.restarts,
            health_check=health,
            bootlimit=self.bootlimit,
        )

    def restart(self) -> FirmwareState:
        """What a restart of the agent does: a fresh manager reads the boot-control file."""
        self.fw = self.start()
        return self.fw.boot()

    def offer(self, bundle: Bundle, delta: Bundle | None = None) -> FirmwareOffer:
        full = self.repo.add(signed(bundle), bundle.data)
        d = self.repo.add(signed(delta), delta.data) if delta is not None else None
        m = bundle.manifest
        return FirmwareOffer(m.name, m.version, m.hardware_id, full=full, delta=d)

    def install(self, offer: FirmwareOffer) -> bool:
        return asyncio.run(self.fw.install(offer, self.repo.download))

    def confirm(self) -> bool:
        return asyncio.run(self.fw.confirm())

    def bootctl(self) -> object:
        return BootControlFile(self.root / "bootctl.json").load()


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path / "fw")


def test_provisioned_device_runs_the_factory_image_on_slot_a(device: Device) -> None:
    assert device.fw.machine.state is S.IDLE
    assert device.fw.active_slot == "a"
    assert device.fw.running is not None and device.fw.running.version == "1.0.0"
    assert device.fw.slots.image_path("a").read_bytes() == V1.payload


def test_full_install_writes_the_inactive_slot_and_asks_for_a_restart(device: Device) -> None:
    assert device.install(device.offer(V2))
    assert device.fw.machine.state is S.REBOOT_PENDING
    assert device.restarts.count == 1
    control = device.fw.control
    assert (control.active, control.upgrade_available, control.boot_count) == ("b", True, 0)
    assert device.fw.slots.image_path("b").read_bytes() == V2.payload
    assert device.fw.slots.image_path("a").read_bytes() == V1.payload, "the running slot is never written"
    assert device.events.kinds == ["FIRMWARE_INSTALLED", "FIRMWARE_REBOOTING"]
    assert "from a full image" in device.events.reasons(K.EVENT_KIND_FIRMWARE_INSTALLED)[0]


def test_healthy_trial_boot_commits(device: Device) -> None:
    device.install(device.offer(V2))
    assert device.restart() is S.TRIAL
    assert device.fw.control.boot_count == 1
    assert device.confirm()
    control = device.fw.control
    assert (control.active, control.upgrade_available, control.boot_count) == ("b", False, 0)
    assert device.restart() is S.IDLE, "a committed slot boots without counting"
    assert device.fw.control.boot_count == 0
    assert device.events.kinds == [
        "FIRMWARE_INSTALLED",
        "FIRMWARE_REBOOTING",
        "FIRMWARE_BOOTED",
        "FIRMWARE_COMMITTED",
    ]


def test_unhealthy_image_falls_back_after_the_boot_limit(device: Device) -> None:
    device.healthy = False
    device.install(device.offer(V2))
    for boot in range(1, device.bootlimit + 1):
        assert device.restart() is S.TRIAL
        assert device.fw.control.boot_count == boot
        assert not device.confirm()
    assert device.restart() is S.IDLE
    control = device.fw.control
    assert control.active == "a" and not control.upgrade_available
    assert control.failed == ("1.1.0",)
    assert device.fw.running is not None and device.fw.running.version == "1.0.0"
    assert device.events.kinds.count("FIRMWARE_BOOTED") == device.bootlimit
    rolled = device.events.reasons(K.EVENT_KIND_FIRMWARE_ROLLED_BACK)
    assert rolled == [
        "firmware 1.1.0 did not pass its health check in 3 boots; running 1.0.0 on slot a again"
    ]
    # The same version is not tried again.
    device.healthy = True
    assert not device.install(device.offer(V2))
    assert "failed its trial on this device before" in device.events.reasons(K.EVENT_KIND_FIRMWARE_FAILED)[-1]


def test_a_crash_before_commit_counts_as_a_failed_boot(device: Device) -> None:
    device.install(device.offer(V2))
    for _ in range(device.bootlimit):
        assert device.restart() is S.TRIAL  # the image "crashed" before confirm() could run
    assert device.restart() is S.IDLE
    assert device.fw.active_slot == "a"


def test_delta_is_used_when_it_fits_the_running_image(device: Device) -> None:
    delta = build_delta(V1, V2)
    assert delta is not None
    offer = device.offer(V2, delta)
    assert device.install(offer)
    assert device.repo.fetched == [offer.delta.path if offer.delta else ""]
    assert device.fw.slots.image_path("b").read_bytes() == V2.payload
    assert "from a delta" in device.events.reasons(K.EVENT_KIND_FIRMWARE_INSTALLED)[0]


def test_a_delta_that_does_not_apply_falls_back_to_the_full_image(device: Device) -> None:
    # A delta built against another base, pinned (and so signed) as if it fitted this one.
    other_base = build_bundle(
        b"another base image" * 100, name=V1.manifest.name, version="0.9.0", hardware_id="sim-board"
    )
    delta = build_delta(other_base, V2, max_ratio=10)
    assert delta is not None
    lying = replace(
        signed(delta), custom={**delta.manifest.custom(), "base_payload_sha256": V1.manifest.payload_sha256}
    )
    offer = device.offer(V2)
    device.repo.add(lying, delta.data)
    offer = replace(offer, delta=lying)
    assert device.install(offer)
    assert device.repo.fetched == [lying.path, offer.full.path]
    assert device.fw.slots.image_path("b").read_bytes() == V2.payload
    assert "fetching the full image" in device.events.reasons(K.EVENT_KIND_FIRMWARE_FAILED)[0]


def test_a_delta_that_cannot_be_downloaded_falls_back_to_the_full_image(device: Device) -> None:
    delta = build_delta(V1, V2)
    assert delta is not None
    offer = device.offer(V2, delta)
    assert offer.delta is not None
    device.repo.fail.add(offer.delta.path)
    assert device.install(offer)
    assert device.repo.fetched == [offer.delta.path, offer.full.path]


def test_firmware_for_other_hardware_is_refused_before_any_download(device: Device) -> None:
    before = device.bootctl()
    assert not device.install(device.offer(OTHER))
    assert device.repo.fetched == []
    assert device.fw.machine.state is S.FAILED
    assert device.bootctl() == before
    assert (
        "is for hardware 'other-board'; this device is 'sim-board'"
        in device.events.reasons(K.EVENT_KIND_FIRMWARE_FAILED)[0]
    )


def test_firmware_for_a_newer_agent_is_refused(tmp_path: Path) -> None:
    device = Device(tmp_path / "fw", agent_version="0.1.0")
    newer = build_bundle(
        V2.payload, name=V2.manifest.name, version="1.2.0", hardware_id="sim-board", min_agent_version="9.0.0"
    )
    assert not device.install(device.offer(newer))
    assert (
        "needs agent 9.0.0 or newer; this agent is 0.1.0"
        in device.events.reasons(K.EVENT_KIND_FIRMWARE_FAILED)[0]
    )


@pytest.mark.parametrize(
    ("served", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "sha256 mismatch"),
        (lambda data: data + b"more", "more than the signed"),
    ],
    ids=["partial bundle", "flipped byte", "padded"],
)
def test_a_bundle_that_is_not_the_signed_one_is_refused(device: Device, served: object, message: str) -> None:
    before = device.bootctl()
    offer = device.offer(V2)
    device.repo.files[offer.full.path] = served(V2.data)  # type: ignore[operator]
    assert not device.install(offer)
    assert device.bootctl() == before
    assert device.fw.slots.image_path("b").exists() is False
    assert device.restarts.count == 0
    assert message in device.events.reasons(K.EVENT_KIND_FIRMWARE_FAILED)[0]


def test_a_manifest_that_differs_from_the_signed_custom_fields_is_refused(device: Device) -> None:
    offer = device.offer(V2)
    forged = replace(offer.full, custom={**offer.full.custom, "min_agent_version": "0.0.1"})
    assert not device.install(replace(offer, full=forged))
    assert "differs from the signed target metadata" in device.events.reasons(K.EVENT_KIND_FIRMWARE_FAILED)[0]


def test_a_damaged_trial_slot_is_not_committed(device: Device) -> None:
    device.install(device.offer(V2))
    device.restart()
    device.fw.slots.image_path("b").write_bytes(b"rotten")
    assert not device.confirm()
    assert device.fw.control.upgrade_available
    assert "does not hold" in device.events.reasons(K.EVENT_KIND_FIRMWARE_REBOOTING)[-1]


def test_installing_the_running_version_does_nothing(device: Device) -> None:
    assert device.install(device.offer(V1))
    assert device.repo.fetched == []
    assert device.events.kinds == []


def test_a_second_install_waits_while_one_is_on_trial(device: Device) -> None:
    device.install(device.offer(V2))
    device.restart()
    newer = build_bundle(V2.payload + b"!", name=V2.manifest.name, version="1.2.0", hardware_id="sim-board")
    assert not device.install(device.offer(newer))
    assert device.fw.machine.state is S.TRIAL
