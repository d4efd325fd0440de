"""Healing what the broker dropped: re-reading the retained statuses, on the real Mosquitto.

A status the broker dropped for the hub is emulated by deleting the device's row: either way the
hub does not know a device whose retained status sits at the broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from cloud.db import create_all, create_db_engine, session_factory
from cloud.models import Device, TelemetryWindow
from cloud.observability.metrics import HealMetrics
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.settings import Settings
from cloud.transport.mqtt import HealLimiter, HubMqtt
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import device_pb2, telemetry_pb2
from tests.integration.cloud.mqtt_probe import Probe, wait_for

pytestmark = pytest.mark.integration

DEVICES = [f"dev-{i}" for i in range(5)]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(params=["5", "3.1.1"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hub(
    engine: Engine, tmp_path: Path, fleet_name: str, mqtt_broker: tuple[str, int], protocol: str
) -> Iterator[tuple[HubMqtt, Ingestor, CollectorRegistry]]:
    settings = Settings(
        data_dir=tmp_path,
        fleet=fleet_name,
        mqtt_host=mqtt_broker[0],
        mqtt_port=mqtt_broker[1],
        mqtt_protocol=protocol,
        ingest_linger_s=0,
        heal_min_interval_s=0,
    )
    registry = CollectorRegistry()
    metrics = HealMetrics(registry)
    ingestor = Ingestor(session_factory(engine), FleetTopics(fleet_name))
    mqtt = HubMqtt(
        settings,
        on_batch=ingestor.ingest,
        desired_source=list,
        client_id=f"{fleet_name}-hub",
        heal_metrics=metrics,
    )

    def on_seq_gap(missing: int) -> None:  # as cloud.hub.Hub wires it
        metrics.seq_gaps.inc(missing)
        mqtt.request_heal("seq_gap")

    ingestor.on_seq_gap = on_seq_gap
    mqtt.start()
    try:
        assert mqtt.wait_ready(30)
        yield mqtt, ingestor, registry
    finally:
        mqtt.stop()


@pytest.fixture
def device(mqtt_broker: tuple[str, int]) -> Iterator[Probe]:
    probe = Probe(*mqtt_broker)
    try:
        yield probe
    finally:
        probe.close()


def _known(engine: Engine) -> Callable[[], int]:
    def count() -> int:
        with Session(engine) as s:
            return int(s.exec(select(func.count()).select_from(Device)).one())

    return count


def _publish_births(probe: Probe, fleet: str) -> None:
    topics = FleetTopics(fleet)
    for device_id in DEVICES:
        status = device_pb2.DeviceStatus(
            device_id=device_id, fleet=fleet, state=device_pb2.DEVICE_STATE_ONLINE
        )
        probe.publish(topics.device(device_id).status, status.SerializeToString(), retain=True)


def _window(probe: Probe, fleet: str, device_id: str, seq: int) -> None:
    batch = telemetry_pb2.TelemetryBatch(device_id=device_id)
    start = int(time.time() * 1000) - 600_000 + seq * 10_000
    batch.windows.add(seq=seq, window_start_ms=start, window_end_ms=start + 10_000, model_name="m")
    probe.publish(FleetTopics(fleet).device(device_id).telemetry, batch.SerializeToString())


def test_a_reread_brings_back_the_statuses_the_hub_lost(
    hub: tuple[HubMqtt, Ingestor, CollectorRegistry], engine: Engine, device: Probe, fleet_name: str
) -> None:
    mqtt, _ingestor, registry = hub
    _publish_births(device, fleet_name)
    known = _known(engine)
    # Rows in the database: stored by the hub's ingest thread, with nothing to wait on but the count.
    wait_for(lambda: known() == len(DEVICES), timeout=30)
    with Session(engine) as s:
        s.exec(delete(Device).where(col(Device.id).in_(DEVICES[1:])))
        s.commit()
    assert known() == 1

    mqtt.request_heal("broker_dropped")
    assert mqtt.wait_heals(1, timeout=30)
    wait_for(lambda: known() == len(DEVICES), timeout=30)
    assert registry.get_sample_value("edgefleet_mqtt_status_rereads_total") == 1
    assert registry.get_sample_value("edgefleet_mqtt_heal_triggers_total", {"reason": "broker_dropped"}) == 1


def test_a_gap_in_a_devices_telemetry_seq_is_counted_and_heals(
    hub: tuple[HubMqtt, Ingestor, CollectorRegistry], engine: Engine, device: Probe, fleet_name: str
) -> None:
    mqtt, ingestor, registry = hub
    _publish_births(device, fleet_name)
    known = _known(engine)
    wait_for(lambda: known() == len(DEVICES), timeout=30)

    def stored() -> dict[str, int]:
        # The ingest thread counts a batch once its transaction committed: wait on its counts, which
        # come after the rows.
        return ingestor.stats.snapshot()

    _window(device, fleet_name, "dev-0", 1)
    _window(device, fleet_name, "dev-0", 2)
    wait_for(lambda: stored()["telemetry_windows"] == 2, timeout=30)
    assert stored()["seq_gaps"] == 0
    assert mqtt.heals == 0

    _window(device, fleet_name, "dev-0", 6)  # 3, 4 and 5 never came
    wait_for(lambda: stored()["telemetry_windows"] == 3, timeout=30)
    assert stored()["seq_gaps"] == 3
    assert mqtt.wait_heals(1, timeout=30)
    assert registry.get_sample_value("edgefleet_ingest_telemetry_seq_gaps_total") == 3
    assert registry.get_sample_value("edgefleet_mqtt_heal_triggers_total", {"reason": "seq_gap"}) == 1

    # A redelivered window and the next one in order are no gap.
    _window(device, fleet_name, "dev-0", 6)
    _window(device, fleet_name, "dev-0", 7)
    wait_for(lambda: stored()["telemetry_windows"] + stored()["duplicates"] == 5, timeout=30)
    assert stored()["seq_gaps"] == 3
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(TelemetryWindow)).one() == 4


def test_the_brokers_dropped_count_moving_asks_for_a_reread(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    mqtt = HubMqtt(
        Settings(data_dir=tmp_path),
        on_batch=lambda _b: None,
        desired_source=list,
        heal_metrics=HealMetrics(registry),
    )
    triggers = {"reason": "broker_dropped"}
    # Not started: the count is fed as the broker's $SYS message would feed it.
    mqtt._note_dropped(b"7")  # the count at connect: drops before this hub subscribed, healed by subscribing
    mqtt._note_dropped(b"7")
    assert registry.get_sample_value("edgefleet_mqtt_heal_triggers_total", triggers) == 0
    mqtt._note_dropped(b"9")
    assert registry.get_sample_value("edgefleet_mqtt_heal_triggers_total", triggers) == 1
    mqtt._note_dropped(b"0")  # the broker restarted: nothing dropped since
    assert registry.get_sample_value("edgefleet_mqtt_heal_triggers_total", triggers) == 1
    assert mqtt.broker_dropped == 0


@pytest.mark.parametrize(
    ("last", "now", "wait"),
    [
        (None, 5.0, 0.0),  # the first re-read runs at once
        (100.0, 110.0, 20.0),  # 10 s after one: 20 s of the 30 s interval left
        (100.0, 130.0, 0.0),
        (100.0, 500.0, 0.0),
    ],
)
def test_the_heal_limiter_lets_one_reread_per_interval(last: float | None, now: float, wait: float) -> None:
    limiter = HealLimiter(30.0, last)
    assert limiter.wait_s(now) == wait
    limiter.ran(now)
    assert limiter.wait_s(now) == 30.0


def test_a_reread_waits_until_the_hub_has_stored_what_it_received(
    engine: Engine, tmp_path: Path, fleet_name: str, mqtt_broker: tuple[str, int], device: Probe
) -> None:
    ingestor = Ingestor(session_factory(engine), FleetTopics(fleet_name))
    release, holding = threading.Event(), threading.Event()

    def slow_batch(messages: Sequence[InboundMessage]) -> None:
        holding.set()
        assert release.wait(30)
        ingestor.ingest(messages)

    settings = Settings(
        data_dir=tmp_path,
        fleet=fleet_name,
        mqtt_host=mqtt_broker[0],
        mqtt_port=mqtt_broker[1],
        ingest_linger_s=0,
        heal_min_interval_s=0,
    )
    mqtt = HubMqtt(settings, on_batch=slow_batch, desired_source=list, client_id=f"{fleet_name}-hub")
    mqtt.start()
    try:
        assert mqtt.wait_ready(30)
        _publish_births(device, fleet_name)
        assert holding.wait(30)
        mqtt.request_heal("broker_dropped")
        # A backlog is in ingest: a re-read now would pile onto it. A bounded wait for what must not come.
        assert not mqtt.wait_heals(1, timeout=1.0)
        release.set()
        assert mqtt.wait_heals(1, timeout=30)
        wait_for(lambda: _known(engine)() == len(DEVICES), timeout=30)
    finally:
        release.set()
        mqtt.stop()
