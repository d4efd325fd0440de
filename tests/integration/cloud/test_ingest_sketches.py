"""Telemetry and sketch windows through the real Mosquitto into SQLite and PostgreSQL, exactly once,
across a hub restart in mid-stream, a database that refuses a batch, and a broker that drops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func
from sqlmodel import col, select

from cloud.clock import utcnow
from cloud.db import SessionFactory
from cloud.models import TelemetryWindow
from cloud.services.ingest import InboundMessage, Ingestor, StoreUnavailableError
from cloud.settings import Settings
from cloud.telemetry.rollup import rebuild
from cloud.telemetry.tables import FLEET_SCOPE, CohortRollup, SketchRecord
from cloud.transport.mqtt import HubMqtt
from edgefleet_proto.topics import Channel, FleetTopics
from tests._services.mosquitto import Mosquitto
from tests.integration.cloud.mqtt_probe import wait_for
from tests.unit.cloud.helpers import T0
from tests.unit.cloud.sketch_builders import sketch_batch, sketch_window, telemetry_batch, telemetry_window

pytestmark = pytest.mark.integration

DEVICES = 8
WINDOW_S = 10
STORE_TIMEOUT_S = 60.0


class Devices:
    """Paho clients, one per device, publishing a telemetry and a sketch batch per window, QoS 1."""

    def __init__(self, host: str, port: int, fleet: str, count: int) -> None:
        self.topics = FleetTopics(fleet)
        self.ids = [f"dev-{i:03d}" for i in range(count)]
        self.clients: list[paho.Client] = []
        self.sent: list[tuple[str, int, paho.MQTTMessageInfo, paho.MQTTMessageInfo]] = []
        # Windows end in the last hour, so that the rollup takes them as they come.
        self.base_s = int((utcnow() - timedelta(hours=1)).timestamp())
        for device_id in self.ids:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"{fleet}-{device_id}",
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            client.max_queued_messages_set(0)
            client.connect(host, port)
            client.loop_start()
            self.clients.append(client)

    def publish(self, seq: int) -> None:
        offset = self.base_s - int(T0.timestamp())  # the builders count from T0
        for device_id, client in zip(self.ids, self.clients, strict=True):
            topics = self.topics.device(device_id)
            t = telemetry_batch(
                device_id, telemetry_window(seq, offset_s=offset, cpu_percent=5.0, rss_bytes=10)
            )
            s = sketch_batch(device_id, sketch_window(seq, [0.1 * (seq % 7), 0.5], offset_s=offset))
            self.sent.append(
                (
                    device_id,
                    seq,
                    client.publish(topics.telemetry, t.SerializeToString(), qos=1),
                    client.publish(topics.sketch, s.SerializeToString(), qos=1),
                )
            )

    def acknowledged(self, timeout: float = 30.0) -> set[tuple[str, int]]:
        """The windows whose two messages the broker acknowledged (PUBACK) to the device."""
        done: set[tuple[str, int]] = set()
        for device_id, seq, telemetry, sketch in self.sent:
            for info in (telemetry, sketch):
                info.wait_for_publish(timeout)
            if telemetry.is_published() and sketch.is_published():
                done.add((device_id, seq))
        return done

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


@pytest.fixture
def devices(mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Devices]:
    fleet = Devices(*mqtt_broker, fleet_name, DEVICES)
    yield fleet
    fleet.close()


@pytest.fixture(params=["5", "3.1.1"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_hub(
    mqtt_broker: tuple[str, int], fleet_name: str, tmp_path: Path, protocol: str
) -> Iterator[Callable[[Callable[[Sequence[InboundMessage]], None]], HubMqtt]]:
    started: list[HubMqtt] = []

    def make(on_batch: Callable[[Sequence[InboundMessage]], None]) -> HubMqtt:
        host, port = mqtt_broker
        # The same data folder on the same host: a restarted hub has the same client id, hence its session.
        settings = Settings(
            data_dir=tmp_path, fleet=fleet_name, mqtt_host=host, mqtt_port=port, mqtt_protocol=protocol
        )
        hub = HubMqtt(settings, on_batch=on_batch, desired_source=lambda: [])
        hub.start()
        started.append(hub)
        assert hub.wait_ready(10)
        return hub

    yield make
    for hub in started:
        hub.stop()


def _stored(sessions: SessionFactory) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    with sessions() as s:
        windows = s.exec(select(TelemetryWindow.device_id, TelemetryWindow.seq)).all()
        sketches = s.exec(select(SketchRecord.device_id, SketchRecord.seq)).all()
    return [tuple(w) for w in windows], [tuple(r) for r in sketches]  # type: ignore[misc]


def _wait_stored(sessions: SessionFactory, expected: set[tuple[str, int]]) -> None:
    def all_there() -> bool:
        windows, sketches = _stored(sessions)
        return expected <= set(windows) and expected <= set(sketches)

    wait_for(all_there, timeout=STORE_TIMEOUT_S)


def test_every_acknowledged_window_is_stored_once_across_a_hub_restart(
    make_hub: Callable[[Callable[[Sequence[InboundMessage]], None]], HubMqtt],
    devices: Devices,
    sessions: SessionFactory,
    fleet_name: str,
) -> None:
    ingestor = Ingestor(sessions, FleetTopics(fleet_name))
    hub = make_hub(ingestor.ingest)
    for seq in range(1, 11):
        devices.publish(seq)
    _wait_stored(sessions, devices.acknowledged())
    wait_for(lambda: ingestor.stats.snapshot()["sketch_windows"] == DEVICES * 10)

    # The devices keep publishing while the hub stops and comes back.
    stopped, restarted = threading.Event(), threading.Event()

    def publish_on() -> None:
        for seq in range(11, 41):
            devices.publish(seq)
            if seq == 15:
                stopped.wait(30)
            if seq == 30:
                restarted.wait(30)

    publisher = threading.Thread(target=publish_on, name="devices")
    publisher.start()
    hub.stop()
    stopped.set()
    second = Ingestor(sessions, FleetTopics(fleet_name))
    make_hub(second.ingest)
    restarted.set()
    publisher.join(60)
    assert not publisher.is_alive()

    acknowledged = devices.acknowledged()
    assert len(acknowledged) == DEVICES * 40  # the broker took every one, the hub away or not
    _wait_stored(sessions, acknowledged)
    windows, sketches = _stored(sessions)
    assert sorted(windows) == sorted(sketches) == sorted(acknowledged)  # each once, none lost

    # The rollup of what came in sums every window once, on this database.
    keys = rebuild(sessions, fleet=fleet_name, bucket_s=3_600, now=utcnow())
    assert keys and all(key.cohort_id == FLEET_SCOPE for key in keys)
    with sessions() as s:
        totals = s.exec(
            select(func.sum(CohortRollup.windows), func.sum(CohortRollup.samples)).where(
                CohortRollup.fleet == fleet_name, col(CohortRollup.cohort_id) == FLEET_SCOPE
            )
        ).one()
    assert tuple(totals) == (DEVICES * 40, DEVICES * 40 * 2)


def test_a_batch_the_database_refused_is_redelivered_to_the_next_hub(
    make_hub: Callable[[Callable[[Sequence[InboundMessage]], None]], HubMqtt],
    devices: Devices,
    sessions: SessionFactory,
    fleet_name: str,
) -> None:
    offered = threading.Event()

    def database_away(messages: Sequence[InboundMessage]) -> None:
        offered.set()
        raise StoreUnavailableError("the database did not take the batch: connection refused")

    first = make_hub(database_away)
    for seq in range(1, 6):
        devices.publish(seq)
    acknowledged = devices.acknowledged()
    assert offered.wait(10)
    first.stop()  # gives up on the batch, unacknowledged
    assert _stored(sessions) == ([], [])

    make_hub(Ingestor(sessions, FleetTopics(fleet_name)).ingest)
    _wait_stored(sessions, acknowledged)
    windows, sketches = _stored(sessions)
    assert sorted(windows) == sorted(sketches) == sorted(acknowledged)


class _SmallQueueMosquitto(Mosquitto):
    """A private broker that queues 5 messages per client and reports $SYS every second."""

    def _write_config(self) -> None:
        super()._write_config()
        text = self.conf.read_text().replace("max_queued_messages 100000", "max_queued_messages 5")
        self.conf.write_text(text + "sys_interval 1\n")


@pytest.fixture
def small_broker() -> Iterator[Mosquitto]:
    with _SmallQueueMosquitto() as broker:
        yield broker


def test_messages_the_broker_dropped_show_in_broker_dropped_with_a_warning(
    small_broker: Mosquitto,
    sessions: SessionFactory,
    fleet_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "cloud.transport.mqtt")
    ingestor = Ingestor(sessions, FleetTopics(fleet_name))
    settings = Settings(
        data_dir=tmp_path, fleet=fleet_name, mqtt_host=small_broker.host, mqtt_port=small_broker.port
    )
    hub = HubMqtt(settings, on_batch=ingestor.ingest, desired_source=lambda: [])
    # Another subscriber that takes one message and never acknowledges it: its queue of 5 overflows.
    laggard = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{fleet_name}-laggard", protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
    )  # fmt: skip
    subscribed = threading.Event()
    laggard.on_subscribe = lambda *_a: subscribed.set()
    hub.start()
    laggard.connect(small_broker.host, small_broker.port, properties=_receive_maximum(1))
    laggard.loop_start()
    try:
        assert hub.wait_ready(10)
        laggard.subscribe(FleetTopics(fleet_name).filter(Channel.TELEMETRY), qos=1)
        assert subscribed.wait(10)
        wait_for(lambda: hub.broker_dropped is not None, timeout=10)
        before = hub.broker_dropped
        assert before is not None
        fleet = Devices(small_broker.host, small_broker.port, fleet_name, 1)
        try:
            for seq in range(1, 21):
                fleet.publish(seq)
            acknowledged = fleet.acknowledged()
            assert len(acknowledged) == 20  # the broker acknowledged every one to the device
            wait_for(lambda: (hub.broker_dropped or 0) >= before + 20 - 1 - 5, timeout=10)
            _wait_stored(sessions, acknowledged)  # the hub itself lost none
        finally:
            fleet.close()
    finally:
        laggard.disconnect()
        laggard.loop_stop()
        hub.stop()
    assert "the MQTT broker dropped" in caplog.text and "max_queued_messages" in caplog.text


def _receive_maximum(count: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = count
    return properties
