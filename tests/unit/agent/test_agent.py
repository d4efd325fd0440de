"""The agent without a broker: status, in-process predictions, commands, and restarts from the state file.

Peers are in-memory (FakeFetcher, FakeClock); what the agent would publish is read
from its outbox and decoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import AGENT_VERSION, Agent
from edge_agent.config import AgentConfig
from edge_agent.errors import InputError, NoModelError
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import command_pb2, desired_pb2, device_pb2, event_pb2, telemetry_pb2
from tests.unit.agent.fakes import (
    NO_TRIAL,
    FakeClock,
    FakeFetcher,
    expected_output,
    linear_model,
    ref_for,
)

K = event_pb2.EventKind
V1, V2 = linear_model(1.0), linear_model(2.0)
REF1, REF2 = ref_for(V1, version="1"), ref_for(V2, version="2")

UNSIGNED = TrustConfig(require_signed=False)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def make_agent(state_dir: Path, clock: FakeClock | None = None) -> Agent:
    fetcher = FakeFetcher()
    fetcher.add(V1)
    fetcher.add(V2)
    config = AgentConfig.for_simulation(
        device_id="dev-1",
        fleet="f1",
        state_dir=state_dir,
        labels={"site": "lab"},
        trial=NO_TRIAL,
        trust=UNSIGNED,  # these tests feed bare desired states; tests/adversarial covers signed ones
    )
    return Agent(config, clock=clock or FakeClock(), fetcher=fetcher)


async def apply(agent: Agent, ref: Any, generation: int) -> bool:
    desired = desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=generation, model=ref)
    return await agent.updater.apply(desired)


def published(agent: Agent, topic: str) -> list[bytes]:
    out = []
    while (message := agent.outbox.peek()) is not None:
        if message.topic == topic:
            out.append(message.payload)
        agent.outbox.ack(message)
    return out


def events(agent: Agent) -> list[event_pb2.Event]:
    return [event_pb2.Event.FromString(p) for p in published(agent, agent.topics.events)]


def test_status_describes_the_device(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        idle = agent.status(device_pb2.DEVICE_STATE_ONLINE)
        assert idle.health == "idle" and list(idle.slots) == []
        await apply(agent, REF1, 1)
        await apply(agent, REF2, 2)
        status = agent.status(device_pb2.DEVICE_STATE_ONLINE)
        assert (status.device_id, status.fleet, status.agent_version) == ("dev-1", "f1", AGENT_VERSION)
        assert [(s.name, s.model.version) for s in status.slots] == [("active", "2"), ("previous", "1")]
        assert status.applied_generation == 2 and status.health == "serving"
        assert dict(status.labels) == {"site": "lab"}
        caps = status.capabilities
        assert any(r.startswith("onnxruntime/") for r in caps.runtimes)
        assert caps.cpu_count >= 1 and caps.mem_total_bytes > 0 and caps.disk_free_bytes > 0 and caps.cpu_arch
        offline = agent.status(device_pb2.DEVICE_STATE_OFFLINE)
        assert offline.state == device_pb2.DEVICE_STATE_OFFLINE and offline.health == "offline"

    run(scenario())


def test_a_failed_update_shows_as_degraded_health(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await apply(agent, REF1, 1)
        assert not await apply(agent, ref_for(b"never served", version="x"), 2)
        assert agent.status(device_pb2.DEVICE_STATE_ONLINE).health.startswith("degraded: ")

    run(scenario())


def test_predict_in_process_answers_and_counts(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        agent = make_agent(tmp_path, clock)
        with pytest.raises(NoModelError):
            agent.predict({"": np.zeros((1, 4), np.float32)})
        await apply(agent, REF1, 1)
        x = np.ones((3, 4), np.float32)
        result = agent.predict({"x": x})
        np.testing.assert_allclose(result.outputs["y"], expected_output(1.0, x))
        assert result.model == REF1
        with pytest.raises(InputError):
            agent.predict({"x": np.ones((3, 4), np.int32)})
        # The request refused before any model served went out in a window of no model at the swap,
        # so it does not count against REF1; the open window holds REF1's two requests.
        assert (agent.telemetry.requests, agent.telemetry.errors) == (2, 1)
        assert (agent.telemetry.total_requests, agent.telemetry.total_errors) == (3, 2)
        windows = [
            w
            for p in published(agent, agent.topics.telemetry)
            for w in telemetry_pb2.TelemetryBatch.FromString(p).windows
        ]
        assert [(w.model_version, w.requests, w.errors) for w in windows] == [("", 1, 1)]

    run(scenario())


def test_activation_closes_the_telemetry_window_of_the_old_model(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await apply(agent, REF1, 1)
        agent.predict({"": np.ones((1, 4), np.float32)})
        published(agent, agent.topics.events)
        await apply(agent, REF2, 2)
        batches = [
            telemetry_pb2.TelemetryBatch.FromString(p) for p in published(agent, agent.topics.telemetry)
        ]
        assert len(batches) == 1
        (window,) = batches[0].windows
        assert (window.model_version, window.requests) == ("1", 1)
        assert agent.telemetry.requests == 0

    run(scenario())


def test_events_are_numbered_in_order_with_the_device_and_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(wall_ms=42_000)
        agent = make_agent(tmp_path, clock)
        await apply(agent, REF1, 1)
        got = events(agent)
        assert [e.kind for e in got] == [
            K.EVENT_KIND_DOWNLOAD_STARTED,
            K.EVENT_KIND_DOWNLOAD_COMPLETED,
            K.EVENT_KIND_ACTIVATED,
            K.EVENT_KIND_COMMITTED,
        ]
        assert [e.seq for e in got] == [1, 2, 3, 4]
        assert all(e.device_id == "dev-1" and e.ts_ms == 42_000 and e.generation == 1 for e in got)

    run(scenario())


@pytest.mark.parametrize(
    ("payload", "reported"),
    [
        (b"\xff\xff", [K.EVENT_KIND_ERROR]),
        (
            command_pb2.Command(device_id="dev-2", ping=command_pb2.Ping()).SerializeToString(),
            [K.EVENT_KIND_ERROR],
        ),
        (
            command_pb2.Command(
                device_id="dev-1", expires_at_ms=1, ping=command_pb2.Ping()
            ).SerializeToString(),
            [K.EVENT_KIND_ERROR],
        ),
        (command_pb2.Command(device_id="dev-1", ping=command_pb2.Ping(nonce="n")).SerializeToString(), []),
    ],
)
def test_commands_that_are_malformed_foreign_or_expired_change_nothing(
    tmp_path: Path, payload: bytes, reported: list[int]
) -> None:
    agent = make_agent(tmp_path)
    agent.on_command(payload)
    assert [e.kind for e in events(agent)] == reported


def test_a_restart_serves_the_recorded_model_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = make_agent(tmp_path)
        await apply(first, REF1, 1)
        await apply(first, REF2, 2)
        events(first)  # the broker took them
        second = make_agent(tmp_path)
        await second.restore()
        assert second.active_model is not None and second.active_model.ref == REF2
        assert events(second) == []
        assert second.state.state.applied_generation == 2

    run(scenario())


def test_a_damaged_active_artifact_falls_back_to_the_previous_model_and_is_repaired(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = make_agent(tmp_path)
        await apply(first, REF1, 1)
        await apply(first, REF2, 2)
        first.store.path_for(REF2.sha256).write_bytes(b"\0" * REF2.length)  # disk rot while powered off
        events(first)
        second = make_agent(tmp_path)
        await second.restore()
        assert second.active_model is not None and second.active_model.ref == REF1
        got = events(second)
        assert [e.kind for e in got] == [K.EVENT_KIND_ERROR, K.EVENT_KIND_ROLLED_BACK]
        assert "cannot restore the active model linear:2: sha256 mismatch" in got[0].reason
        assert second.state.state.active == REF1
        # The retained desired state arrives again on connect; it names v2 at the applied generation.
        loop = asyncio.create_task(second.updater.run())
        try:
            second.on_desired(
                desired_pb2.DesiredState(
                    device_id="dev-1", fleet="f1", generation=2, model=REF2
                ).SerializeToString()
            )
            await second.wait_serving(REF2.sha256, timeout=5)
        finally:
            loop.cancel()

    run(scenario())


def test_a_damaged_state_file_starts_empty_and_says_so(tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "state.json").write_text("{ half written")
        agent = make_agent(tmp_path)
        await agent.restore()
        assert agent.active_model is None
        (event,) = events(agent)
        assert event.kind == K.EVENT_KIND_ERROR and "is corrupt" in event.reason

    run(scenario())
