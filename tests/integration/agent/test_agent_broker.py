"""One agent against the real Mosquitto broker and a real (test-only) gRPC artifact service.

The test plays the hub: it publishes retained desired states, reads status,
events and telemetry off the broker, and calls the device's local API over its
Unix socket through LocalClient.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.client import LocalClient
from edge_agent.config import AgentConfig, BackoffConfig, LocalApiConfig, TelemetryConfig
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import command_pb2, desired_pb2, device_pb2, event_pb2
from tests.integration.agent.observer import Observer
from tests.unit.agent.artifact_server import DictArtifactService, start_artifact_server
from tests.unit.agent.fakes import NO_TRIAL, expected_output, linear_model, ref_for

pytestmark = pytest.mark.integration

K = event_pb2.EventKind
ONLINE, OFFLINE = device_pb2.DEVICE_STATE_ONLINE, device_pb2.DEVICE_STATE_OFFLINE
V1, V2 = linear_model(1.0), linear_model(2.0)
REF1, REF2 = ref_for(V1, version="1"), ref_for(V2, version="2")

UNSIGNED = TrustConfig(require_signed=False)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 45) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def agent_config(root: Path, fleet: str, broker: tuple[str, int], endpoint: str) -> AgentConfig:
    base = AgentConfig.for_simulation(
        device_id="dev-1",
        fleet=fleet,
        state_dir=root / "state",
        mqtt_host=broker[0],
        mqtt_port=broker[1],
        grpc_endpoint=endpoint,
        labels={"site": "lab"},
        backoff=BackoffConfig(initial_s=0.05, max_s=0.3),
        trust=UNSIGNED,  # bare desired states; tests/adversarial/test_broker_attacks.py covers signed ones
    )
    return replace(
        base,
        local_api=LocalApiConfig(socket=root / "agent.sock"),
        telemetry=TelemetryConfig(interval_s=0.3),
        trial=NO_TRIAL,
    )


def desired(fleet: str, generation: int, ref: Any) -> desired_pb2.DesiredState:
    return desired_pb2.DesiredState(device_id="dev-1", fleet=fleet, generation=generation, model=ref)


def test_update_serve_report_and_refuse_a_corrupt_artifact(
    mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    service = DictArtifactService(chunk=64)
    service.add(V1)
    service.break_once.add(REF1.sha256)  # the first stream breaks half way: the agent must resume
    service.add(b"\0" * len(V2), sha256=REF2.sha256)  # the hub holds damaged bytes for v2
    x = np.arange(12, dtype=np.float32).reshape(3, 4)

    async def scenario() -> None:
        server, endpoint = await start_artifact_server(service)
        async with Observer(*mqtt_broker, fleet_name) as hub:
            # Published before the agent exists: it must arrive as the retained copy on connect.
            await hub.publish_desired(desired(fleet_name, 1, REF1))
            agent = Agent(agent_config(short_tmp, fleet_name, mqtt_broker, endpoint))
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            try:
                birth = await hub.wait_for(lambda: hub.last_status("dev-1"))
                assert birth.state == ONLINE and dict(birth.labels) == {"site": "lab"}
                assert any(r.startswith("onnxruntime/") for r in birth.capabilities.runtimes)

                await agent.wait_serving(REF1.sha256, timeout=15)
                assert [r.offset for r in service.requests] == [0, 128]
                assert service.requests[0].device_id == "dev-1"

                with LocalClient(f"unix:{short_tmp / 'agent.sock'}") as client:
                    for _ in range(3):
                        y = await asyncio.to_thread(client.predict, x)
                        np.testing.assert_allclose(y, expected_output(1.0, x))

                activated = await hub.wait_for(lambda: hub.event_of("dev-1", K.EVENT_KIND_ACTIVATED))
                kinds = [e.kind for e in hub.events("dev-1") if e.seq <= activated.seq]
                assert kinds == [
                    K.EVENT_KIND_DESIRED_RECEIVED,
                    K.EVENT_KIND_DOWNLOAD_STARTED,
                    K.EVENT_KIND_DOWNLOAD_FAILED,
                    K.EVENT_KIND_DOWNLOAD_STARTED,
                    K.EVENT_KIND_DOWNLOAD_COMPLETED,
                    K.EVENT_KIND_ACTIVATED,
                ]
                failed = hub.event_of("dev-1", K.EVENT_KIND_DOWNLOAD_FAILED)
                assert (
                    failed is not None
                    and "UNAVAILABLE" in failed.reason
                    and failed.details["offset"] == "128"
                )
                assert activated.model == REF1 and activated.generation == 1

                def serving_v1() -> device_pb2.DeviceStatus | None:
                    s = hub.last_status("dev-1")
                    active = [slot.model.sha256 for slot in s.slots if slot.name == "active"] if s else []
                    return (
                        s if active == [REF1.sha256] and s is not None and s.applied_generation == 1 else None
                    )

                await hub.wait_for(serving_v1)

                window = await hub.wait_for(
                    lambda: next((w for w in hub.windows("dev-1") if w.requests >= 3), None)
                )
                assert (window.model_version, window.errors) == ("1", 0)
                assert window.latency.max_ms > 0

                # A damaged artifact: verification fails, v1 keeps serving.
                await hub.publish_desired(desired(fleet_name, 2, REF2))
                refused = await hub.wait_for(lambda: hub.event_of("dev-1", K.EVENT_KIND_VERIFY_FAILED))
                assert f"sha256 mismatch: expected {REF2.sha256} got " in refused.reason
                assert refused.generation == 2
                with LocalClient(f"unix:{short_tmp / 'agent.sock'}") as client:
                    info = await asyncio.to_thread(client.info)
                    assert info.model_version == "1"
                    y = await asyncio.to_thread(client.predict, x)
                    np.testing.assert_allclose(y, expected_output(1.0, x))

                # A resync command makes the device publish its status again.
                before = len(hub.statuses("dev-1"))
                await hub.publish_command(
                    command_pb2.Command(device_id="dev-1", seq=1, resync=command_pb2.Resync())
                )
                degraded = await hub.wait_for(
                    lambda: (
                        s if len(hub.statuses("dev-1")) > before and (s := hub.last_status("dev-1")) else None
                    )
                )
                assert degraded.health.startswith("degraded: ") and "sha256 mismatch" in degraded.health
            finally:
                stop.set()
                await task
            # A clean stop leaves OFFLINE as the retained status.
            gone = await hub.wait_for(
                lambda: s if (s := hub.last_status("dev-1")) and s.state == OFFLINE else None
            )
            assert gone.device_id == "dev-1"
            retained = await hub.retained_status(*mqtt_broker, "dev-1")
            assert retained.state == OFFLINE
        await server.stop(None)

    run(scenario())


def test_reconnects_after_the_broker_drops_it_and_resyncs(
    mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    service = DictArtifactService()
    service.add(V1)

    async def scenario() -> None:
        server, endpoint = await start_artifact_server(service)
        async with Observer(*mqtt_broker, fleet_name) as hub:
            # Slow enough reconnects that the desired state below lands while the agent is away.
            config = replace(
                agent_config(short_tmp, fleet_name, mqtt_broker, endpoint),
                backoff=BackoffConfig(initial_s=0.6, max_s=1.0),
            )
            agent = Agent(config)
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))

            def states() -> list[int]:
                return [s.state for s in hub.statuses("dev-1")]

            try:
                await hub.wait_for(lambda: True if states() == [ONLINE] else None)
                # A second session with the device's client id makes the broker drop the agent's.
                async with aiomqtt.Client(*mqtt_broker, identifier=config.mqtt_client_id):
                    # The broker has closed the agent's session once its last will is out.
                    await hub.wait_for(lambda: True if states()[-1:] == [OFFLINE] else None)
                    await hub.publish_desired(desired(fleet_name, 1, REF1))
                await agent.wait_serving(REF1.sha256, timeout=15)
                assert agent.link.connections == 2
                assert states()[:3] == [ONLINE, OFFLINE, ONLINE]
            finally:
                stop.set()
                await task
        await server.stop(None)

    run(scenario())


@pytest.mark.parametrize(
    ("sig", "exit_code"),
    [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 0)],
    ids=["killed: the last will says OFFLINE", "terminated: a clean OFFLINE"],
)
def test_a_stopped_agent_shows_offline(
    mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path, sig: signal.Signals, exit_code: int
) -> None:
    config = short_tmp / "agent.toml"
    config.write_text(
        f'device_id = "dev-1"\nfleet = "{fleet_name}"\nstate_dir = "state"\n'
        f'[mqtt]\nhost = "{mqtt_broker[0]}"\nport = {mqtt_broker[1]}\nprotocol = "3.1.1"\n'
        '[local_api]\nsocket = ""\n'
    )

    async def scenario() -> None:
        async with Observer(*mqtt_broker, fleet_name) as hub:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "--config", str(config), "--log-level", "WARNING"],
                start_new_session=True,
            )
            try:
                birth = await hub.wait_for(lambda: hub.last_status("dev-1"), timeout=20)
                assert birth.state == ONLINE
                os.kill(proc.pid, sig)
                assert await asyncio.to_thread(proc.wait, 10) == exit_code
                gone = await hub.wait_for(
                    lambda: s if (s := hub.last_status("dev-1")) and s.state == OFFLINE else None
                )
                assert gone.device_id == "dev-1" and gone.fleet == fleet_name
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)

    run(scenario())
