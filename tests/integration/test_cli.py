"""The `fleet` CLI against a running hub (real Mosquitto, SQLite file, real files)."""

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
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import status, tiny_onnx

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running
        running.mqtt.clear_retained("cli-dev-1")


def fleet(hub: Hub, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    return result.exit_code, result.output


def test_models_push_ls_devices_and_assign(
    hub: Hub, tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str
) -> None:
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_onnx())

    code, out = fleet(hub, "models", "push", str(model), "--name", "tiny", "--version", "1", "-o", "json")
    assert code == 0, out
    pushed = json.loads(out)
    assert (pushed["name"], pushed["version"], pushed["length"]) == ("tiny", "1", model.stat().st_size)

    code, out = fleet(hub, "models", "push", str(model), "--name", "tiny", "--version", "1")
    assert code == 4  # refused: a conflict
    assert "409" in out and "already" in out

    code, out = fleet(hub, "models", "ls", "-o", "json")
    assert code == 0
    assert [(m["name"], m["version"]) for m in json.loads(out)] == [("tiny", "1")]

    probe = Probe(*mqtt_broker)
    topics = FleetTopics(fleet_name).device("cli-dev-1")
    try:
        probe.publish(topics.status, status("cli-dev-1").SerializeToString(), retain=True)
        wait_for(lambda: json.loads(fleet(hub, "devices", "ls", "-o", "json")[1]) != [])
        code, out = fleet(hub, "devices", "ls", "-o", "json")
        devices = json.loads(out)
        assert [d["id"] for d in devices] == ["cli-dev-1"]
        assert devices[0]["in_sync"] is True  # nothing desired yet

        code, out = fleet(hub, "assign", "--model", "tiny", "--version", "1", "-d", "cli-dev-1", "-o", "json")
        assert code == 0, out
        assert json.loads(out)["assigned"] == [{"device_id": "cli-dev-1", "generation": 1}]

        code, out = fleet(hub, "devices", "show", "cli-dev-1", "-o", "json")
        assert code == 0
        shown = json.loads(out)
        assert shown["desired_model"]["version"] == "1"
        assert shown["in_sync"] is False  # the device has not reported the model yet
    finally:
        probe.publish(topics.status, b"", retain=True)
        probe.close()


def test_errors_are_clear(hub: Hub, tmp_path: Path) -> None:
    code, out = fleet(hub, "assign", "--model", "tiny", "--version", "1", "-d", "nope")
    assert code == 3  # not found
    assert "404" in out

    code, out = fleet(hub, "assign", "--model", "tiny", "--version", "1")
    assert code == 2  # usage
    assert "give --device" in out

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    code, out = fleet(hub, "models", "push", str(bad), "--name", "bad", "--version", "1")
    assert code == 4  # refused: not a loadable model
    assert "ONNX" in out or "onnx" in out

    result = runner.invoke(app, ["models", "ls", "--hub-url", hub.api_url, "--token", "wrong"])
    assert result.exit_code == 5  # not authorised
    assert "401" in result.output

    result = runner.invoke(app, ["models", "ls", "--hub-url", "http://127.0.0.1:9", "--token", "x"])
    assert result.exit_code == 6  # unreachable
    assert "cannot reach the hub" in result.output


@pytest.mark.parametrize(
    "command",
    [[], ["hub"], ["models"], ["models", "push"], ["models", "ls"], ["devices"], ["devices", "ls"],
     ["devices", "show"], ["assign"], ["simulate"], ["demo"]],
)  # fmt: skip
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
