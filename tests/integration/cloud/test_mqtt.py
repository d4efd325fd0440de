"""HubMqtt against the real Mosquitto: device messages reach the database, desired states are retained."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from sqlmodel import select

from cloud.artifacts import ArtifactStore
from cloud.db import SessionFactory
from cloud.errors import PublishError
from cloud.models import Device, DeviceEvent, DeviceState, TelemetryWindow
from cloud.services import assignments, registry
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from cloud.settings import Settings
from cloud.transport.mqtt import HubMqtt
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import desired_pb2
from tests.integration.cloud.mqtt_probe import Probe, read_retained, wait_for
from tests.unit.cloud.helpers import event, status, telemetry, tiny_onnx

pytestmark = pytest.mark.integration

ENDPOINT = "hub.test:50051"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    # The transport is under test here, not the database: SQLite only.
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture(params=["5", "3.1.1"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_hub(
    mqtt_broker: tuple[str, int], fleet_name: str, sessions: SessionFactory
) -> Iterator[Callable[..., tuple[HubMqtt, Ingestor]]]:
    started: list[HubMqtt] = []

    def make(
        protocol: str = "5", port: int | None = None, client_id: str | None = None
    ) -> tuple[HubMqtt, Ingestor]:
        host, default_port = mqtt_broker
        settings = Settings(
            fleet=fleet_name,
            mqtt_host=host,
            mqtt_port=port or default_port,
            mqtt_protocol=protocol,
            publish_timeout_s=5.0,
        )
        ingestor = Ingestor(sessions, FleetTopics(fleet_name))

        def desired_source() -> Sequence[tuple[str, bytes]]:
            with sessions() as s:
                return assignments.desired_payloads(s, fleet=fleet_name, artifact_endpoint=ENDPOINT)

        hub = HubMqtt(settings, on_batch=ingestor.ingest, desired_source=desired_source, client_id=client_id)
        hub.start()
        started.append(hub)
        return hub, ingestor

    yield make
    for hub in started:
        hub.stop()


@pytest.fixture
def device(mqtt_broker: tuple[str, int]) -> Iterator[Probe]:
    probe = Probe(*mqtt_broker)
    yield probe
    probe.close()


@pytest.fixture
def clear_desired(mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[list[str]]:
    """Device ids whose retained desired state the test leaves behind; cleared afterwards."""
    ids: list[str] = []
    yield ids
    if ids:
        probe = Probe(*mqtt_broker)
        for device_id in ids:
            probe.publish(FleetTopics(fleet_name).device(device_id).desired, b"", retain=True)
        probe.close()


def _device(sessions: SessionFactory, device_id: str) -> Device | None:
    with sessions() as s:
        return s.get(Device, device_id)


def test_status_creates_a_device(
    make_hub: Callable[..., tuple[HubMqtt, Ingestor]],
    device: Probe,
    sessions: SessionFactory,
    fleet_name: str,
    protocol: str,
) -> None:
    hub, _ = make_hub(protocol)
    assert hub.wait_ready(10)
    topics = FleetTopics(fleet_name).device("d1")
    device.publish(topics.status, status("d1", labels={"site": "x"}).SerializeToString(), retain=True)
    row = wait_for(lambda: _device(sessions, "d1"))
    assert (row.state, row.labels, row.fleet) == (DeviceState.ONLINE, {"site": "x"}, fleet_name)
    device.publish(topics.telemetry, telemetry("d1", 1).SerializeToString())
    device.publish(topics.events, event("d1", 1).SerializeToString())

    def stored() -> bool:
        with sessions() as s:
            return bool(s.exec(select(TelemetryWindow)).all() and s.exec(select(DeviceEvent)).all())

    wait_for(stored)


def test_retained_statuses_are_learned_at_start(
    make_hub: Callable[..., tuple[HubMqtt, Ingestor]],
    device: Probe,
    sessions: SessionFactory,
    fleet_name: str,
) -> None:
    # Published before the hub subscribes: the hub learns of the device from the retained copy.
    device.publish(
        FleetTopics(fleet_name).device("early").status, status("early").SerializeToString(), retain=True
    )
    hub, _ = make_hub("5")
    assert hub.wait_ready(10)
    assert wait_for(lambda: _device(sessions, "early")).state == DeviceState.ONLINE


def test_publish_desired_is_retained_for_a_fresh_subscriber(
    make_hub: Callable[..., tuple[HubMqtt, Ingestor]],
    mqtt_broker: tuple[str, int],
    fleet_name: str,
    clear_desired: list[str],
    protocol: str,
) -> None:
    hub, _ = make_hub(protocol)
    assert hub.wait_ready(10)
    payload = desired_pb2.DesiredState(device_id="d1", fleet=fleet_name, generation=7).SerializeToString()
    clear_desired.append("d1")
    hub.publish_desired("d1", payload)
    topic = FleetTopics(fleet_name).device("d1").desired
    assert read_retained(*mqtt_broker, topic) == payload

    watcher = Probe(*mqtt_broker)
    try:
        watcher.subscribe(topic)
        assert watcher.next_message().payload == payload  # the retained copy
        hub.clear_retained("d1")
        cleared = watcher.next_message()
        assert cleared.payload == b""
    finally:
        watcher.close()


def test_malformed_payload_is_counted_and_ingest_goes_on(
    make_hub: Callable[..., tuple[HubMqtt, Ingestor]],
    device: Probe,
    sessions: SessionFactory,
    fleet_name: str,
) -> None:
    hub, ingestor = make_hub("5")
    assert hub.wait_ready(10)
    topics = FleetTopics(fleet_name).device("d1")
    device.publish(topics.telemetry, b"\xff\x00garbage")
    device.publish(topics.telemetry, telemetry("d1", 5).SerializeToString())

    def window() -> list[TelemetryWindow]:
        with sessions() as s:
            return list(s.exec(select(TelemetryWindow)).all())

    assert [w.seq for w in wait_for(window)] == [5]
    assert ingestor.stats.snapshot()["malformed"] == 1


def test_device_id_mismatch_is_rejected(
    make_hub: Callable[..., tuple[HubMqtt, Ingestor]],
    device: Probe,
    sessions: SessionFactory,
    fleet_name: str,
) -> None:
    hub, ingestor = make_hub("5")
    assert hub.wait_ready(10)
    topics = FleetTopics(fleet_name).device("d1")
    device.publish(topics.events, event("intruder", 1).SerializeToString())
    device.publish(topics.events, event("d1", 2).SerializeToString())

    def events() -> list[DeviceEvent]:
        with sessions() as s:
            return list(s.exec(select(DeviceEvent)).all())

    assert [(e.device_id, e.seq) for e in wait_for(events)] == [("d1", 2)]
    assert ingestor.stats.snapshot()["rejected"] == 1
    assert _device(sessions, "intruder") is None


def test_reconnect_republishes_stored_desired_states(
    make_hub: Callable[..., tuple[HubMqtt, Ingestor]],
    mqtt_broker: tuple[str, int],
    sessions: SessionFactory,
    store: ArtifactStore,
    fleet_name: str,
    clear_desired: list[str],
) -> None:
    # A desired state in the database that never reached the broker.
    Ingestor(sessions, FleetTopics(fleet_name)).ingest(
        [_inbound(fleet_name, "d1", status("d1").SerializeToString())]
    )
    with sessions() as s:
        registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx()))
        assignments.assign(
            s,
            RecordingPublisher(),
            "digits",
            "1",
            device_ids=["d1"],
            fleet=fleet_name,
            artifact_endpoint=ENDPOINT,
        )
    clear_desired.append("d1")
    client_id = f"hub-{fleet_name}"
    hub, _ = make_hub("5", client_id=client_id)
    assert hub.wait_resyncs(1, 10)
    topic = FleetTopics(fleet_name).device("d1").desired
    assert desired_pb2.DesiredState.FromString(read_retained(*mqtt_broker, topic)).generation == 1

    # The broker loses its retained store, then the hub's connection drops (a session takeover).
    cleaner = Probe(*mqtt_broker)
    cleaner.publish(topic, b"", retain=True)
    cleaner.close()
    Probe(*mqtt_broker, client_id=client_id).close()
    assert hub.wait_resyncs(2, 20)
    republished = desired_pb2.DesiredState.FromString(read_retained(*mqtt_broker, topic))
    assert (republished.generation, republished.artifact_endpoint) == (1, ENDPOINT)


def test_a_batch_of_desired_states_is_retained_and_names_what_the_broker_did_not_take(
    make_hub: Callable[..., tuple[HubMqtt, Ingestor]],
    mqtt_broker: tuple[str, int],
    fleet_name: str,
    clear_desired: list[str],
) -> None:
    hub, _ = make_hub("5")
    assert hub.wait_ready(10)
    ids = [f"b{i:03d}" for i in range(120)]  # more than the broker keeps in flight at once
    clear_desired.extend(ids)
    payloads = [
        (d, desired_pb2.DesiredState(device_id=d, fleet=fleet_name, generation=i + 1).SerializeToString())
        for i, d in enumerate(ids)
    ]
    refused = hub.publish_desired_many([*payloads, ("not/a device", b"x")])
    assert list(refused) == ["not/a device"] and "device" in refused["not/a device"]
    for device_id, payload in (payloads[0], payloads[-1]):
        assert read_retained(*mqtt_broker, FleetTopics(fleet_name).device(device_id).desired) == payload


def test_a_batch_without_a_broker_names_every_device(
    make_hub: Callable[..., tuple[HubMqtt, Ingestor]],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    hub, _ = make_hub("5", port=closed_port)
    refused = hub.publish_desired_many([("d1", b"x"), ("d2", b"y")])
    assert sorted(refused) == ["d1", "d2"]
    assert all(f"not connected to the MQTT broker at 127.0.0.1:{closed_port}" in r for r in refused.values())


def _inbound(fleet: str, device_id: str, payload: bytes) -> InboundMessage:
    return InboundMessage(FleetTopics(fleet).device(device_id).status, payload)


def test_publish_without_a_broker_fails_fast(make_hub: Callable[..., tuple[HubMqtt, Ingestor]]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    hub, _ = make_hub("5", port=closed_port)
    assert not hub.connected
    with pytest.raises(PublishError, match=f"not connected to the MQTT broker at 127.0.0.1:{closed_port}"):
        hub.publish_desired("d1", b"x")
