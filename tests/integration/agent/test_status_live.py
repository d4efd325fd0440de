"""`edgefleet-agent status` while the agent runs: the live answer comes from its local API.

A real agent (in-process) with its Unix socket and a real broker; the status report is
collected the way the command does it, from another thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, LocalApiConfig
from edge_agent.report import collect, render
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import desired_pb2
from tests.unit.agent.fakes import NO_TRIAL, FakeFetcher, linear_model, ref_for

pytestmark = pytest.mark.integration


def test_status_asks_the_running_agent(
    mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    model = linear_model(1.0)
    fetcher = FakeFetcher()
    fetcher.add(model)
    config = AgentConfig.for_simulation(
        device_id="dev-1",
        fleet=fleet_name,
        state_dir=short_tmp / "state",
        mqtt_host=mqtt_broker[0],
        mqtt_port=mqtt_broker[1],
        trial=NO_TRIAL,
        trust=TrustConfig(require_signed=False),
    )
    config = replace(config, local_api=LocalApiConfig(socket=short_tmp / "agent.sock"))

    async def scenario() -> None:
        agent = Agent(config, fetcher=fetcher)
        desired = desired_pb2.DesiredState(
            device_id="dev-1", fleet=fleet_name, generation=1, model=ref_for(model)
        )
        assert await agent.updater.apply(desired)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await asyncio.wait_for(agent.ready.wait(), 20)
            report = await asyncio.to_thread(collect, config)
        finally:
            stop.set()
            await task
        assert report.live is not None
        assert report.live["serving"] == "linear:1" and report.live["health"] == "serving"
        assert report.slots["active"] is not None and report.slots["active"]["version"] == "1"
        assert "agent    running: serving; answering with linear:1" in render(report)

    asyncio.run(asyncio.wait_for(scenario(), 45))
