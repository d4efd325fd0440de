"""The device status fields that revision 0002 stores, end to end: a hub upgrades an older database on
start (EDGEFLEET_DB_AUTO_UPGRADE), a real DeviceStatus goes through the real broker, and the API and
`fleet devices show` show its firmware, trusted root and queue figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from cloud.cli import app
from cloud.hub import Hub
from cloud.settings import Settings
from edgefleet_proto.topics import FleetTopics
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.integration.db.conftest import EARLIER, HEAD, insert_device, migrate, read_device, revision_of
from tests.unit.cloud.helpers import status

pytestmark = pytest.mark.integration

DEVICE = "cam-01"
REPORTED = {
    "firmware_version": "2.1.0",
    "firmware_slot": "b",
    "trusted_root_version": 3,
    "queued_messages": 7,
    "dropped_messages": 2,
    "trial_policy_source": "rollout",
    "trial_policy_digest": "ab" * 32,
    "last_load_ms": 12.5,
    "session_memory_bytes": 3 * 1024 * 1024,
}


@pytest.fixture
def hub(
    engine: Engine, db_url: str, tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str
) -> Iterator[Hub]:
    # A database of the release before the status fields, with a device the hub already knew.
    migrate(engine, EARLIER[-1])
    insert_device(engine, DEVICE, fleet=fleet_name)
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub",
        database_url=db_url,
        db_auto_upgrade=True,
        fleet=fleet_name,
        mqtt_host=host,
        mqtt_port=port,
        api_port=0,
        grpc_port=0,
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running
        running.mqtt.clear_retained(DEVICE)


def test_a_status_is_stored_and_shown_on_an_upgraded_database(
    hub: Hub, engine: Engine, mqtt_broker: tuple[str, int], fleet_name: str
) -> None:
    assert revision_of(engine) == HEAD  # upgraded on start
    msg = status(DEVICE)
    msg.hardware_id = "sim-board"
    for name, value in REPORTED.items():
        setattr(msg, name, value)
    probe = Probe(*mqtt_broker)
    cli = CliRunner()
    show = ["devices", "show", DEVICE, "--hub-url", hub.api_url, "--token", hub.admin_token]
    try:
        probe.publish(FleetTopics(fleet_name).device(DEVICE).status, msg.SerializeToString(), retain=True)

        # The hub stores ingested statuses on its own worker: nothing to wait on from here.
        shown = wait_for(lambda: _shown_when_stored(cli, show))

        assert {k: shown[k] for k in REPORTED} == REPORTED
        assert {k: read_device(engine, DEVICE)[k] for k in REPORTED} == REPORTED
        result = cli.invoke(app, show, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "firmware      2.1.0 (slot b)" in result.output
        assert "trusted root  version 3" in result.output
        assert "queue         7 queued, 2 dropped" in result.output
        assert "trial policy  rollout (abababababab)" in result.output
        assert "last load     12 ms, 3.0 MiB" in result.output
    finally:
        probe.close()


def _shown_when_stored(cli: CliRunner, show: list[str]) -> dict[str, object] | None:
    result = cli.invoke(app, [*show, "-o", "json"])
    assert result.exit_code == 0, result.output
    device: dict[str, object] = json.loads(result.output)
    return device if device.get("queued_messages") == REPORTED["queued_messages"] else None
