"""Attacks from whoever holds the broker, against the real hub, Mosquitto and an agent.

The agent is the real one (signed channel on, provisioned with the hub's root); the hub
signs and serves; the attacker is one more MQTT client. Each case publishes on the
device's desired topic and asserts that the device refused it with a reason the hub
received, and that the model it serves did not change.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud.client.hub import HubClient
from cloud.hub import Hub
from cloud.settings import Settings
from cloud.tuf.keys import generate_signer
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, BackoffConfig
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import desired_pb2
from tests.adversarial.simulator import envelope
from tests.unit.agent.fakes import NO_TRIAL
from tests.unit.cloud.helpers import tiny_onnx

pytestmark = pytest.mark.integration

DEVICE = "dev-a"


class RunningAgent:
    """An agent on its own event loop in a thread, stopped cleanly at the end."""

    def __init__(self, config: AgentConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self._built = threading.Event()
        # Built in its own thread: the agent's on-disk queue belongs to the thread that opened it.
        self.thread = threading.Thread(
            target=self._run, args=(config,), name="agent-under-attack", daemon=True
        )
        self.thread.start()
        assert self._built.wait(20), "the agent did not start"

    def _run(self, config: AgentConfig) -> None:
        asyncio.set_event_loop(self.loop)
        self.agent = Agent(config)
        self._built.set()
        self.loop.run_until_complete(self.agent.run(self.stop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)

    def serving(self) -> str | None:
        current = self.agent.serving.current
        return current.ref.sha256 if current is not None else None


def wait_until(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        threading.Event().wait(0.1)  # polling the hub's API: it offers no push to wait on
    raise AssertionError(f"timed out waiting for {what}")


class Attacker:
    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="attacker", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.connect(host, port)
        self.client.loop_start()
        self.retained: set[str] = set()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
        if retain:
            self.retained.add(topic)

    def capture(self, topic: str) -> bytes:
        got: list[bytes] = []
        done = threading.Event()

        def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            if msg.topic == topic and msg.payload:
                got.append(msg.payload)
                done.set()

        self.client.on_message = on_message
        self.client.subscribe(topic, qos=1)
        assert done.wait(10), f"nothing retained on {topic}"
        self.client.unsubscribe(topic)
        return got[0]

    def close(self) -> None:
        for topic in self.retained:
            self.publish(topic, b"", retain=False)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def world(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[dict[str, Any]]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as hub, HubClient(hub.api_url, hub.admin_token) as client:
        root = tmp_path / "root.json"
        root.write_bytes(httpx.get(f"{hub.api_url}/tuf/metadata/root.json").content)
        config = AgentConfig.for_simulation(
            device_id=DEVICE, fleet=fleet_name, state_dir=tmp_path / "device", mqtt_host=host, mqtt_port=port,
            grpc_endpoint=hub.grpc_endpoint, trial=NO_TRIAL, backoff=BackoffConfig(initial_s=0.1, max_s=0.5),
            trust=TrustConfig(root_file=root),
        )  # fmt: skip
        running = RunningAgent(config)
        attacker = Attacker(host, port)
        topics = DeviceTopics(fleet_name, DEVICE)
        try:
            wait_until("the device to register", lambda: client.list_devices(state="online"))
            versions = {}
            for v, scale in (("1", 1.0), ("2", 2.0)):
                versions[v] = client.push_model(_model(tmp_path, scale), name="m", version=v)["sha256"]
            client.assign(model="m", version="1", devices=[DEVICE])
            wait_until("v1 to serve", lambda: running.serving() == versions["1"])
            yield {"hub": hub, "client": client, "agent": running, "attacker": attacker, "topics": topics,
                   "versions": versions, "fleet": fleet_name}  # fmt: skip
        finally:
            running.close()
            attacker.close()
            attacker_topics = [topics.desired, topics.status]
            cleaner = Attacker(host, port)
            for topic in attacker_topics:
                cleaner.publish(topic, b"", retain=True)
            cleaner.close()


def _model(folder: Path, scale: float) -> Path:
    path = folder / f"m{scale}.onnx"
    path.write_bytes(tiny_onnx(scale))
    return path


def rejected(world: dict[str, Any], fragment: str) -> Any:
    client: HubClient = world["client"]
    return wait_until(
        f"a desired_rejected event saying {fragment!r}",
        lambda: [e for e in client.device_events(DEVICE, limit=100)
                 if e["kind"] == "desired_rejected" and fragment in e["reason"]],
    )  # fmt: skip


def forged(fleet: str, device: str = DEVICE, generation: int = 99) -> bytes:
    desired = desired_pb2.DesiredState(device_id=device, fleet=fleet, generation=generation, counter=10_000)
    desired.expires_at_ms = int((time.time() + 3600) * 1000)
    return envelope(desired, [generate_signer()])


def test_an_oversized_payload_on_the_desired_topic_is_refused(world: dict[str, Any]) -> None:
    world["attacker"].publish(world["topics"].desired, b"\x0a" + b"x" * 100_000)
    rejected(world, "at most")
    assert world["agent"].serving() == world["versions"]["1"]


def test_another_publisher_on_this_devices_topic_is_refused(world: dict[str, Any]) -> None:
    world["attacker"].publish(world["topics"].desired, forged(world["fleet"]))
    rejected(world, "does not name as director keys")
    assert world["agent"].serving() == world["versions"]["1"]


def test_a_replayed_retained_instruction_is_refused(world: dict[str, Any]) -> None:
    old = world["attacker"].capture(world["topics"].desired)  # v1, signed by the director
    world["client"].assign(model="m", version="2", devices=[DEVICE])
    wait_until("v2 to serve", lambda: world["agent"].serving() == world["versions"]["2"])
    world["attacker"].publish(world["topics"].desired, old, retain=True)  # the broker now holds the old one
    rejected(world, "replayed desired state")
    assert world["agent"].serving() == world["versions"]["2"]


def test_an_instruction_signed_for_another_device_is_refused(world: dict[str, Any]) -> None:
    hub: Hub = world["hub"]
    assert hub.context is not None and hub.context.signing is not None
    desired = desired_pb2.DesiredState(device_id="dev-b", fleet=world["fleet"], generation=5)
    with hub.context.sessions() as session:
        for_b = hub.context.signing.seal(session, desired)  # genuinely signed, for dev-b
        session.commit()
    world["attacker"].publish(world["topics"].desired, for_b)
    rejected(world, "'dev-b'")
    assert world["agent"].serving() == world["versions"]["1"]
