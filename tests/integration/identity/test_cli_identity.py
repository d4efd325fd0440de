"""`fleet devices provision|revoke` against a real hub, and `fleet identity` on the hub's data folder."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from cloud.cli import app
from cloud.hub import Hub
from cloud.settings import Settings
from edge_agent.config import load_config

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


def _api(hub: Hub, *args: str) -> dict[str, object]:
    result = runner.invoke(
        app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token, "--output", "json"]
    )
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_provision_writes_a_bundle_the_agent_loads_and_revoke_revokes_it(hub: Hub, tmp_path: Path) -> None:
    out = tmp_path / "cam-1"
    summary = _api(hub, "devices", "provision", "cam-1", "--out", str(out))
    names = sorted(Path(str(p)).name for p in summary["files"])  # type: ignore[attr-defined]
    assert names == ["agent.toml", "ca.crt", "client.crt", "client.key", "root.json"]
    assert stat.S_IMODE((out / "client.key").stat().st_mode) == 0o600
    config = load_config(out / "agent.toml")
    assert config.device_id == "cam-1" and config.mqtt.tls and config.hub.grpc_tls
    assert config.trust.root_file == out / "root.json"
    cert = x509.load_pem_x509_certificate((out / "client.crt").read_bytes())
    assert format(cert.serial_number, "x") == summary["serial"]

    again = runner.invoke(
        app,
        [
            "devices",
            "provision",
            "cam-1",
            "--out",
            str(out),
            "--hub-url",
            hub.api_url,
            "--token",
            hub.admin_token,
        ],
    )
    assert again.exit_code != 0 and "exists" in again.output  # nothing is overwritten without --force

    revoked = _api(hub, "devices", "revoke", "cam-1")
    assert revoked["revoked"] == [summary["serial"]]
    crl = x509.load_pem_x509_crl(hub.settings.resolved_crl_file().read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def test_identity_commands_issue_the_hub_and_server_certificates(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFLEET_DATA_DIR", str(hub.settings.data_dir))
    monkeypatch.setenv("EDGEFLEET_FLEET", hub.settings.fleet)
    for args in (
        ["identity", "server-cert", "broker.example", "10.0.0.5", "--out", str(tmp_path / "broker")],
        ["identity", "hub-cert", "--out", str(tmp_path / "hub")],
        ["identity", "crl"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    server = x509.load_pem_x509_certificate((tmp_path / "broker" / "server.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "broker" / "ca.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    hub_cert = x509.load_pem_x509_certificate((tmp_path / "hub" / "hub.crt").read_bytes())
    assert hub_cert.subject.rfc4514_string() == "CN=edgefleet-hub"
    assert stat.S_IMODE((tmp_path / "hub" / "hub.key").stat().st_mode) == 0o600
