"""Attacks on firmware: other hardware, partial bundles, manifests that lie, unlisted images.

The device runs firmware 1.0.0 on slot a; each case offers 1.1.0 (or something posing as
it) and asserts the slots and the boot-control file did not move, with a reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edge_agent.firmware.bootctl import BootControlFile
from edgefleet_proto.v1 import common_pb2
from firmware_images.build import Bundle, build_bundle, build_delta
from firmware_images.samples import sample_bundle
from tests.adversarial.conftest import World
from tests.adversarial.harness import DEVICE, FLEET

V1 = sample_bundle("sim-board", "1.0.0")
V2 = sample_bundle("sim-board", "1.1.0")
OTHER = sample_bundle("other-board", "1.0.0")


@dataclass
class Offer:
    ref: common_pb2.FirmwareRef


def publish(
    w: World,
    bundle: Bundle,
    *,
    custom: dict[str, object] | None = None,
    path: str | None = None,
    deltas: dict[str, str] | None = None,
) -> common_pb2.FirmwareRef:
    m = bundle.manifest
    path = path or f"firmware/{m.name}/{m.hardware_id}/{m.version}/{bundle.sha256}.efw"
    fields = {**m.custom(), "hardware": [m.hardware_id], **(custom or {})}
    if deltas:
        fields["deltas"] = deltas
    w.sim.add_target(path, bundle.data, fields)
    w.sim.publish()
    return common_pb2.FirmwareRef(
        name=m.name,
        version=m.version,
        hardware_id=m.hardware_id,
        target=path,
        sha256=bundle.sha256,
        length=bundle.length,
    )


def offer(w: World, ref: common_pb2.FirmwareRef) -> bytes:
    w.generation += 1
    return w.sim.desired(DEVICE, FLEET, generation=w.generation, firmware=ref)


def other_hardware(w: World) -> bytes:
    return offer(w, publish(w, OTHER))


def partial_bundle(w: World) -> bytes:
    ref = publish(w, V2)
    w.sim.swap_artifacts[V2.sha256] = V2.data[: V2.length - 1000]
    return offer(w, ref)


def lying_manifest(w: World) -> bytes:
    """The signed target says one thing of the image; the bundle's own manifest another."""
    return offer(w, publish(w, V2, custom={"min_agent_version": "0.0.1"}))


def wrong_hardware_in_signed_target(w: World) -> bytes:
    """A bundle for other hardware, signed as if it were for this device's."""
    fake = build_bundle(OTHER.payload, name=V2.manifest.name, version="1.1.0", hardware_id="other-board")
    ref = publish(w, fake, custom={"hardware_id": "sim-board", "hardware": ["sim-board"]})
    ref.hardware_id = "sim-board"
    return offer(w, ref)


def unlisted(w: World) -> bytes:
    w.sim.blobs[V2.sha256] = V2.data
    m = V2.manifest
    ref = common_pb2.FirmwareRef(
        name=m.name,
        version=m.version,
        hardware_id=m.hardware_id,
        target="firmware/edgefleet-fw/sim-board/1.1.0/unlisted.efw",
        sha256=V2.sha256,
        length=V2.length,
    )
    return offer(w, ref)


def director_repo_mismatch(w: World) -> bytes:
    ref = publish(w, V2)
    ref.sha256 = OTHER.sha256
    ref.length = OTHER.length
    return offer(w, ref)


def newer_agent_needed(w: World) -> bytes:
    needy = build_bundle(
        V2.payload, name=V2.manifest.name, version="1.1.0", hardware_id="sim-board", min_agent_version="9.0.0"
    )
    return offer(w, publish(w, needy))


FIRMWARE_ATTACKS: list[tuple[str, Callable[[World], bytes], tuple[str, ...]]] = [
    ("firmware for other hardware", other_hardware, ("is for hardware 'other-board'",)),
    ("partial bundle", partial_bundle, ("truncated",)),
    ("manifest differs from the signed target", lying_manifest, ("differs from the signed target metadata",)),
    (
        "other hardware signed as this hardware",
        wrong_hardware_in_signed_target,
        ("differs from the signed target",),
    ),
    ("firmware target the repository does not list", unlisted, ("repository_mismatch", "does not list")),
    ("director and repository disagree on the image", director_repo_mismatch, ("repository_mismatch",)),
    ("firmware for a newer agent", newer_agent_needed, ("needs agent 9.0.0",)),
]


@pytest.mark.parametrize(
    ("stage", "expected"), [c[1:] for c in FIRMWARE_ATTACKS], ids=[c[0] for c in FIRMWARE_ATTACKS]
)
def test_firmware_attacks(world: World, stage: Callable[[World], bytes], expected: tuple[str, ...]) -> None:
    bootctl = BootControlFile(world.device.firmware.slots.root / "bootctl.json")
    before = bootctl.load()
    outcome = world.apply(stage(world))
    assert not outcome.installed, outcome
    text = f"{outcome.code}: {outcome.reason}"
    for fragment in expected:
        assert fragment in text, text
    assert bootctl.load() == before, "the boot-control file moved"
    assert not world.device.firmware.slots.image_path("b").exists(), "the inactive slot was written"
    assert world.device.restarts.count == 0
    world.device.firmware.slots.verify("a", before.slots["a"])  # the running image is intact


def test_signed_delta_installs_and_a_broken_delta_falls_back_to_the_full_image(world: World) -> None:
    """Control: a valid delta installs; a delta whose bytes were swapped falls back to the full image."""
    delta = build_delta(V1, V2)
    assert delta is not None
    d = delta.manifest
    delta_path = f"firmware/{d.name}/{d.hardware_id}/{d.base_version}-{d.version}/{delta.sha256}.efwd"
    world.sim.add_target(delta_path, delta.data, {**d.custom(), "hardware": [d.hardware_id]})
    ref = publish(world, V2, deltas={V1.manifest.payload_sha256: delta_path})
    world.sim.swap_artifacts[delta.sha256] = delta.data[:-5] + bytes(5)  # the delta arrives damaged
    outcome = world.apply(offer(world, ref))
    assert outcome.installed, outcome
    assert world.device.firmware.slots.image_path("b").read_bytes() == V2.payload
    assert world.device.restarts.count == 1
    reasons = " ".join(r for _, r, _ in world.device.events.seen)
    assert "fetching the full image" in reasons
