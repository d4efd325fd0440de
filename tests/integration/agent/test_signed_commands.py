"""Signed commands end to end: the real hub signs and publishes on the real broker, a real agent with
the hub's root acts on them; a command that the director did not sign is refused, and the refusal
reaches the hub as an error event."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from cloud.hub import Hub
from cloud.models import Device, DeviceEvent, DeviceState
from cloud.services.commands import seal_command
from cloud.settings import Settings
from cloud.tuf.keys import generate_signer
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import command_pb2
from tests.integration.cloud.mqtt_probe import wait_for

pytestmark = pytest.mark.integration

DEVICE = "cmd-dev-1"
TIMEOUT_S = 30


@pytest.fixture
def hub(short_tmp: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=short_tmp / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


def test_the_agent_acts_on_signed_commands_and_refuses_forged_ones(
    hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    ctx = hub.context
    assert ctx is not None and ctx.signing is not None
    signing = ctx.signing
    root = short_tmp / "root.json"
    root.write_bytes(signing.repo.root_bytes())
    config = AgentConfig.for_simulation(
        device_id=DEVICE,
        fleet=fleet_name,
        state_dir=short_tmp / "agent",
        mqtt_host=mqtt_broker[0],
        mqtt_port=mqtt_broker[1],
        grpc_endpoint=hub.grpc_endpoint,
        trust=TrustConfig(root_file=root),
    )
    pinged = threading.Event()

    def online() -> bool:
        with ctx.sessions() as s:
            row = s.get(Device, DEVICE)
            return row is not None and row.state == DeviceState.ONLINE

    def refusals() -> list[DeviceEvent]:
        with ctx.sessions() as s:
            rows = s.exec(select(DeviceEvent).where(DeviceEvent.device_id == DEVICE)).all()
            return [r for r in rows if r.details.get("channel") == "cmd"]

    async def scenario() -> Agent:
        agent = Agent(config)
        answer = agent.link.request_status

        def request_status() -> None:  # observed, then done as the agent would
            pinged.set()
            answer()

        agent.link.request_status = request_status  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await asyncio.to_thread(wait_for, online, TIMEOUT_S)
            # Whoever holds the broker publishes a command signed by a key the root does not name.
            forged = command_pb2.Command(
                device_id=DEVICE, fleet=fleet_name, seq=10**9, expires_at_ms=2**62, ping=command_pb2.Ping()
            )
            await asyncio.to_thread(
                hub.mqtt.publish_command, DEVICE, seal_command(forged, [generate_signer()])
            )
            await asyncio.to_thread(wait_for, refusals, TIMEOUT_S)
            assert not pinged.is_set(), "the agent acted on a forged command"
            # The director's own command is acted on.
            await asyncio.to_thread(signing.send_command, DEVICE, fleet_name, command_pb2.Ping(nonce="n"))
            await asyncio.to_thread(pinged.wait, TIMEOUT_S)
        finally:
            stop.set()
            await task
        return agent

    agent = asyncio.run(asyncio.wait_for(scenario(), 4 * TIMEOUT_S))
    assert pinged.is_set(), "the agent did not act on the director's command"
    assert agent.command_refusals == {"bad_signature": 1}
    [event] = refusals()
    assert event.kind == "error" and event.details["check"] == "bad_signature"
    assert "does not name" in event.reason
