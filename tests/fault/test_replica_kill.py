"""One of two hub replicas is killed (SIGKILL) while a rollout's stage bakes: the other carries the
rollout to completion, and no acknowledged telemetry is lost.

Two ``fleet hub`` processes share a fresh database on the test run's PostgreSQL, the artifact
folder and the signing keys, and the test run's Mosquitto (MQTT 5: they split the devices'
messages through a shared subscription); each has its own data folder, hence its own MQTT client
id. Devices reach the artifact service and the update repository through a relay that stands for
the load balancer in front of the replicas (the first replica that accepts a connection gets it).
Once every device serves version 1, a rollout of version 2 starts in two stages through replica
A; when its first stage bakes, A is killed. Required: the rollout completes (advanced by B alone),
every device serves version 2, and every window the broker acknowledged to a device is stored
exactly once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.fault._fleet import (
    FleetTimings,
    HubProcess,
    Relay,
    SimFleet,
    assert_completed_in_two_stages,
    assert_stored_exactly_once,
    finish_rollout,
    serve_version_1,
    settled_count,
    start_two_stage_rollout,
    wait_rollout,
)

pytestmark = pytest.mark.integration

DEVICES = 10
TIMEOUT_S = 60


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A database of this test's own on the run's PostgreSQL: the devices' ids repeat across tests."""
    url = make_url(postgres_url)
    name = f"fault_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def test_a_replica_killed_mid_rollout_leaves_the_other_to_complete_it(
    database_url: str, mqtt_broker: tuple[str, int], short_tmp: Path, fleet_name: str
) -> None:
    with contextlib.ExitStack() as stack:

        def replica(name: str) -> HubProcess:
            return HubProcess(
                data_dir=short_tmp / name,
                fleet=fleet_name,
                mqtt_port=mqtt_broker[1],
                database_url=database_url,
                artifact_dir=short_tmp / "artifacts",
                keys_dir=short_tmp / "keys",
                shared=True,
            )

        a, b = replica("a"), replica("b")
        grpc_lb = Relay("127.0.0.1", [a.grpc_port, b.grpc_port])
        api_lb = Relay("127.0.0.1", [a.api_port, b.api_port])
        for closing in (grpc_lb.close, api_lb.close, a.stop, b.stop):
            stack.callback(closing)
        for hub in (a, b):
            hub.grpc_public_endpoint = grpc_lb.address
        a.start()
        b.start()  # after A: A made the repository and the admin token that B finds in the database
        token = a.token()
        client_a = stack.enter_context(a.client(token))
        client_b = stack.enter_context(b.client(token))
        fleet = SimFleet(
            DEVICES,
            fleet_name,
            short_tmp / "fleet",
            mqtt=mqtt_broker,
            grpc_endpoint=grpc_lb.address,
            api_url=f"http://{api_lb.address}",
            timings=FleetTimings(telemetry_interval_s=0.1),
        )
        ids = serve_version_1(stack, fleet, client_a, short_tmp, TIMEOUT_S, observer=client_b)
        rollout = start_two_stage_rollout(client_a, "4s")
        wait_rollout(client_b, rollout, {"baking"}, TIMEOUT_S)
        a.kill()

        view, ledger = finish_rollout(client_b, rollout, fleet, ids, TIMEOUT_S)
        assert_completed_in_two_stages(view)
        # B alone, with A still dead: what it stored of the windows the broker acknowledged.
        without_a = settled_count(ledger, database_url, timeout=10)
        # A's supervisor starts it again, on its own data folder: the same client id, the same session.
        a.start()
        count = settled_count(ledger, database_url, timeout=20)
    assert_stored_exactly_once(count, f"(before A came back, {without_a.lost} were missing)")
