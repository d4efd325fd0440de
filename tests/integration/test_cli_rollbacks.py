"""`fleet rollbacks ls` and `fleet devices show` against a running hub: a device's rollback, end to end.

The device is played by an MQTT probe on the real Mosquitto: it reports a status and a
ROLLED_BACK event; the hub stores them; the CLI shows the rollback and the hub refuses to
assign that version to that device again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud.cli import app
from cloud.hub import Hub
from cloud.settings import Settings
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import common_pb2, event_pb2
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import status, tiny_onnx

pytestmark = pytest.mark.integration

runner = CliRunner()
DEVICE = "cli-rb-1"


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running
        running.mqtt.clear_retained(DEVICE)


def fleet(hub: Hub, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    return result.exit_code, result.output


def test_a_rollback_shows_in_the_cli_and_the_version_is_not_offered_again(
    hub: Hub, tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str
) -> None:
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_onnx(3.0))
    code, out = fleet(hub, "models", "push", str(model), "--name", "tiny", "--version", "2")
    assert code == 0, out
    probe = Probe(*mqtt_broker)
    topics = FleetTopics(fleet_name).device(DEVICE)
    event = event_pb2.Event(
        device_id=DEVICE,
        seq=9,
        ts_ms=1_900_000_000_000,
        kind=event_pb2.EVENT_KIND_ROLLED_BACK,
        model=common_pb2.ModelRef(name="tiny", version="2", format="onnx", sha256="cd" * 32, length=10),
        reason="tiny:2 rolled back: the new version returned NaN or inf: 2 of 2 values of output 'y'",
        details={"gate": "nonfinite", "refused": "true", "requests": "1", "swap_ms": "0.012"},
        generation=3,
    )
    try:
        probe.publish(topics.status, status(DEVICE).SerializeToString(), retain=True)
        probe.publish(topics.events, event.SerializeToString())
        wait_for(lambda: json.loads(fleet(hub, "rollbacks", "ls", "-o", "json")[1]) != [])

        code, out = fleet(hub, "rollbacks", "ls", "-o", "json")
        assert code == 0, out
        (row,) = json.loads(out)
        assert (row["device_id"], row["model_version"], row["gate"], row["refused"]) == (
            DEVICE,
            "2",
            "nonfinite",
            True,
        )

        code, out = fleet(hub, "rollbacks", "ls", "--device", DEVICE)
        assert code == 0 and "nonfinite" in out and "tiny:2" in out and "swap_ms=0.012" in out

        code, out = fleet(hub, "devices", "show", DEVICE, "-o", "json")
        assert code == 0
        assert [r["model_version"] for r in json.loads(out)["rollbacks"]] == ["2"]

        code, out = fleet(hub, "assign", "--model", "tiny", "--version", "2", "-d", DEVICE)
        assert code == 4  # refused: a conflict
        said = " ".join(out.split())  # the console wraps long lines
        assert "409" in said and "does not offer tiny:2 again" in said and "NaN" in said
    finally:
        probe.publish(topics.status, b"", retain=True)
        probe.close()


def test_rollbacks_ls_has_help() -> None:
    result = runner.invoke(app, ["rollbacks", "ls", "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
