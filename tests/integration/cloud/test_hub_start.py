"""`fleet hub` starts all or nothing: a second hub on taken ports, or without its database or
broker, exits 4 with one line on stderr and publishes nothing to the fleet's topics.

The first hub runs in this process with a stored desired state, so a second hub that
reached the broker would republish it; a subscriber on the fleet's topics sees whether it did.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as paho
import pytest

from cloud.hub import Hub
from cloud.settings import Settings
from edgefleet_proto.topics import DEFAULT_PREFIX, FleetTopics
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import status, tiny_onnx

pytestmark = pytest.mark.integration

EXIT_REFUSED = 4
START_TIMEOUT_S = 60.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FleetWatcher:
    """Every message on the fleet's topics, fenced by markers this test publishes itself."""

    def __init__(self, host: str, port: int, fleet: str) -> None:
        self.probe = Probe(host, port)
        self.marker_topic = f"{DEFAULT_PREFIX}/{fleet}/test-marker"
        self.probe.subscribe(f"{DEFAULT_PREFIX}/{fleet}/#")

    def until_marker(self) -> list[paho.MQTTMessage]:
        """What arrived before a marker published now: the broker delivers in the order it took them."""
        marker = uuid.uuid4().hex.encode()
        self.probe.publish(self.marker_topic, marker)
        seen = []
        while True:
            msg = self.probe.next_message(timeout=10)
            if msg.topic == self.marker_topic and bytes(msg.payload) == marker:
                return seen
            if msg.topic != self.marker_topic:
                seen.append(msg)


@pytest.fixture
def first_hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    """A running hub with one device and a desired state stored for it."""
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "first", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    device = Probe(host, port)
    topics = FleetTopics(fleet_name).device("edge-1")
    try:
        with (
            Hub(settings) as hub,
            httpx.Client(
                base_url=hub.api_url, headers={"Authorization": f"Bearer {hub.admin_token}"}, timeout=10
            ) as api,
        ):
            assert hub.mqtt.wait_ready(10)
            api.post(
                "/api/v1/models",
                data={"name": "digits", "version": "1"},
                files={"file": ("m.onnx", tiny_onnx())},
            ).raise_for_status()
            device.publish(topics.status, status("edge-1").SerializeToString(), retain=True)
            wait_for(lambda: api.get("/api/v1/devices").json()["count"] == 1)
            api.post(
                "/api/v1/assignments", json={"model": "digits", "version": "1", "devices": ["edge-1"]}
            ).raise_for_status()
            yield hub
    finally:
        device.retained_topics.add(topics.desired)
        device.close()


@pytest.fixture
def watcher(first_hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[FleetWatcher]:
    watch = FleetWatcher(*mqtt_broker, fleet_name)
    try:
        # The retained status and desired state arrive on subscribing: the first hub has settled.
        settled = watch.until_marker()
        assert {m.topic for m in settled} >= {FleetTopics(fleet_name).device("edge-1").desired}
        yield watch
    finally:
        watch.probe.close()


def _second_hub(
    data_dir: Path, fleet: str, broker: tuple[str, int], **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    clean.update(
        EDGEFLEET_DATA_DIR=str(data_dir),
        EDGEFLEET_FLEET=fleet,
        EDGEFLEET_MQTT_HOST=broker[0],
        EDGEFLEET_MQTT_PORT=str(broker[1]),
        EDGEFLEET_API_PORT="0",
        EDGEFLEET_GRPC_PORT="0",
        COLUMNS="60",  # a narrow terminal must not wrap the error line
    )
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "cloud.cli", "hub"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )


def _port_of(url_or_endpoint: str) -> int:
    port = urlsplit(url_or_endpoint if "//" in url_or_endpoint else f"//{url_or_endpoint}").port
    assert port is not None
    return port


def _assert_refused(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert result.returncode == EXIT_REFUSED, result.stderr
    assert result.stderr.splitlines() == [f"error: cannot start the hub: {line}"]
    assert result.stdout == ""


def test_second_hub_on_the_same_http_port_refuses_and_publishes_nothing(
    first_hub: Hub, watcher: FleetWatcher, mqtt_broker: tuple[str, int], fleet_name: str, tmp_path: Path
) -> None:
    api_port = _port_of(first_hub.api_url)
    grpc_port = _port_of(first_hub.grpc_endpoint)
    result = _second_hub(
        tmp_path / "second",
        fleet_name,
        mqtt_broker,
        EDGEFLEET_API_PORT=str(api_port),
        EDGEFLEET_GRPC_PORT=str(grpc_port),
    )
    _assert_refused(result, f"HTTP port 127.0.0.1:{api_port} is in use (EDGEFLEET_API_PORT)")
    assert watcher.until_marker() == []
    assert not (tmp_path / "second").exists()
    # The first hub still serves on both ports.
    assert httpx.get(f"{first_hub.api_url}/healthz", timeout=10).json()["mqtt"] is True


def test_second_hub_on_the_same_grpc_port_refuses_without_sharing_it(
    first_hub: Hub, watcher: FleetWatcher, mqtt_broker: tuple[str, int], fleet_name: str, tmp_path: Path
) -> None:
    grpc_port = _port_of(first_hub.grpc_endpoint)
    result = _second_hub(tmp_path / "second", fleet_name, mqtt_broker, EDGEFLEET_GRPC_PORT=str(grpc_port))
    # gRPC's default SO_REUSEPORT would have let it bind beside the first hub.
    _assert_refused(result, f"gRPC port 127.0.0.1:{grpc_port} is in use (EDGEFLEET_GRPC_PORT)")
    assert watcher.until_marker() == []
    assert not (tmp_path / "second").exists()


def test_hub_without_its_database_refuses_before_the_broker(
    watcher: FleetWatcher, mqtt_broker: tuple[str, int], fleet_name: str, tmp_path: Path
) -> None:
    port = _closed_port()
    url = f"postgresql+psycopg://edgefleet:s3cret@127.0.0.1:{port}/hub"
    result = _second_hub(tmp_path / "second", fleet_name, mqtt_broker, EDGEFLEET_DATABASE_URL=url)
    assert result.returncode == EXIT_REFUSED, result.stderr
    [line] = result.stderr.splitlines()
    shown = f"postgresql+psycopg://edgefleet:***@127.0.0.1:{port}/hub"
    assert line.startswith(f"error: cannot start the hub: cannot reach the database {shown}: ")
    assert line.endswith("(EDGEFLEET_DATABASE_URL)") and "s3cret" not in line
    assert watcher.until_marker() == []


def test_hub_without_a_broker_refuses_with_one_line(
    mqtt_broker: tuple[str, int], fleet_name: str, tmp_path: Path
) -> None:
    port = _closed_port()
    result = _second_hub(tmp_path / "second", fleet_name, ("127.0.0.1", port))
    assert result.returncode == EXIT_REFUSED, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: cannot start the hub: no MQTT broker answers at 127.0.0.1:{port}: ")
    assert line.endswith("(EDGEFLEET_MQTT_HOST, EDGEFLEET_MQTT_PORT)")
