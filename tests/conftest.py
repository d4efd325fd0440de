"""Fixtures shared by every suite.

Integration tests talk to real servers that the test run starts for itself: a Mosquitto and a
PostgreSQL (database ``test``) on free ports, in temp folders, stopped and removed when the run
ends (tests/_services). They start at the first test that needs them, so unit-only runs need
neither. A user's own broker or database is never touched, unless named explicitly with
EDGEFLEET_TEST_MQTT_HOST/PORT or EDGEFLEET_TEST_PG_URL. A missing server program stops the run
with the package to install: a failure, not a skip.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._services import Mosquitto, PostgreSQL, running
from tests._services.external import (
    MQTT_HOST_ENV,
    MQTT_PORT_ENV,
    PG_URL_ENV,
    external_broker,
    external_postgres_url,
)


def pytest_configure(config: pytest.Config) -> None:
    """A malformed opt-in stops the run before the first test, not in the middle of it."""
    try:
        external_broker(os.environ)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def _tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def private_mosquitto(request: pytest.FixtureRequest) -> Iterator[Mosquitto | None]:
    """The test run's own Mosquitto; None when an external broker is configured."""
    if external_broker(os.environ) is not None:
        yield None
        return
    with running(Mosquitto, request) as broker:
        yield broker


@pytest.fixture(scope="session")
def private_postgres(request: pytest.FixtureRequest) -> Iterator[PostgreSQL | None]:
    """The test run's own PostgreSQL; None when an external database is configured."""
    if external_postgres_url(os.environ) is not None:
        yield None
        return
    with running(lambda: PostgreSQL(dbname="test"), request) as server:
        yield server


@pytest.fixture(scope="session")
def mqtt_broker(private_mosquitto: Mosquitto | None) -> tuple[str, int]:
    """(host, port) of the Mosquitto broker the tests use: the run's own unless one is configured."""
    if private_mosquitto is not None:
        return private_mosquitto.host, private_mosquitto.port
    external = external_broker(os.environ)
    assert external is not None
    if not _tcp_open(*external):
        pytest.fail(
            f"no MQTT broker listens on {external[0]}:{external[1]}, named by {MQTT_HOST_ENV}/{MQTT_PORT_ENV}"
        )
    return external


@pytest.fixture(scope="session")
def postgres_url(private_postgres: PostgreSQL | None) -> str:
    """SQLAlchemy URL of the PostgreSQL test database: the run's own unless one is configured."""
    if private_postgres is not None:
        return private_postgres.url
    from sqlalchemy.engine import make_url

    url = external_postgres_url(os.environ)
    assert url is not None
    parsed = make_url(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 5432
    if not _tcp_open(host, port):
        pytest.fail(f"no PostgreSQL listens on {host}:{port}, named by {PG_URL_ENV}")
    return url


@pytest.fixture
def fleet_name() -> str:
    """A fleet name unique to this test, so retained messages never leak between tests."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary folder: Unix socket paths must stay under ~100 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ef-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
