"""The broker restarts in the middle of a staged rollout: the rollout completes and no acknowledged
telemetry is lost.

A Mosquitto of this test's own with persistence on (so that sessions and queued messages survive
the restart, as on a production broker), a real ``fleet hub`` on SQLite, and a simulated fleet of
real agents sending a telemetry window every 0.1 s. Once every device serves version 1, a rollout
of version 2 starts in two stages; when its first stage's devices have been offered the version
(the stage bakes), the broker stops. The devices queue their windows on disk while it is away;
then it starts again. Required: the rollout completes, every device serves version 2, and every
window the broker acknowledged to a device is stored by the hub exactly once (the devices' ledger
against the hub's rows, per window).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._services import Mosquitto, running
from tests.fault._fleet import (
    FleetTimings,
    HubProcess,
    SimFleet,
    assert_completed_in_two_stages,
    assert_stored_exactly_once,
    finish_rollout,
    serve_version_1,
    settled_count,
    start_two_stage_rollout,
    wait_until,
)

pytestmark = pytest.mark.integration

DEVICES = 12
TIMEOUT_S = 60
# Windows each device must have queued on disk while the broker is away: the outage is felt by all.
QUEUED_DURING_OUTAGE = 5


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    with running(lambda: Mosquitto(persistence=True), request) as b:
        yield b


def test_a_broker_restart_mid_rollout_loses_no_acknowledged_telemetry(
    broker: Mosquitto, short_tmp: Path, fleet_name: str
) -> None:
    with contextlib.ExitStack() as stack:
        hub = HubProcess(data_dir=short_tmp / "hub", fleet=fleet_name, mqtt_port=broker.port)
        stack.callback(hub.stop)
        hub.start()
        fleet = SimFleet(
            DEVICES,
            fleet_name,
            short_tmp / "fleet",
            mqtt=(broker.host, broker.port),
            grpc_endpoint=hub.grpc_endpoint,
            api_url=hub.api_url,
            timings=FleetTimings(telemetry_interval_s=0.1),
        )
        client = stack.enter_context(hub.client())
        ids = serve_version_1(stack, fleet, client, short_tmp, TIMEOUT_S)
        rollout = start_two_stage_rollout(client, "3s")
        wait_until(
            "the first stage to bake",
            lambda: (v := client.rollout(rollout))["state"] == "baking" and v["stage"] == 0,
            TIMEOUT_S,
        )

        broker.stop()
        wait_until(
            f"every device to queue {QUEUED_DURING_OUTAGE} windows while the broker is away",
            lambda: min(map(len, fleet.queued_windows().values())) >= QUEUED_DURING_OUTAGE,
            TIMEOUT_S,
        )
        broker.start()

        view, ledger = finish_rollout(client, rollout, fleet, ids, TIMEOUT_S)
        count = settled_count(ledger, hub.database_url, timeout=20)
    assert_stored_exactly_once(count)
    # The windows queued during the outage were among those acknowledged afterwards.
    assert count.acked >= DEVICES * (QUEUED_DURING_OUTAGE + 10), count
    assert_completed_in_two_stages(view)
