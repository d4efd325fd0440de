"""A simulated fleet's labels reach the hub: every device's --label and its share of --label-mix
arrive in the devices' status over the real broker, and the hub's device list selects by them."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloud.hub import Hub
from cloud.settings import Settings
from edge_agent.sim import device_ids, run_fleet
from edge_agent.sim_labels import parse_label_mix
from tests.integration.cloud.mqtt_probe import wait_for

pytestmark = pytest.mark.integration

DEVICES = 5


@pytest.fixture
def hub(short_tmp: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=short_tmp / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


def test_simulated_labels_select_devices_at_the_hub(
    hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    api = httpx.Client(
        base_url=hub.api_url, headers={"Authorization": f"Bearer {hub.admin_token}"}, timeout=10
    )

    def ids(label: str | None = None) -> list[str]:
        params = {"label": label} if label else {}
        return sorted(d["id"] for d in api.get("/api/v1/devices", params=params).json()["data"])

    async def scenario() -> None:
        stop = asyncio.Event()
        fleet = asyncio.create_task(
            run_fleet(
                DEVICES,
                short_tmp / "fleet",
                fleet_name,
                mqtt_host=mqtt_broker[0],
                mqtt_port=mqtt_broker[1],
                local_api_devices=0,
                labels={"cohort": "canary"},
                label_mix=parse_label_mix("region=eu:40,region=us:60"),
                telemetry_interval_s=60,
                stop_event=stop,
                out=io.StringIO(),  # the ready line is not under test here
            )
        )
        try:
            await asyncio.to_thread(wait_for, lambda: len(ids()) == DEVICES, 30)
            every = device_ids(DEVICES)
            assert ids("region=eu") == every[:2]
            assert ids("region=us") == every[2:]
            assert ids("cohort=canary") == every
            assert ids("cohort=canary,region=eu") == every[:2]
            assert ids("region=apac") == []
        finally:
            stop.set()
            await fleet

    try:
        asyncio.run(scenario())
    finally:
        api.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label-mix", "region=eu:40"], "--label-mix shares of 'region' add up to 40: expected 100"),
        (["--label", "region=eu", "--label-mix", "region=eu:100"], "label region is given by both"),
    ],
)
def test_fleet_simulate_refuses_bad_labels_before_reaching_the_hub(
    short_tmp: Path, args: list[str], message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(EDGEFLEET_DATA_DIR=str(short_tmp), COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "simulate", "--hub-url", "http://127.0.0.1:9", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "reach the hub" not in result.stderr
    assert not (short_tmp / "fleet").exists()
