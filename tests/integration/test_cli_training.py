"""`fleet training runs` and `fleet data` against a running hub (SQLite and PostgreSQL, the real Mosquitto).

No run trains here (the pipeline has its own tests): runs are queued by hand, or left awaiting
approval in the hub's database as the worker leaves them, and the commands list, show, approve,
reject and start them; labelled files go up through `fleet data add`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cloud.cli import app
from cloud.cli.common import ExitCode
from cloud.hub import Hub
from cloud.settings import Settings
from tests.integration.cloud.conftest import db_url  # noqa: F401  (fixture: SQLite and PostgreSQL)
from tests.unit.cloud.ct_helpers import awaiting_run, weak_champion, write_npz
from tests.unit.cloud.helpers import T0

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str, db_url: str) -> Iterator[Hub]:  # noqa: F811
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", database_url=db_url, fleet=fleet_name, mqtt_host=host, mqtt_port=port,
        api_port=0, grpc_port=0,
    )  # fmt: skip
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


def fleet(hub: Hub, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token], env={"COLUMNS": "200"}
    )
    return result.exit_code, result.output


def fleet_json(hub: Hub, *args: str) -> Any:
    code, out = fleet(hub, *args, "-o", "json")
    assert code == 0, out
    return json.loads(out)


@pytest.fixture
def models(hub: Hub, tmp_path: Path) -> None:
    """digits-mlp 1 (the champion) and 2 (a challenger the worker registered)."""
    for version in ("1", "2"):
        path = tmp_path / f"digits-{version}.onnx"
        path.write_bytes(weak_champion())
        code, out = fleet(hub, "models", "push", str(path), "--name", "digits-mlp", "--version", version)
        assert code == 0, out


def test_labelled_data_goes_up_once_and_a_bad_file_is_refused(hub: Hub, models: None, tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((40, 64)).astype(np.float32)
    y = np.arange(40) % 10
    good = write_npz(tmp_path / "field.npz", x, y)
    code, out = fleet(hub, "data", "add", str(good), "--model", "digits-mlp")
    assert code == 0, out
    assert "40 samples for digits-mlp" in out
    (row,) = fleet_json(hub, "data", "ls")
    assert (row["samples"], row["filename"], row["model_name"]) == (40, "field.npz", "digits-mlp")

    raw = write_npz(tmp_path / "raw.npz", x * 16, y)
    code, out = fleet(hub, "data", "add", str(raw))
    assert code == ExitCode.REFUSED, out
    assert "expected x scaled to [0, 1]" in " ".join(out.split())
    code, out = fleet(hub, "data", "add", str(good), "--model", "nope")
    assert code == ExitCode.NOT_FOUND, out
    assert len(fleet_json(hub, "data", "ls")) == 1


def test_an_operator_starts_lists_shows_and_cancels_a_run(hub: Hub, models: None) -> None:
    started = fleet_json(hub, "training", "runs", "start", "digits-mlp", "--reason", "field data")
    assert (started["state"], started["trigger"], started["summary"]) == ("queued", "manual", "field data")
    code, out = fleet(hub, "training", "runs", "start", "digits-mlp")
    assert code == ExitCode.REFUSED and "already has a training run queued" in " ".join(out.split())

    code, out = fleet(hub, "training", "runs", "ls")
    assert code == 0 and started["id"][:8] in out and "manual" in out
    code, out = fleet(hub, "training", "runs", "show", started["id"][:8])
    assert code == 0, out
    assert "field data" in out and f"fleet training runs reject {started['id'][:8]}" in out

    rejected = fleet_json(hub, "training", "runs", "reject", started["id"][:8], "--reason", "not now")
    assert rejected["state"] == "rejected"
    code, out = fleet(hub, "training", "runs", "approve", started["id"][:8])
    assert code == ExitCode.REFUSED and "a training run that is rejected cannot approve" in " ".join(
        out.split()
    )
    code, out = fleet(hub, "training", "runs", "show", "ffffffff")
    assert code == ExitCode.NOT_FOUND, out


def test_approving_a_challenger_starts_its_rollout(hub: Hub, models: None) -> None:
    assert hub.context is not None
    run_id = awaiting_run(
        hub.context.sessions, model="digits-mlp", challenger="2", now=T0, fleet=hub.settings.fleet
    )
    (listed,) = fleet_json(hub, "training", "runs", "ls", "--state", "awaiting_approval")
    assert listed["id"] == run_id
    code, out = fleet(hub, "training", "runs", "show", run_id[:8])
    assert code == 0, out
    assert "0.9500" in out and "promote" in out

    approved = fleet_json(hub, "training", "runs", "approve", run_id[:8], "--reason", "figures look right")
    assert approved["state"] == "rolled_out" and approved["rollout_id"]
    rollout = fleet_json(hub, "rollouts", "show", approved["rollout_id"][:8])
    assert (rollout["target"]["version"], [s["name"] for s in rollout["stage_detail"]]) == (
        "2",
        ["canary", "rest"],
    )
