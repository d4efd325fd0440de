"""`fleet` as an operator meets it, against a running hub: short ids, exit codes, 80 columns, keys init."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud.cli import app
from cloud.client.hub import HubClient
from cloud.hub import Hub
from cloud.settings import Settings
from edgefleet_proto.topics import FleetTopics
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import status, tiny_onnx

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
# Versions as `fleet models optimize` makes them: time and run id, 25 characters.
VERSIONS = ("20261203T062512Z-4d85aa01", "20261203T062513Z-4d85aa02")
# Run ids that share 10 characters, so their short forms must be longer than the minimum of 8.
RUN_IDS = ("4d85aa0011" + "0" * 22, "4d85aa0022" + "1" * 22, "9f" + "2" * 30)


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


def fleet(hub: Hub, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    return result.exit_code, result.output


def fleet_80(hub: Hub, *args: str) -> str:
    """`COLUMNS=80 fleet ARGS` in its own process, as a terminal 80 characters wide runs it."""
    env = os.environ | {"COLUMNS": "80", "EDGEFLEET_HUB_URL": hub.api_url, "EDGEFLEET_TOKEN": hub.admin_token}
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert all(len(line) <= 80 for line in done.stdout.splitlines()), done.stdout
    return done.stdout


def _cells(line: str, bar: str) -> list[str]:
    return [c.strip() for c in line.split(bar)[1:-1]]


def column(table: str, header: str) -> list[str]:
    """The non-empty cells of one column of a rich table (heavy bars in the header, light in the body)."""
    lines = table.splitlines()
    # A narrow column wraps its header over several lines: join them back.
    parts = [_cells(line, "┃") for line in lines if line.startswith("┃")]
    headers = [" ".join(p[i] for p in parts if p[i]) for i in range(len(parts[0]))]
    at = headers.index(header)
    return [cells[at] for line in lines if line.startswith("│") and (cells := _cells(line, "│"))[at]]


def test_versions_show_whole_at_80_columns_and_show_takes_a_prefix(hub: Hub, tmp_path: Path) -> None:
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_onnx())
    for version in VERSIONS:
        code, out = fleet(hub, "models", "push", str(model), "--name", "digits-mlp", "--version", version)
        assert code == 0, out

    listed = fleet_80(hub, "models", "ls")
    assert column(listed, "version") == list(VERSIONS)

    code, out = fleet(hub, "models", "show", "digits-mlp", VERSIONS[1][:17], "-o", "json")
    assert code == 0, out
    assert json.loads(out)["version"] == VERSIONS[1]

    code, out = fleet(hub, "models", "show", "digits-mlp", "20261203T06251")
    assert code == 4  # refused: ambiguous
    said = " ".join(out.split())
    assert "409" in said and "ambiguous" in said and VERSIONS[0] in said and VERSIONS[1] in said

    code, out = fleet(hub, "models", "show", "digits-mlp", "1999")
    assert code == 3 and "404" in out


def test_experiment_ids_show_as_unique_prefixes_that_show_accepts(hub: Hub) -> None:
    now = datetime.now(UTC).isoformat()
    with HubClient(hub.api_url, hub.admin_token) as client:
        for run_id in RUN_IDS:
            client.record_experiment(
                {"run_id": run_id, "name": "digits-mlp", "kind": "mlp", "params": {}, "seed": 0,
                 "metrics": {"test_accuracy": 0.97}, "dataset_name": "digits", "dataset_hash": "ab" * 32,
                 "code_revision": "c0ffee", "duration_s": 1.5, "device": "cpu", "started_at": now,
                 "finished_at": now}
            )  # fmt: skip

    shown = column(fleet_80(hub, "experiments", "ls"), "run")
    assert sorted(shown) == ["4d85aa001", "4d85aa002", "9f222222"]
    for prefix in shown:
        code, out = fleet(hub, "experiments", "show", prefix, "-o", "json")
        assert code == 0, out
        assert json.loads(out)["run_id"].startswith(prefix)

    code, out = fleet(hub, "experiments", "show", "4d85")
    assert code == 4
    said = " ".join(out.split())
    assert "ambiguous" in said and RUN_IDS[0] in said and RUN_IDS[1] in said


def test_device_ids_stay_whole_and_show_takes_a_prefix(
    hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str
) -> None:
    ids = ("site-north-gateway-camera-0001", "site-north-gateway-camera-0002", "lab-01")
    probe = Probe(*mqtt_broker)
    topics = FleetTopics(fleet_name)
    try:
        for device_id in ids:
            probe.publish(topics.device(device_id).status, status(device_id).SerializeToString(), retain=True)
        wait_for(lambda: len(json.loads(fleet(hub, "devices", "ls", "-o", "json")[1])) == len(ids))

        listed = fleet_80(hub, "devices", "ls")
        assert sorted(column(listed, "device")) == sorted(ids)
        assert column(listed, "trial") == ["-"] * len(ids)
        assert column(listed, "health") == ["serving"] * len(ids)

        code, out = fleet(hub, "devices", "show", "lab")
        assert code == 0, out
        assert re.search(r"^device\s+lab-01$", out, re.MULTILINE) and "health" in out

        code, out = fleet(hub, "devices", "show", "site-north")
        assert code == 4
        said = " ".join(out.split())
        assert "ambiguous" in said and ids[0] in said and ids[1] in said

        code, out = fleet(hub, "devices", "show", "nope")
        assert code == 3
    finally:
        for device_id in ids:
            probe.publish(topics.device(device_id).status, b"", retain=True)
        probe.close()


def test_keys_init_as_keys_status_suggests_it(hub: Hub, tmp_path: Path) -> None:
    code, out = fleet(hub, "keys", "status")
    assert code == 0, out
    suggested = re.search(r"`(fleet keys init --root-dir DIR)`", " ".join(out.split()))
    assert suggested, out

    usb = tmp_path / "usb"
    args = [*suggested.group(1).replace("DIR", str(usb)).split()[1:], "--keys", "3", "--threshold", "2"]
    assert args[:4] == ["keys", "init", "--root-dir", str(usb)]
    result = runner.invoke(
        app,
        [*args, "--hub-url", hub.api_url, "--token", hub.admin_token],
        env={"EDGEFLEET_ROOT_PASSPHRASE": "custodian passphrase"},
    )
    assert result.exit_code == 0, result.output
    assert len(list(usb.glob("*.pem"))) == 3

    code, out = fleet(hub, "keys", "status", "-o", "json")
    keys = json.loads(out)
    root = next(r for r in keys["roles"] if r["role"] == "root")
    assert not keys["root_keys_on_hub"] and (root["threshold"], len(root["keyids"])) == (2, 3)

    # The same folder twice would mix two roots' keys: refused before anything is sent.
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    assert result.exit_code == 2 and "already holds keys" in " ".join(result.output.split())


def test_train_writes_its_run_under_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = runner.invoke(
        app,
        ["train", "--model", "mlp", "--epochs", "1", "--no-register", "-o", "json"],
        env={"EDGEFLEET_DATA_DIR": str(data)},
    )
    assert result.exit_code == 0, result.output
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    assert run_dir.parent == data / "runs" and (run_dir / "run.json").is_file()
