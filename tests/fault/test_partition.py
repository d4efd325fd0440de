"""Devices cut off from the hub for a simulated hour in the middle of a rollout, by a real partition.

The simulated fleet runs in a network namespace joined to the host by a veth pair (tests/fault/
_netns.py); the broker listens on the host side, and the hub's artifact service and API are
reached across the pair too. A rollout of version 2 starts; when its first stage bakes, the host
side of the link goes down.

How an hour is simulated: time runs faster for the devices' telemetry only. The agents close a
telemetry window every ``PERIOD_S`` (0.04 s) where a production agent closes one every 10 s (its
default ``telemetry.interval_s``), so 250x faster; an hour of windows at the production period
is 360 windows per device, and the link stays down until every device holds at least 360
windows in its on-disk queue (about 15 s). The MQTT keepalive cannot be scaled so far (5 s is
the least an agent accepts): the broker publishes each device's last will 1.5 x 5 s after it
last heard from it, well inside the cut.

Required: the hub marks every device offline during the cut (their last wills) and online after;
the rollout does not complete while the devices are away (its last stage waits for them: the plan
sets ``min_devices``, and turns the offline gate off, as an operator does for a fleet on links
known to drop for hours, so that a partition stalls it rather than aborting it); after the link is
restored it completes, every window queued offline arrives, and every window the broker
acknowledged is stored exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._services import running
from tests.fault._fleet import (
    FleetTimings,
    HubProcess,
    Relay,
    SimFleet,
    assert_completed_in_two_stages,
    assert_stored_exactly_once,
    describe,
    finish_rollout,
    serve_version_1,
    settled_count,
    start_two_stage_rollout,
    states,
    wait_rollout,
    wait_until,
)
from tests.fault._netns import ListeningMosquitto, Netns, unavailable

pytestmark = pytest.mark.integration

DEVICES = 5
PERIOD_S = 0.04  # the devices' telemetry period here
PRODUCTION_PERIOD_S = 10.0  # the agent's default telemetry.interval_s, which PERIOD_S stands for
HOUR_WINDOWS = round(3600 / PRODUCTION_PERIOD_S)
TIMEOUT_S = 60


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Netns() as ns:
        yield ns


@pytest.fixture
def broker(netns: Netns, request: pytest.FixtureRequest) -> Iterator[ListeningMosquitto]:
    with running(lambda: ListeningMosquitto(netns.host_addr), request) as b:
        yield b


def test_devices_cut_off_for_a_simulated_hour_catch_up_and_the_rollout_completes(
    netns: Netns, broker: ListeningMosquitto, short_tmp: Path, fleet_name: str
) -> None:
    with contextlib.ExitStack() as stack:
        hub = HubProcess(data_dir=short_tmp / "hub", fleet=fleet_name, mqtt_port=broker.port)
        stack.callback(hub.stop)
        grpc_relay = Relay(netns.host_addr, [hub.grpc_port])
        api_relay = Relay(netns.host_addr, [hub.api_port])
        stack.callback(grpc_relay.close)
        stack.callback(api_relay.close)
        # Desired states name the relay: the address devices reach the artifact service at.
        hub.grpc_public_endpoint = grpc_relay.address
        hub.start()
        fleet = SimFleet(
            DEVICES,
            fleet_name,
            short_tmp / "fleet",
            mqtt=(netns.host_addr, broker.extra_port),
            grpc_endpoint=grpc_relay.address,
            api_url=f"http://{api_relay.address}",
            timings=FleetTimings(telemetry_interval_s=PERIOD_S, keepalive_s=5),
            prefix=netns.prefix,
        )
        client = stack.enter_context(hub.client())
        ids = serve_version_1(stack, fleet, client, short_tmp, TIMEOUT_S)
        rollout = start_two_stage_rollout(client, "2s", gates={"max_offline_pct": None}, min_devices=DEVICES)
        wait_rollout(client, rollout, {"baking"}, TIMEOUT_S)

        netns.cut()
        wait_until(
            "the hub to mark every device offline", lambda: set(states(client).values()) == {"offline"}, 30
        )
        queued = wait_until(
            f"every device to queue an hour of windows ({HOUR_WINDOWS})",
            lambda: q if min(map(len, (q := fleet.queued_windows()).values())) >= HOUR_WINDOWS else None,
            TIMEOUT_S,
        )
        during = client.rollout(rollout)
        netns.restore()

        wait_until("every device online again", lambda: set(states(client).values()) == {"online"}, TIMEOUT_S)
        view, ledger = finish_rollout(client, rollout, fleet, ids, TIMEOUT_S)
        count = settled_count(ledger, hub.database_url, timeout=30)
    assert during["state"] != "completed", (
        f"the rollout completed while every device was cut off: {describe(during)}"
    )
    assert_stored_exactly_once(count)
    not_acked = {d: sorted(seqs - ledger.acked[d]) for d, seqs in queued.items() if seqs - ledger.acked[d]}
    assert not not_acked, f"windows queued offline that never reached the broker: {not_acked}"
    assert_completed_in_two_stages(view)
