"""`fleet keys` and `fleet firmware` against a running hub (real Mosquitto, SQLite, files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud.cli import app
from cloud.hub import Hub
from cloud.settings import Settings
from firmware_images.build import load_bundle
from firmware_images.samples import SAMPLE_DIR, sample_payload

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        yield running


def fleet(hub: Hub, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    return result.exit_code, result.output


def test_keys_status_rotate_and_root(hub: Hub, tmp_path: Path) -> None:
    code, out = fleet(hub, "keys", "status", "-o", "json")
    assert code == 0, out
    status = json.loads(out)
    assert status["root_keys_on_hub"] is True
    assert {r["role"] for r in status["roles"]} == {"root", "targets", "snapshot", "timestamp", "director"}

    code, out = fleet(hub, "keys", "rotate", "timestamp")
    assert code == 0, out
    assert "published root v2" in out

    code, out = fleet(hub, "keys", "root", "--out", str(tmp_path / "root.json"))
    assert code == 0, out
    assert json.loads((tmp_path / "root.json").read_text())["signed"]["version"] == 2

    code, out = fleet(hub, "keys", "rotate", "nobody")
    assert code == 4 and "cannot rotate" in out  # the hub refuses an unknown role


def test_firmware_build_push_ls(hub: Hub, tmp_path: Path) -> None:
    payload = tmp_path / "image.bin"
    payload.write_bytes(sample_payload("sim-board", "1.0.0"))
    out_file = tmp_path / "fw.efw"
    result = runner.invoke(
        app,
        ["firmware", "build", str(payload), "--name", "edgefleet-fw", "--version", "1.0.0",
         "--hardware", "sim-board", "--out", str(out_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out_file.read_bytes() == (SAMPLE_DIR / "edgefleet-fw-sim-board-1.0.0.efw").read_bytes()

    code, out = fleet(hub, "firmware", "push", str(out_file))
    assert code == 0, out
    code, out = fleet(
        hub, "firmware", "push", str(SAMPLE_DIR / "edgefleet-fw-sim-board-1.1.0.efw"), "-o", "json"
    )
    assert code == 0, out
    assert sorted(r["kind"] for r in json.loads(out)["data"]) == ["delta", "full"]

    code, out = fleet(hub, "firmware", "ls", "-o", "json")
    assert code == 0, out
    assert [(r["version"], r["kind"]) for r in json.loads(out)] == [("1.0.0", "full"), ("1.1.0", "full"),
                                                                     ("1.1.0", "delta")]  # fmt: skip

    delta = tmp_path / "d.efwd"
    newer = str(SAMPLE_DIR / "edgefleet-fw-sim-board-1.1.0.efw")
    result = runner.invoke(app, ["firmware", "delta", str(out_file), newer, "--out", str(delta)])
    assert result.exit_code == 0, result.output
    assert load_bundle(delta).manifest.base_version == "1.0.0"


@pytest.mark.parametrize(
    "command",
    [["keys"], ["keys", "init"], ["keys", "rotate"], ["keys", "sign"], ["keys", "status"], ["keys", "root"],
     ["firmware"], ["firmware", "build"], ["firmware", "push"], ["firmware", "assign"]],
)  # fmt: skip
def test_every_signing_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
