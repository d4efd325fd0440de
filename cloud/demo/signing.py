"""The demo's signed-update step: rotate a key mid-demo, refuse a forgery, ship firmware as a delta.

What it shows, with the fleet already serving the model:

1. ``fleet keys rotate targets`` (the CLI command's own code, against the running hub):
   a new targets key, a new root version; devices follow the root chain on their next
   refresh and keep updating;
2. a desired state forged by whoever holds the broker (signed with a key of its own,
   published on a device's topic) is refused by that device, which keeps its model;
3. firmware 1.1.0 goes to every device through the rotated keys: a signed delta from
   1.0.0 (a few percent of the image), written to the inactive slot, a restart, a health
   check and a commit, each reported as an event.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from rich.console import Console

from cloud.client.hub import HubClient
from cloud.client.signing import SigningClient
from cloud.transport.broker import BrokerHandle
from cloud.tuf.keys import generate_signer
from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import desired_pb2
from firmware_images.samples import SAMPLE_DIR, SampleImage

__all__ = ["fleet_args", "provision_root", "run_signing_step"]

HARDWARE = "sim-board"
FACTORY = SampleImage(HARDWARE, "1.0.0")
UPDATE = SampleImage(HARDWARE, "1.1.0")


def provision_root(root: bytes, work: Path) -> Path:
    """Write the root devices are provisioned with (what `fleet keys root --out` downloads)."""
    path = work / "root.json"
    path.write_bytes(root)
    return path


def fleet_args(root_file: Path, api_url: str) -> list[str]:
    """Simulator options: the trusted root, TUF over HTTP as fallback, firmware slots with 1.0.0."""
    return [
        "--trust-root", str(root_file),
        "--trust-http-url", f"{api_url}/tuf",
        "--firmware-hardware", HARDWARE,
        "--firmware-factory", str(SAMPLE_DIR / FACTORY.file_name),
    ]  # fmt: skip


def _forge(broker: BrokerHandle, fleet: str, device_id: str) -> None:
    """Publish a desired state signed by a key the fleet's root does not name (not retained)."""
    forged = desired_pb2.DesiredState(device_id=device_id, fleet=fleet, generation=10_000, counter=10_000)
    forged.expires_at_ms = int((time.time() + 3600) * 1000)
    payload = forged.SerializeToString()
    signer = generate_signer()
    sig = signer.sign(payload)
    envelope = desired_pb2.SignedDesiredState(payload=payload)
    envelope.signatures.add(keyid=sig.keyid, sig=bytes.fromhex(sig.signature))
    version = MQTTProtocolVersion.MQTTv5 if broker.protocol == "5" else MQTTProtocolVersion.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"forger-{uuid.uuid4().hex[:8]}", protocol=version
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(DeviceTopics(fleet, device_id).desired, envelope.SerializeToString(), qos=1)
        info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def _events(client: HubClient, device_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in client.device_events(device_id, limit=100) if e.get("kind") == kind]


def _wait(what: str, probe: Any, timeout: float) -> Any:
    from cloud.demo.run import wait_for

    return wait_for(what, probe, timeout)


def run_signing_step(
    *,
    client: HubClient,
    api_url: str,
    token: str,
    broker: BrokerHandle,
    fleet: str,
    device_ids: list[str],
    out: Console,
    timeout: float,
) -> dict[str, Any]:
    from cloud.cli.common import Output
    from cloud.cli.keys import rotate

    signing = SigningClient(api_url, token)
    before = {r["role"]: r for r in signing.keys()["roles"]}
    # 0. What the devices already did: every activation came after both checks passed.
    activated = [d for d in device_ids if _events(client, d, "activated")]
    refused = [
        d for d in device_ids if _events(client, d, "verify_failed") or _events(client, d, "desired_rejected")
    ]
    out.print(
        f"[bold]verified[/] {len(activated)}/{len(device_ids)} devices activated the model only after the "
        f"director's signature and TUF root v{before['root']['version']} metadata verified "
        f"({len(refused)} refusals so far)"
    )
    # 1. `fleet keys rotate targets`, the command's own code, against this hub.
    rotate(role="targets", root_dir=None, passphrase_file=None, new_root_dir=None, keys=1, threshold=1,
           hub_url=api_url, token=token, output=Output.table)  # fmt: skip
    after = {r["role"]: r for r in signing.keys()["roles"]}
    out.print(
        f"[bold]keys[/]     rotated the targets key: root v{before['root']['version']} -> "
        f"v{after['root']['version']}, targets v{before['targets']['version']} -> "
        f"v{after['targets']['version']}"
    )

    # 2. A forgery on one device's topic.
    victim = device_ids[0]
    _forge(broker, fleet, victim)
    rejected = _wait(
        f"{victim} to refuse the forged desired state",
        lambda: _events(client, victim, "desired_rejected") or None,
        timeout,
    )
    out.print(
        f"[bold]forgery[/]  {victim} refused a desired state signed by an unknown key: "
        f"{rejected[0]['reason'][:90]}"
    )

    # 3. Firmware through the rotated keys, as a signed delta.
    for image in (FACTORY, UPDATE):
        pushed = signing.push_firmware(SAMPLE_DIR / image.file_name)
    delta = next((r for r in pushed["data"] if r["kind"] == "delta"), None)
    full = next(r for r in pushed["data"] if r["kind"] == "full")
    signing.assign_firmware(
        name=full["name"], version=UPDATE.version, hardware_id=HARDWARE, devices=device_ids
    )
    t0 = time.monotonic()

    def committed() -> list[str] | None:
        done = [d for d in device_ids if _events(client, d, "firmware_committed")]
        return done if len(done) == len(device_ids) else None

    _wait(f"every device to commit firmware {UPDATE.version}", committed, timeout)
    seconds = time.monotonic() - t0
    via = [e["reason"] for e in _events(client, device_ids[-1], "firmware_installed")]
    ratio = delta["length"] / full["length"] if delta else 1.0
    out.print(
        f"[bold]firmware[/] {len(device_ids)} devices run {UPDATE.version} after {seconds:.1f} s "
        f"(A/B: inactive slot, restart, health check, commit); delta {delta['length'] if delta else '-'} "
        f"of {full['length']} bytes ({ratio:.1%}, {delta['algorithm'] if delta else 'full'})"
    )
    return {
        "rotated": "targets",
        "root_version": after["root"]["version"],
        "forgery_refused_by": victim,
        "firmware": UPDATE.version,
        "firmware_seconds": round(seconds, 1),
        "delta_ratio": round(ratio, 4),
        "installed_via": via[-1] if via else "",
    }
