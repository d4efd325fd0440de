"""The whole hub against the real broker: upload over HTTP, a device appears over MQTT,
an assignment reaches the broker retained, and the artifact streams over gRPC."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from cloud.hub import Hub
from cloud.services.director import open_envelope
from cloud.settings import Settings
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc
from tests.integration.cloud.mqtt_probe import Probe, read_retained, wait_for
from tests.unit.cloud.helpers import status, tiny_onnx

pytestmark = pytest.mark.integration


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path, fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


def test_hub_end_to_end(hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str) -> None:
    api = httpx.Client(
        base_url=hub.api_url, headers={"Authorization": f"Bearer {hub.admin_token}"}, timeout=10
    )
    device = Probe(*mqtt_broker)
    topics = FleetTopics(fleet_name).device("edge-1")
    try:
        assert api.get("/healthz").json() == {"status": "ok", "db": True, "mqtt": True}
        data = tiny_onnx()
        mv = api.post(
            "/api/v1/models", data={"name": "digits", "version": "1"}, files={"file": ("m.onnx", data)}
        ).json()

        device.publish(topics.status, status("edge-1").SerializeToString(), retain=True)
        wait_for(lambda: api.get("/api/v1/devices").json()["count"] == 1)

        r = api.post("/api/v1/assignments", json={"model": "digits", "version": "1", "devices": ["edge-1"]})
        assert r.json() == {"assigned": [{"device_id": "edge-1", "generation": 1}], "count": 1, "skipped": []}
        # The desired topic carries the director's signed envelope.
        desired = open_envelope(read_retained(*mqtt_broker, topics.desired))
        assert (desired.generation, desired.model.sha256, desired.artifact_endpoint) == (
            1,
            mv["sha256"],
            hub.grpc_endpoint,
        )

        with grpc.insecure_channel(desired.artifact_endpoint) as channel:
            stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
            chunks = list(stub.Fetch(artifact_pb2.FetchRequest(sha256=desired.model.sha256), timeout=10))
        fetched = b"".join(c.data for c in chunks)
        assert fetched == data and hashlib.sha256(fetched).hexdigest() == desired.model.sha256
    finally:
        device.retained_topics.add(topics.desired)
        device.close()
        api.close()
