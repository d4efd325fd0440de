"""How the test run finds its servers' programs, honours an explicit opt-in, and stops when one is missing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from tests._services import MissingBinary, ServiceFailed, find_bindir, find_mosquitto, running
from tests._services.external import external_broker, external_postgres_url


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"EDGEFLEET_TEST_MQTT_HOST": "", "EDGEFLEET_TEST_MQTT_PORT": ""}, None),
        ({"EDGEFLEET_TEST_MQTT_PORT": "1883"}, ("127.0.0.1", 1883)),
        ({"EDGEFLEET_TEST_MQTT_HOST": "broker.lan"}, ("broker.lan", 1883)),
        (
            {"EDGEFLEET_TEST_MQTT_HOST": "broker.lan", "EDGEFLEET_TEST_MQTT_PORT": "2883"},
            ("broker.lan", 2883),
        ),
    ],
)
def test_an_external_broker_only_when_named(env: dict[str, str], expected: tuple[str, int] | None) -> None:
    assert external_broker(env) == expected


@pytest.mark.parametrize("port", ["mqtt", "0", "70000", "-1"])
def test_a_malformed_broker_port_says_what_was_expected(port: str) -> None:
    with pytest.raises(
        ValueError, match=f"EDGEFLEET_TEST_MQTT_PORT: expected a TCP port number .*got '{port}'"
    ):
        external_broker({"EDGEFLEET_TEST_MQTT_PORT": port})


def test_an_external_database_only_when_named() -> None:
    url = "postgresql+psycopg://u@db.lan:5432/x"
    assert external_postgres_url({}) is None
    assert external_postgres_url({"EDGEFLEET_TEST_PG_URL": ""}) is None
    assert external_postgres_url({"EDGEFLEET_TEST_PG_URL": url}) == url


def _program(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_mosquitto_from_path_else_its_usual_places(tmp_path: Path) -> None:
    on_path = _program(tmp_path / "bin" / "mosquitto")
    sbin = _program(tmp_path / "sbin" / "mosquitto")
    assert find_mosquitto(path=str(on_path.parent), fallbacks=[str(sbin)]) == str(on_path)
    assert find_mosquitto(path=str(tmp_path / "empty"), fallbacks=[str(sbin)]) == str(sbin)


def test_missing_mosquitto_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(MissingBinary) as e:
        find_mosquitto(path=str(tmp_path), fallbacks=[str(tmp_path / "mosquitto")])
    assert str(e.value) == "mosquitto not found: apt-get install mosquitto"


def test_postgres_binaries_from_the_newest_complete_versioned_folder(tmp_path: Path) -> None:
    for version in ("9.6", "13", "15"):
        _program(tmp_path / version / "bin" / "initdb")
        _program(tmp_path / version / "bin" / "postgres")
    _program(tmp_path / "16" / "bin" / "initdb")  # a client-only install: no server
    assert find_bindir(path=str(tmp_path / "empty"), roots=[str(tmp_path)]) == tmp_path / "15" / "bin"


def test_postgres_binaries_on_path_win(tmp_path: Path) -> None:
    own = tmp_path / "own"
    _program(own / "initdb")
    _program(own / "postgres")
    _program(tmp_path / "root" / "15" / "bin" / "initdb")
    _program(tmp_path / "root" / "15" / "bin" / "postgres")
    assert find_bindir(path=str(own), roots=[str(tmp_path / "root")]) == own


def test_missing_postgres_names_the_package(tmp_path: Path) -> None:
    _program(tmp_path / "15" / "bin" / "initdb")
    with pytest.raises(MissingBinary) as e:
        find_bindir(path=str(tmp_path / "empty"), roots=[str(tmp_path)])
    assert (
        str(e.value) == "PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql"
    )


class FakeServer:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.closed = 0

    def start(self) -> None:
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        self.closed += 1


def fake_request() -> pytest.FixtureRequest:
    """Stands in for a fixture's request: the real one would stop this very run."""
    return cast(pytest.FixtureRequest, SimpleNamespace(session=SimpleNamespace(shouldstop=False)))


def test_a_missing_program_fails_the_test_and_stops_the_run_with_one_line() -> None:
    def missing() -> FakeServer:
        raise MissingBinary("mosquitto not found: apt-get install mosquitto")

    request = fake_request()
    with pytest.raises(pytest.fail.Exception) as e, running(missing, request):
        pytest.fail("the body must not run without its server")
    assert e.value.msg == "mosquitto not found: apt-get install mosquitto"
    assert e.value.pytrace is False
    assert request.session.shouldstop == "mosquitto not found: apt-get install mosquitto"


def test_a_server_that_fails_to_start_stops_the_run_and_is_cleaned_up() -> None:
    server = FakeServer(fail=ServiceFailed("mosquitto exited with status 3 before it was ready"))
    request = fake_request()
    with pytest.raises(pytest.fail.Exception) as e, running(lambda: server, request):
        pytest.fail("the body must not run without its server")
    assert e.value.msg is not None and "exited with status 3" in e.value.msg
    assert request.session.shouldstop
    assert server.closed == 1


def test_a_server_is_cleaned_up_when_the_tests_fail() -> None:
    server = FakeServer()
    request = fake_request()
    with pytest.raises(RuntimeError, match="a failing test"), running(lambda: server, request):
        raise RuntimeError("a failing test")
    assert server.closed == 1
    assert not request.session.shouldstop
