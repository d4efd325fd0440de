"""Trial policies on a real agent: the real Mosquitto broker, a gRPC artifact service, real ONNX models.

v1 is a small MLP. v2 is the same graph retrained much wider (tens of times slower): under the
default policy it is judged against v1 and rolled back on the latency ratio. v3 is another
architecture (an extra layer) just as heavy: with an assignment's absolute-budget policy it is
judged on its own and committed, and the device reports which policy judged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.client import LocalApiError, LocalClient
from edge_agent.config import TrialConfig
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2
from model_tools.trial_policy import parse_trial_policy
from tests.integration.agent.observer import Observer
from tests.integration.agent.test_agent_broker import agent_config
from tests.large_model import MiB, make_large_onnx
from tests.unit.agent.artifact_server import DictArtifactService, start_artifact_server
from tests.unit.agent.fakes import ref_for

pytestmark = pytest.mark.integration

K = event_pb2.EventKind
# Judged every 8 requests from the 16th; 64 requests end the window.
TRIAL = TrialConfig(window_requests=64, window_s=600, min_requests=16)
BUDGET = parse_trial_policy({"latency": {"budget_ms": 2000}})


def run(coro: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def desired(fleet: str, generation: int, ref: common_pb2.ModelRef, **kw: Any) -> desired_pb2.DesiredState:
    return desired_pb2.DesiredState(device_id="dev-1", fleet=fleet, generation=generation, model=ref, **kw)


def drive(socket: Path, stop: threading.Event) -> int:
    """Requests through the local API until ``stop``; the trial needs live traffic to judge."""
    rng = np.random.default_rng(3)
    sent = 0
    with LocalClient(f"unix:{socket}") as client:
        while not stop.is_set():
            # No model loaded yet answers an error; the trial counts only what reached a model.
            with contextlib.suppress(LocalApiError):
                client.predict(rng.normal(size=(1, 64)).astype(np.float32))
            sent += 1
    return sent


async def decided(hub: Observer, generation: int, timeout: float = 60) -> event_pb2.Event:
    def outcome() -> event_pb2.Event | None:
        return next(
            (
                e
                for e in hub.events("dev-1")
                if e.generation == generation and e.kind in (K.EVENT_KIND_COMMITTED, K.EVENT_KIND_ROLLED_BACK)
            ),
            None,
        )

    return await hub.wait_for(outcome, timeout=timeout)


def test_a_retrain_is_judged_against_the_previous_version_and_a_new_architecture_on_its_own(
    mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    paths = {
        "v1": make_large_onnx(short_tmp / "v1.onnx", target_bytes=MiB // 4, layers=1, seed=1),
        "v2": make_large_onnx(short_tmp / "v2.onnx", target_bytes=48 * MiB, layers=1, seed=2),
        "v3": make_large_onnx(short_tmp / "v3.onnx", target_bytes=48 * MiB, layers=2, seed=3),
    }
    data = {name: path.read_bytes() for name, path in paths.items()}
    refs = {name: ref_for(blob, name="mlp", version=name) for name, blob in data.items()}
    service = DictArtifactService(chunk=256 * 1024)
    for blob in data.values():
        service.add(blob)
    socket = short_tmp / "agent.sock"

    async def scenario() -> None:
        server, endpoint = await start_artifact_server(service)
        async with Observer(*mqtt_broker, fleet_name) as hub:
            agent = Agent(replace(agent_config(short_tmp, fleet_name, mqtt_broker, endpoint), trial=TRIAL))
            stop_agent, stop_traffic = asyncio.Event(), threading.Event()
            task = asyncio.create_task(agent.run(stop_agent))
            traffic = asyncio.create_task(asyncio.to_thread(drive, socket, stop_traffic))
            try:
                await hub.publish_desired(desired(fleet_name, 1, refs["v1"]))
                first = await decided(hub, 1)
                assert first.kind == K.EVENT_KIND_COMMITTED, first.reason
                assert first.details["policy_source"] == "device"  # the state carried no policy

                # The same graph, much slower: the default policy compares with v1 and rolls it back.
                await hub.publish_desired(desired(fleet_name, 2, refs["v2"]))
                retrain = await decided(hub, 2)
                assert retrain.kind == K.EVENT_KIND_ROLLED_BACK, retrain.reason
                assert retrain.details["gate"] == "latency_ratio", retrain.reason
                assert "the previous version's" in retrain.reason
                started = next(
                    e
                    for e in hub.events("dev-1")
                    if e.generation == 2 and e.kind == K.EVENT_KIND_TRIAL_STARTED
                )
                assert (started.details["architecture"], started.details["policy_source"]) == (
                    "same",
                    "device",
                )

                # Another architecture as heavy, under an assignment's absolute budget: committed.
                await hub.publish_desired(
                    desired(fleet_name, 3, refs["v3"], trial_policy=BUDGET.to_proto("assignment"))
                )
                arch = await decided(hub, 3)
                assert arch.kind == K.EVENT_KIND_COMMITTED, arch.reason
                assert arch.details["policy_source"] == "assignment"
                started = next(
                    e
                    for e in hub.events("dev-1")
                    if e.generation == 3 and e.kind == K.EVENT_KIND_TRIAL_STARTED
                )
                assert started.details["architecture"] == "changed"
                assert float(started.details["latency_ratio"]) == 0.0  # no ratio gate
                assert float(started.details["latency_budget_ms"]) == 2000.0
                assert float(arch.details["p95_ms"]) > float(retrain.details["previous_p95_ms"])

                def reported() -> Any:
                    s = hub.last_status("dev-1")
                    return (
                        s if s is not None and s.applied_generation == 3 and s.trial_policy_source else None
                    )

                status = await hub.wait_for(reported, timeout=20)
                assert status.trial_policy_source == "assignment"
                assert status.trial_policy_digest == arch.details["policy_digest"]
                assert status.last_load_ms > 0
                # A 48 MiB model's session holds its weights: tens of MiB more resident memory.
                assert status.session_memory_bytes > 16 * MiB
            finally:
                stop_traffic.set()
                await traffic
                stop_agent.set()
                await task
        await server.stop(None)

    run(scenario())
