"""`fleet rollouts` against a running hub: a plan file in, the engine offering devices, an operator steering.

The hub runs on SQLite and on PostgreSQL with the real Mosquitto; the devices are played by an MQTT
probe that reports their statuses, so the hub's engine offers them the target for real (desired
states published retained) while the commands create, list, show, watch, pause, resume and abort.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cloud.cli import app
from cloud.cli.common import ExitCode
from cloud.client.hub import HubClient
from cloud.hub import Hub
from cloud.settings import Settings
from edgefleet_proto.topics import FleetTopics
from tests.integration.cloud.conftest import db_url  # noqa: F401  (fixture: SQLite and PostgreSQL)
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import status, tiny_onnx

pytestmark = pytest.mark.integration

runner = CliRunner()
DEVICES = {"ro-1": "canary", "ro-2": "canary", "ro-3": "main"}
PLAN = """
name: tiny-staged
target: {kind: model, model: tiny, version: "2"}
stages:
  - {name: canary, cohort: canary, bake: 1h}
  - {name: everyone, percent: 100, bake: 10m}
gates: {max_rollback_pct: 5, max_error_rate: 0.05}
on_failure: abort
"""


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str, db_url: str) -> Iterator[Hub]:  # noqa: F811
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub",
        database_url=db_url,
        fleet=fleet_name,
        mqtt_host=host,
        mqtt_port=port,
        api_port=0,
        grpc_port=0,
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running
        for device in DEVICES:
            running.mqtt.clear_retained(device)


@pytest.fixture
def devices(hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[list[str]]:
    """Three online devices reporting a ring label; a canary cohort of two of them; model tiny:2."""
    probe = Probe(*mqtt_broker)
    topics = FleetTopics(fleet_name)
    try:
        for device, ring in DEVICES.items():
            probe.publish(
                topics.device(device).status,
                status(device, labels={"ring": ring}).SerializeToString(),
                retain=True,
            )
        with HubClient(hub.api_url, hub.admin_token) as client:
            wait_for(lambda: len(client.list_devices(state="online")) == len(DEVICES))
            client.create_cohort("canary", selector="ring=canary")
        yield sorted(DEVICES)
    finally:
        for device in DEVICES:
            probe.publish(topics.device(device).status, b"", retain=True)
        probe.close()


@pytest.fixture
def model(hub: Hub, tmp_path: Path) -> None:
    """tiny:1 and tiny:2 registered: 2 is what the rollouts offer."""
    for version in ("1", "2"):
        path = tmp_path / f"tiny-{version}.onnx"
        path.write_bytes(tiny_onnx(float(version)))
        code, out = fleet(hub, "models", "push", str(path), "--name", "tiny", "--version", version)
        assert code == 0, out


def fleet(hub: Hub, *args: str, token: str | None = None) -> tuple[int, str]:
    result = runner.invoke(
        app, [*args, "--hub-url", hub.api_url, "--token", token or hub.admin_token], env={"COLUMNS": "200"}
    )
    return result.exit_code, result.output


def show(hub: Hub, rollout_id: str) -> dict[str, Any]:
    code, out = fleet(hub, "rollouts", "show", rollout_id, "-o", "json")
    assert code == 0, out
    view: dict[str, Any] = json.loads(out)
    return view


def _viewer_token(hub: Hub) -> str:
    r = httpx.post(
        f"{hub.api_url}/api/v1/tokens",
        headers={"Authorization": f"Bearer {hub.admin_token}"},
        json={"name": "watcher", "role": "viewer"},
    )
    r.raise_for_status()
    token: str = r.json()["token"]
    return token


def test_an_operator_creates_watches_and_steers_a_rollout(
    hub: Hub, devices: list[str], model: None, tmp_path: Path
) -> None:
    # What the devices run before: the version an abort gives back.
    code, out = fleet(hub, "assign", "--model", "tiny", "--version", "1", *(f"--device={d}" for d in devices))
    assert code == 0, out
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    code, out = fleet(hub, "rollouts", "create", "-f", str(plan), "-o", "json")
    assert code == 0, out
    rollout_id = json.loads(out)["id"]

    # The engine starts it at once (the API kicks it) and offers the canary cohort's two devices.
    view = wait_for(lambda: (v := show(hub, rollout_id[:8]))["state"] == "baking" and v, timeout=20)
    canary, everyone = view["stage_detail"]
    assert canary["by_state"]["offered"] == 2 and everyone["by_state"]["pending"] == 1
    assert [t["event"] for t in view["transitions"]] == ["start", "stage_offered"]

    code, out = fleet(hub, "rollouts", "ls", "-o", "json")
    assert code == 0, out
    assert [r["id"] for r in json.loads(out)] == [rollout_id]
    code, out = fleet(hub, "rollouts", "ls", "--state", "paused", "-o", "json")
    assert code == 0 and json.loads(out) == []
    code, out = fleet(hub, "rollouts", "ls")
    assert code == 0 and rollout_id[:8] in out and "tiny:2" in out and "1/2 canary" in out

    code, frame = fleet(hub, "rollouts", "watch", rollout_id[:8], "--once")
    assert code == 0, frame
    for said in ("tiny-staged", "baking", "stage 1/2 canary", "stages", "everyone", "offered",
                 "max_rollback_pct", "max_error_rate", "gates of stage canary", "next", "start",
                 "stage_offered"):  # fmt: skip
        assert said in frame, said

    # An operator's actions: exit 0 when the state allows them, 4 (refused: 409) when not.
    code, out = fleet(hub, "rollouts", "pause", rollout_id[:8], "--reason", "night freeze")
    assert code == 0 and "is now paused" in out, out
    code, out = fleet(hub, "rollouts", "pause", rollout_id[:8])
    assert code == ExitCode.REFUSED and "cannot pause" in " ".join(out.split()), out
    code, out = fleet(hub, "rollouts", "approve", rollout_id[:8])
    assert code == ExitCode.REFUSED, out
    code, out = fleet(hub, "rollouts", "resume", rollout_id[:8], "-o", "json")
    assert code == 0 and json.loads(out)["state"] in ("running", "baking"), out

    code, out = fleet(hub, "rollouts", "abort", rollout_id[:8], token=_viewer_token(hub))
    assert code == ExitCode.AUTH, out
    code, out = fleet(hub, "rollouts", "abort", rollout_id[:8], "--reason", "wrong build")
    assert code == 0, out
    done = wait_for(lambda: (v := show(hub, rollout_id))["state"] == "rolled_back" and v, timeout=20)
    steps = [(t["event"], t["actor"], t["reason"]) for t in done["transitions"]]
    assert ("pause", "bootstrap-admin", "night freeze") in steps and (
        "abort",
        "bootstrap-admin",
        "wrong build",
    ) in steps
    assert done["stage_detail"][0]["by_state"]["restored"] == 2

    # Watching a rollout that has ended returns at once: 1, because it did not complete.
    code, out = fleet(hub, "rollouts", "watch", rollout_id[:8], "--interval", "0.2")
    assert code == ExitCode.ERROR and "rolled_back" in out, out


def test_a_plan_with_errors_is_refused_with_every_problem_and_nothing_is_stored(
    hub: Hub, model: None, tmp_path: Path
) -> None:
    plan = tmp_path / "bad.yaml"
    plan.write_text(PLAN.replace("bake: 1h", "bake: 1h, percent: 150").replace("abort", "explode"))
    code, out = fleet(hub, "rollouts", "create", "-f", str(plan))
    said = " ".join(out.split())
    assert code == ExitCode.REFUSED, out
    assert "stages[0].percent: expected a number in (0, 100], got 150" in said
    assert "on_failure" in said
    code, out = fleet(hub, "rollouts", "ls", "-o", "json")
    assert code == 0 and json.loads(out) == []

    code, out = fleet(hub, "rollouts", "create", "-f", str(tmp_path / "missing.yaml"))
    assert code == ExitCode.USAGE and "is not a file" in out
    code, out = fleet(hub, "rollouts", "show", "feedbeef")
    assert code == ExitCode.NOT_FOUND, out
