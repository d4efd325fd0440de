"""`fleet devices label|ls`, `fleet cohorts` and `fleet assign --label SELECTOR` against a running hub.

Devices are played by an MQTT probe on the real Mosquitto: each reports a retained status with
labels; the hub stores them; the CLI labels, selects, pages and groups them into cohorts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from cloud.cli import app
from cloud.hub import Hub
from cloud.services import cohorts
from cloud.settings import Settings
from edgefleet_proto.topics import FleetTopics
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import status, tiny_onnx

pytestmark = pytest.mark.integration

runner = CliRunner()
REPORTED = {
    "cli-co-1": {"site": "lab"},
    "cli-co-2": {"site": "lab", "tier": "edge"},
    "cli-co-3": {"site": "office"},
    "cli-co-4": {"site": "office", "tier": "edge"},
    "cli-co-5": {},
}
LATE = "cli-co-6"


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running
        for device_id in [*REPORTED, LATE]:
            running.mqtt.clear_retained(device_id)


@pytest.fixture
def probe(mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Probe]:
    p = Probe(*mqtt_broker)
    yield p
    for device_id in [*REPORTED, LATE]:
        p.publish(FleetTopics(fleet_name).device(device_id).status, b"", retain=True)
    p.close()


def fleet(hub: Hub, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command."""
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    return result.exit_code, result.stdout, result.stderr


def _ids(hub: Hub, *args: str) -> list[str]:
    code, out, err = fleet(hub, "devices", "ls", *args, "-o", "json")
    assert code == 0, err
    return [d["id"] for d in json.loads(out)]


def _report(probe: Probe, fleet_name: str, device_id: str, labels: dict[str, str]) -> None:
    topic = FleetTopics(fleet_name).device(device_id).status
    probe.publish(topic, status(device_id, labels=labels).SerializeToString(), retain=True)


def test_label_select_page_and_group_devices(hub: Hub, probe: Probe, fleet_name: str, tmp_path: Path) -> None:
    for device_id, labels in REPORTED.items():
        _report(probe, fleet_name, device_id, labels)
    wait_for(lambda: len(_ids(hub, "--all")) == len(REPORTED))

    # Operator labels win over reported ones; KEY=- hides one, KEY- brings the reported one back.
    code, out, err = fleet(hub, "devices", "label", "cli-co-3", "site=lab", "ring=1", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["labels"] == {"ring": "1", "site": "lab"}
    code, out, err = fleet(hub, "devices", "label", "cli-co-2", "tier=-")
    assert code == 0, err
    assert "cli-co-2: site=lab" in out and "hidden reported labels: tier" in out
    assert _ids(hub, "--label", "site=lab") == ["cli-co-1", "cli-co-2", "cli-co-3"]
    assert _ids(hub, "--label", "tier in (edge),site!=lab") == ["cli-co-4"]
    assert _ids(hub, "--label", "!site") == ["cli-co-5"]
    code, out, err = fleet(hub, "devices", "label", "cli-co-3", "site-")
    assert code == 0, err
    assert _ids(hub, "--label", "site=lab") == ["cli-co-1", "cli-co-2"]

    code, _out, err = fleet(hub, "devices", "label", "ghost-device", "a=b")
    assert code == 3 and "404" in err
    code, _out, err = fleet(hub, "devices", "label", "cli-co-1", "a=two words")
    assert code == 4 and "invalid label value 'two words'" in " ".join(err.split())

    # Pages: --limit gives one and says how to go on; --cursor goes on; --all reads them all.
    code, out, err = fleet(hub, "devices", "ls", "--limit", "2", "-o", "json")
    assert code == 0 and [d["id"] for d in json.loads(out)] == ["cli-co-1", "cli-co-2"]
    cursor = err.split("--cursor ", 1)[1].split()[0]
    assert _ids(hub, "--limit", "2", "--cursor", cursor) == ["cli-co-3", "cli-co-4"]
    assert _ids(hub, "--all") == sorted(REPORTED)

    # Cohorts: a selector, a list, or both; membership is evaluated when asked.
    code, out, err = fleet(
        hub, "cohorts", "create", "edge", "--selector", "tier = edge", "--device", "cli-co-5", "-o", "json"
    )
    assert code == 0, err
    created = json.loads(out)
    assert (created["selector"], created["devices"], created["member_count"]) == (
        "tier=edge",
        ["cli-co-5"],
        2,
    )
    code, _out, err = fleet(hub, "cohorts", "create", "edge", "--selector", "site=lab")
    assert code == 4 and "already has a cohort named 'edge'" in " ".join(err.split())
    code, _out, err = fleet(hub, "cohorts", "create", "ghosts", "--device", "no-such-device")
    assert code == 3 and "unknown devices: no-such-device" in " ".join(err.split())
    code, out, err = fleet(hub, "cohorts", "create", "lab", "--selector", "site=lab")
    assert code == 0 and "created cohort lab with 2 member(s) now" in out

    code, out, err = fleet(hub, "cohorts", "ls", "-o", "json")
    assert code == 0, err
    assert [(c["name"], c["member_count"]) for c in json.loads(out)] == [("edge", 2), ("lab", 2)]
    code, out, err = fleet(hub, "cohorts", "ls", "--limit", "1")
    assert code == 0 and "edge" in out and "lab" not in out and "--cursor" in err

    _report(probe, fleet_name, LATE, {"tier": "edge"})  # joins after the cohort was made
    wait_for(lambda: LATE in _ids(hub, "--all"))
    code, out, err = fleet(hub, "cohorts", "show", "edge", "--limit", "2")
    assert code == 0, err
    assert "members      3" in out and "cli-co-4, cli-co-5" in out and "--cursor" in err
    code, out, err = fleet(hub, "cohorts", "show", "edge", "-o", "json")
    assert json.loads(out)["members"]["data"] == ["cli-co-4", "cli-co-5", LATE]

    # Assignment by a full selector goes through the same SQL.
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_onnx())
    assert fleet(hub, "models", "push", str(model), "--name", "tiny", "--version", "1")[0] == 0
    code, out, err = fleet(
        hub,
        "assign",
        "--model",
        "tiny",
        "--version",
        "1",
        "--label",
        "tier in (edge),site notin (lab)",
        "-o",
        "json",
    )
    assert code == 0, err
    assert sorted(a["device_id"] for a in json.loads(out)["assigned"]) == ["cli-co-4", LATE]

    # Deleting a cohort something uses is refused with its reason; otherwise it is gone.
    def in_use(_s: Session, _fleet: str, name: str) -> str | None:
        return "active rollout r-1 stages over it" if name == "edge" else None

    cohorts.register_cohort_in_use(in_use)
    try:
        code, _out, err = fleet(hub, "cohorts", "rm", "edge")
        assert code == 4 and "cohort 'edge' is in use: active rollout r-1 stages over it" in " ".join(
            err.split()
        )
    finally:
        cohorts.unregister_cohort_in_use(in_use)
    code, out, err = fleet(hub, "cohorts", "rm", "edge")
    assert code == 0 and "deleted cohort edge" in out
    code, _out, err = fleet(hub, "cohorts", "show", "edge")
    assert code == 3


def test_cohorts_commands_have_help() -> None:
    for command in ("create", "ls", "show", "rm"):
        result = runner.invoke(app, ["cohorts", command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output
