"""Fixtures shared by every suite.

Integration tests talk to the real services: Mosquitto on 127.0.0.1:1883 and
PostgreSQL on 127.0.0.1:5432 (database ``test``). Their addresses can be moved
with EDGEFLEET_TEST_MQTT_HOST/PORT and EDGEFLEET_TEST_PG_URL. A missing service
is a failure, not a skip: .ci/run starts both before the tests.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

MQTT_HOST = os.environ.get("EDGEFLEET_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("EDGEFLEET_TEST_MQTT_PORT", "1883"))
PG_URL = os.environ.get("EDGEFLEET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """(host, port) of the real Mosquitto broker; fails loudly when it is down."""
    if not _tcp_open(MQTT_HOST, MQTT_PORT):
        pytest.fail(
            f"Mosquitto is not listening on {MQTT_HOST}:{MQTT_PORT}; "
            "start it with: mosquitto -d -c /etc/mosquitto/mosquitto.conf"
        )
    return MQTT_HOST, MQTT_PORT


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of the real PostgreSQL test database; fails loudly when it is down."""
    if not _tcp_open("127.0.0.1", 5432):
        pytest.fail(
            "PostgreSQL is not listening on 127.0.0.1:5432; start it with: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )
    return PG_URL


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
