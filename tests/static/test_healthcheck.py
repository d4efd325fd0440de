"""deploy/docker/healthcheck.py against real servers: an HTTP server for the hub's /healthz, and a
gRPC health service on a Unix socket for the agent's local API."""

from __future__ import annotations

import http.server
import importlib.util
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.static._container_tools import ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy/docker/healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()


class _Hub(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hub_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        _Hub.status = 200


def test_hub_is_healthy_on_200(hub_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["hub", "--port", str(hub_port)]) == 0
    assert capsys.readouterr().out.startswith("healthy: ")


def test_hub_is_unhealthy_when_its_database_is_down(
    hub_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _Hub.status = 503
    assert healthcheck.main(["hub", "--port", str(hub_port)]) == 1
    assert "503" in capsys.readouterr().out


def test_hub_port_follows_the_hub_setting(hub_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_API_PORT", str(hub_port))
    assert healthcheck.main(["hub"]) == 0
    monkeypatch.setenv("EDGEFLEET_API_PORT", "not-a-port")
    assert healthcheck.main(["hub"]) == 1


def test_hub_is_unhealthy_when_nothing_listens() -> None:
    # Port 1 is privileged: no test server and never a hub listens there.
    assert healthcheck.main(["--timeout", "2", "hub", "--port", "1"]) == 1


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[tuple[Path, health.HealthServicer]]:
    path = tmp_path / "agent.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield path, servicer
    finally:
        server.stop(None)


def test_agent_is_healthy_while_serving(agent_socket: tuple[Path, health.HealthServicer]) -> None:
    path, servicer = agent_socket
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main(["agent", "--socket", str(path)]) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main(["agent", "--socket", str(path)]) == 1


def test_agent_is_unhealthy_without_its_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["--timeout", "2", "agent", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().out


def test_a_usage_error_is_unhealthy_not_dockers_reserved_status() -> None:
    assert healthcheck.main(["bogus"]) == 1
