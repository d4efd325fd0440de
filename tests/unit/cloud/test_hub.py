"""Hub lifecycle without a broker: the API and gRPC come up, health says MQTT is down, stop is clean."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import httpx
import pytest

from cloud.hub import Hub, HubStartError
from cloud.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hub_starts_without_a_broker_and_stops_cleanly(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_port=0, grpc_port=0, mqtt_port=_closed_port(), fleet="unit")
    hub = Hub(settings)
    with hub:
        assert hub.grpc_endpoint.startswith("127.0.0.1:") and not hub.grpc_endpoint.endswith(":0")
        token_file = tmp_path / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert hub.admin_token == token_file.read_text().strip()
        health = httpx.get(f"{hub.api_url}/healthz", timeout=10)
        assert health.json() == {"status": "ok", "db": True, "mqtt": False}
        listed = httpx.get(
            f"{hub.api_url}/api/v1/devices",
            headers={"Authorization": f"Bearer {hub.admin_token}"},
            timeout=10,
        )
        assert listed.json() == {"data": [], "count": 0, "next_cursor": None}
        api_url = hub.api_url
    hub.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{api_url}/healthz", timeout=2)


def test_restart_keeps_the_admin_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_port=0, grpc_port=0, mqtt_port=_closed_port(), fleet="unit")
    with Hub(settings) as first:
        token = first.admin_token
    with Hub(settings) as second:
        assert second.admin_token == token
        r = httpx.get(
            f"{second.api_url}/api/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert r.status_code == 200


def test_taken_api_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(data_dir=tmp_path, api_port=port, grpc_port=0, mqtt_port=_closed_port())
        hub = Hub(settings)
        with pytest.raises(HubStartError, match=f"HTTP port 127.0.0.1:{port} is in use"):
            hub.start()
        hub.stop()


def test_properties_before_start_say_so(tmp_path: Path) -> None:
    hub = Hub(Settings(data_dir=tmp_path))
    with pytest.raises(RuntimeError, match="not started"):
        _ = hub.api_url
    with pytest.raises(HubStartError, match="call start"):
        hub.wait_until_started(1)
