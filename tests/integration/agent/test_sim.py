"""A simulated fleet of real agents in one process, against the real broker (over MQTT 3.1.1)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from edge_agent.client import LocalClient
from edge_agent.sim import device_ids, run_fleet
from edgefleet_proto.v1 import device_pb2
from tests.integration.agent.observer import Observer

pytestmark = pytest.mark.integration

ONLINE, OFFLINE = device_pb2.DEVICE_STATE_ONLINE, device_pb2.DEVICE_STATE_OFFLINE
DEVICES = 20


class LineSink(io.StringIO):
    """stdout for the fleet: lets the test await the ready line instead of polling for it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        count = super().write(text)
        self.written.set()
        return count


def test_twenty_agents_come_online_report_ready_and_go_offline(
    mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    ids = device_ids(DEVICES)

    def all_in(state: int, hub: Observer) -> bool | None:
        last = [hub.last_status(d) for d in ids]
        return True if all(s is not None and s.state == state for s in last) else None

    async def scenario() -> None:
        async with Observer(*mqtt_broker, fleet_name) as hub:
            out = LineSink()
            stop = asyncio.Event()
            fleet = asyncio.create_task(
                run_fleet(
                    DEVICES,
                    short_tmp,
                    fleet_name,
                    mqtt_host=mqtt_broker[0],
                    mqtt_port=mqtt_broker[1],
                    mqtt_protocol="3.1.1",
                    local_api_devices=2,
                    labels={"cohort": "canary"},
                    telemetry_interval_s=60,
                    stop_event=stop,
                    out=out,
                )
            )
            try:
                await hub.wait_for(lambda: all_in(ONLINE, hub), timeout=20)
                await asyncio.wait_for(out.written.wait(), 20)
                ready = json.loads(out.getvalue().splitlines()[0])
                assert ready["event"] == "ready" and ready["devices"] == DEVICES
                assert sorted(ready["sockets"]) == ids[:2]
                status = hub.last_status(ids[-1])
                assert status is not None and dict(status.labels) == {"cohort": "canary"}
                with LocalClient(ready["sockets"]["sim-0002"]) as client:
                    info = await asyncio.to_thread(client.info)
                assert (info.device_id, info.health, info.model_version) == ("sim-0002", "idle", None)
            finally:
                stop.set()
                await fleet
            await hub.wait_for(lambda: all_in(OFFLINE, hub), timeout=20)
            assert not (short_tmp / "sim-0001" / "agent.sock").exists()

    asyncio.run(asyncio.wait_for(scenario(), 60))
