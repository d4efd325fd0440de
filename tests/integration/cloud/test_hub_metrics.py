"""The hub's /metrics while it ingests from the real broker: the ingest, API and scheduler figures move.

A whole hub (SQLite in a temp folder) against the real Mosquitto; a device publishes its status,
telemetry and an event, and Prometheus' own parser reads what /metrics answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloud.hub import Hub
from cloud.settings import Settings
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import telemetry_pb2
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import event, status

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path, fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


def scrape(api: httpx.Client) -> Samples:
    response = api.get("/metrics")
    assert response.status_code == 200, (
        f"expected 200 from /metrics, got {response.status_code}: {response.text}"
    )
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def recent_telemetry(device_id: str, seqs: range) -> telemetry_pb2.TelemetryBatch:
    """Windows that ended 20 s ago by this machine's clock (the device's and the hub's here)."""
    end_ms = int(time.time() * 1000) - 20_000
    batch = telemetry_pb2.TelemetryBatch(device_id=device_id)
    for seq in seqs:
        batch.windows.add(
            seq=seq,
            window_start_ms=end_ms - 10_000,
            window_end_ms=end_ms,
            model_name="tiny",
            model_version="1",
            requests=10,
        )
    return batch


def test_metrics_move_as_the_hub_ingests(hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str) -> None:
    api = httpx.Client(
        base_url=hub.api_url, headers={"Authorization": f"Bearer {hub.admin_token}"}, timeout=10
    )
    device = Probe(*mqtt_broker)
    topics = FleetTopics(fleet_name).device("edge-m")
    try:
        before = scrape(api)
        assert sample(before, "edgefleet_ingest_messages_total", channel="telemetry") == 0
        assert sample(before, "edgefleet_mqtt_connected") == 1

        device.publish(topics.status, status("edge-m").SerializeToString(), retain=True)
        for first in (1, 4):
            device.publish(
                topics.telemetry, recent_telemetry("edge-m", range(first, first + 3)).SerializeToString()
            )
        device.publish(topics.events, event("edge-m", 1).SerializeToString())

        def ingested() -> Samples | None:
            now = scrape(api)
            moved = (
                sample(now, "edgefleet_ingest_messages_total", channel="telemetry") == 2
                and sample(now, "edgefleet_ingest_messages_total", channel="status") >= 1
                and sample(now, "edgefleet_ingest_messages_total", channel="events") == 1
            )
            return now if moved else None

        after = wait_for(ingested, timeout=15)
        # Six windows stored, each about 20 s after it ended.
        lag = {"channel": "telemetry"}
        assert sample(after, "edgefleet_ingest_window_lag_seconds_count", **lag) == 6
        assert sample(after, "edgefleet_ingest_window_lag_seconds_bucket", le="15.0", **lag) == 0
        assert sample(after, "edgefleet_ingest_window_lag_seconds_bucket", le="60.0", **lag) == 6
        assert sample(after, "edgefleet_ingest_batch_size_sum") >= 4
        assert sample(after, "edgefleet_ingest_commit_latency_seconds_count") >= 4
        assert sample(after, "edgefleet_ingest_records_total", outcome="telemetry_windows") == 6
        # The API's own requests are counted by route; the rollout engine ticked at start.
        assert (
            sample(after, "edgefleet_http_requests_total", method="GET", route="/metrics", status="2xx") >= 1
        )
        job = f"edgefleet-rollout-tick/{fleet_name}"
        runs = wait_for(
            lambda: sample(scrape(api), "edgefleet_scheduler_job_runs_total", job_id=job), timeout=15
        )
        assert runs >= 1
        assert sample(after, "edgefleet_rollouts", fleet=fleet_name, state="running") == 0
    finally:
        device.close()
        api.close()
