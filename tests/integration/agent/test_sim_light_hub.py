"""200 light simulated devices on the real broker with a real hub: every one comes online at the hub,
takes a signed version through one shared TUF client, serves it from one shared onnxruntime session,
and reports telemetry."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.config import TrialConfig
from edge_agent.sim import Fleet, device_ids
from edge_agent.trust.config import TrustConfig
from tests.integration.cloud.hub_process import running_hub
from tests.integration.cloud.mqtt_probe import wait_for
from tests.unit.agent.fakes import linear_model

pytestmark = pytest.mark.integration

DEVICES = 200
TIMEOUT_S = 90.0
# Polling the hub over HTTP (its database behind it offers nothing to wait on): a few times a second.
POLL_S = 0.25


def test_two_hundred_light_devices_come_online_take_a_version_and_report(
    mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    with running_hub(short_tmp / "hub", mqtt_broker, fleet_name) as hub:
        auth = {"Authorization": f"Bearer {hub.token}"}
        api = httpx.Client(base_url=hub.api_url, headers=auth, timeout=30)
        root = short_tmp / "root.json"
        root.write_bytes(api.get("/tuf/metadata/1.root.json").raise_for_status().content)
        model = short_tmp / "m.onnx"
        model.write_bytes(linear_model(1.5))
        with model.open("rb") as f:
            api.post(
                "/api/v1/models", data={"name": "light", "version": "1"}, files={"file": ("m.onnx", f)}
            ).raise_for_status()

        def summary() -> dict[str, Any]:
            found: dict[str, Any] = api.get("/api/v1/fleet/summary").raise_for_status().json()
            return found

        def serving_v1() -> int:
            return sum(v["count"] for v in summary()["by_version"] if v.get("version") == "1")

        fleet = Fleet(
            DEVICES,
            short_tmp / "fleet",
            fleet_name,
            mqtt_host=mqtt_broker[0],
            mqtt_port=mqtt_broker[1],
            grpc_endpoint=hub.grpc_target,
            local_api_devices=0,
            telemetry_interval_s=1.0,
            trust=TrustConfig(require_signed=True, root_file=root, http_url=f"{hub.api_url}/tuf"),
            trial=TrialConfig(window_s=0.5),
            light=True,
            connect_rate=400,
        )

        async def scenario() -> None:
            stop = asyncio.Event()
            run = asyncio.create_task(fleet.run(stop, out=io.StringIO()))
            try:
                await asyncio.to_thread(
                    wait_for, lambda: summary()["by_state"].get("online", 0) == DEVICES, TIMEOUT_S, POLL_S
                )
                api.post(
                    "/api/v1/assignments",
                    json={"model": "light", "version": "1", "devices": device_ids(DEVICES)},
                ).raise_for_status()
                await asyncio.to_thread(wait_for, lambda: serving_v1() == DEVICES, TIMEOUT_S, POLL_S)
                last = device_ids(DEVICES)[-1]
                windows = await asyncio.to_thread(
                    wait_for,
                    lambda: api.get(f"/api/v1/devices/{last}/telemetry").raise_for_status().json(),
                    TIMEOUT_S,
                    POLL_S,
                )
                assert windows
            finally:
                stop.set()
                await run

        asyncio.run(asyncio.wait_for(scenario(), TIMEOUT_S * 3))
        # Every device verified and installed the version, and the fleet loaded it once.
        assert fleet.sessions is not None
        assert fleet.sessions.loads == 1
        # Committed, or still in its trial when the fleet stopped (no traffic judges it meanwhile).
        held = Counter(
            (ref.version, "trial" if ref is a.state.state.trial else "committed") if ref else None
            for a in fleet.agents
            for ref in [a.state.state.trial or a.state.state.active]
        )
        assert {entry[0] for entry in held if entry} == {"1"} and None not in held, dict(held)
        # Through one shared TUF client, whose refreshes the devices that verified together shared.
        assert fleet.trust is not None and len(fleet.trust) == 1
        assert 1 <= fleet.trust.refreshes < DEVICES, fleet.trust.refreshes
        api.close()
