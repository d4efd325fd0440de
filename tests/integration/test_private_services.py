"""The broker and database the tests write into are the test run's own, never the ones the user runs.

Unless a user names a server explicitly (EDGEFLEET_TEST_MQTT_HOST/PORT, EDGEFLEET_TEST_PG_URL), the
process that listens at the address the fixtures hand out is a child of this very test run, on a
port other than the well-known one, with its files in a temp folder of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests._services import Mosquitto, PostgreSQL
from tests._services.external import external_broker, external_postgres_url

pytestmark = pytest.mark.integration


def listener(port: int) -> psutil.Process:
    """The process that listens on 127.0.0.1:``port``."""
    pids = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid is not None
    }
    assert len(pids) == 1, f"expected one process listening on port {port}, found {sorted(pids)}"
    return psutil.Process(pids.pop())


def test_the_broker_is_the_runs_own(
    mqtt_broker: tuple[str, int], private_mosquitto: Mosquitto | None
) -> None:
    if private_mosquitto is None:
        # Named on purpose: the run uses exactly that broker and started none of its own.
        assert mqtt_broker == external_broker(os.environ)
        return
    host, port = mqtt_broker
    assert (host, port) == ("127.0.0.1", private_mosquitto.port)
    assert port != 1883
    broker = listener(port)
    assert broker.ppid() == os.getpid()
    assert broker.name() == "mosquitto"
    assert private_mosquitto.root.is_dir() and str(private_mosquitto.conf) in broker.cmdline()


def test_the_database_is_the_runs_own(postgres_url: str, private_postgres: PostgreSQL | None) -> None:
    if private_postgres is None:
        # Named on purpose: the run uses exactly that database and started none of its own.
        assert postgres_url == external_postgres_url(os.environ)
        return
    url = make_url(postgres_url)
    assert (url.host, url.port, url.database) == ("127.0.0.1", private_postgres.port, "test")
    assert url.port != 5432
    server = listener(private_postgres.port)
    assert server.ppid() == os.getpid()
    # Ask the server at the fixture's address where it keeps its data: in the run's temp folder.
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    assert Path(row[0]).resolve() == private_postgres.data.resolve()
