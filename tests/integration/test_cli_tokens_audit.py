"""`fleet tokens create|ls|revoke` and `fleet audit ls` against a running hub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud.cli import app
from cloud.cli.audit import moment
from cloud.hub import Hub
from cloud.settings import Settings
from tests.unit.cloud.helpers import T0

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


def fleet(hub: Hub, *args: str, token: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", token or hub.admin_token])
    return result.exit_code, result.stdout, result.stderr


def test_issue_use_list_and_revoke_a_token_then_read_the_audit_log(hub: Hub) -> None:
    code, out, err = fleet(hub, "tokens", "create", "ci", "--role", "operator", "--expires-in", "12h")
    assert code == 0, err
    secret = out.strip()
    assert len(secret) > 30 and "\n" not in secret and "shown once" in err
    code, out, err = fleet(hub, "cohorts", "create", "lab", "--selector", "site=lab", token=secret)
    assert code == 0, err
    code, out, err = fleet(hub, "tokens", "ls", "-o", "json")
    assert code == 0, err
    listed = {t["name"]: t for t in json.loads(out)}
    assert listed["ci"]["role"] == "operator" and listed["ci"]["active"] and listed["ci"]["expires_at"]
    assert secret not in out
    code, out, err = fleet(hub, "tokens", "revoke", "ci")
    assert code == 0 and "revoked token ci" in out, err
    code, out, err = fleet(hub, "tokens", "revoke", "ci")
    assert code == 0 and "already revoked" in out, err
    code, out, err = fleet(hub, "cohorts", "ls", token=secret)
    assert code == 5 and "was revoked" in err
    code, out, err = fleet(hub, "tokens", "ls")
    assert code == 0 and "revoked" in out
    code, out, err = fleet(hub, "audit", "ls", "--actor", "ci", "-o", "json")
    assert code == 0, err
    (entry,) = json.loads(out)
    assert (entry["object_type"], entry["action"], entry["operation"]) == (
        "cohort",
        "create",
        "POST /api/v1/cohorts",
    )
    assert entry["after"]["selector"] == "site=lab"
    code, out, err = fleet(hub, "audit", "ls", "--object-type", "api_token", "--since", "1h")
    assert code == 0 and "api_token" in out and "update" in out, err


def test_refusals_exit_with_their_codes(hub: Hub) -> None:
    assert fleet(hub, "tokens", "create", "x", "--role", "boss")[0] == 2
    assert fleet(hub, "tokens", "create", "x", "--role", "viewer", "--expires-in", "soon")[0] == 2
    assert fleet(hub, "tokens", "revoke", "nobody")[0] == 3
    assert fleet(hub, "audit", "ls", "--since", "yesterday-ish")[0] == 2
    code, out, _err = fleet(hub, "tokens", "create", "look", "--role", "viewer")
    assert code == 0
    assert fleet(hub, "audit", "ls", token=out.strip())[0] == 5  # viewers do not read the log


def test_times_for_the_audit_filters() -> None:
    assert moment("2030-01-02T03:04:05Z", "--since") == "2030-01-02T03:04:05+00:00"
    assert moment("90m", "--since", now=T0) == "2030-01-02T01:34:05+00:00"
