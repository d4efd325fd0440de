"""The local prediction API over a real Unix socket (and loopback TCP), called through LocalClient.

The agent behind it gets its model from a FakeFetcher; no broker is involved.
LocalClient is synchronous, so the tests call it from a worker thread while
the event loop serves.
"""

from __future__ import annotations

import asyncio
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_agent.agent import Agent
from edge_agent.client import (
    AlreadyLabelledError,
    InvalidInputError,
    InvalidLabelError,
    LocalClient,
    NoModelServingError,
    PredictionNotFoundError,
)
from edge_agent.config import AgentConfig, LocalApiConfig
from edge_agent.errors import AgentError, DuplicateLabelError, LabelError, UnknownPredictionError
from edge_agent.server import INFERENCE_SERVICE
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import desired_pb2
from tests.unit.agent.fakes import NO_TRIAL, FakeClock, FakeFetcher, expected_output, linear_model, ref_for

V1 = linear_model(1.5)
REF1 = ref_for(V1, version="1")

UNSIGNED = TrustConfig(require_signed=False)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def make_agent(root: Path, *, socket_path: Path | None = None, tcp_port: int = 0) -> Agent:
    fetcher = FakeFetcher()
    fetcher.add(V1)
    config = AgentConfig.for_simulation(
        device_id="dev-1", fleet="f1", state_dir=root / "state", trial=NO_TRIAL, trust=UNSIGNED
    )
    config = replace(config, local_api=LocalApiConfig(socket=socket_path, tcp_port=tcp_port))
    return Agent(config, clock=FakeClock(), fetcher=fetcher)


async def install_v1(agent: Agent) -> None:
    assert await agent.updater.apply(
        desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=1, model=REF1)
    )


async def with_server(
    root: Path, body: Callable[[Agent, LocalClient], Awaitable[None]], *, tcp_port: int = 0, unix: bool = True
) -> None:
    agent = make_agent(root, socket_path=root / "api.sock" if unix else None, tcp_port=tcp_port)
    server = agent.local_api
    assert server is not None
    await server.start()
    client = LocalClient(server.targets[-1])
    try:
        await body(agent, client)
    finally:
        client.close()
        await server.stop()


def test_predict_info_and_telemetry_through_the_unix_socket(short_tmp: Path) -> None:
    async def body(agent: Agent, client: LocalClient) -> None:
        await install_v1(agent)
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        y = await asyncio.to_thread(client.predict, x)
        np.testing.assert_allclose(y, expected_output(1.5, x))
        named = await asyncio.to_thread(client.predict_named, {"x": x})
        np.testing.assert_allclose(named["y"], expected_output(1.5, x))
        info = await asyncio.to_thread(client.info)
        assert (info.device_id, info.model_version, info.model_sha256) == ("dev-1", "1", REF1.sha256)
        assert [(s.name, s.dtype, s.shape) for s in info.inputs] == [("x", "float32", (-1, 4))]
        assert [(s.name, s.dtype, s.shape) for s in info.outputs] == [("y", "float32", (-1, 2))]
        assert info.health == "serving"
        assert (agent.telemetry.requests, agent.telemetry.errors) == (2, 0)

    run(with_server(short_tmp, body))


def test_feedback_through_the_unix_socket_and_each_refusal_with_its_status(short_tmp: Path) -> None:
    async def body(agent: Agent, client: LocalClient) -> None:
        await install_v1(agent)
        x = np.ones((1, 4), np.float32)
        answer = await asyncio.to_thread(client.predict_with_id, {"x": x})
        np.testing.assert_allclose(answer.outputs["y"], expected_output(1.5, x))
        assert (answer.model_version, answer.model_sha256) == ("1", REF1.sha256) and answer.prediction_id
        # Both scores of this model are equal: the top-1 class is 0.
        reply = await asyncio.to_thread(client.feedback, answer.prediction_id, 0)
        assert (reply.model_version, reply.model_sha256, reply.correct) == ("1", REF1.sha256, True)
        assert agent.sketches.has_labels

        with pytest.raises(AlreadyLabelledError, match="already has label 0") as duplicate:
            await asyncio.to_thread(client.feedback, answer.prediction_id, 1)
        assert duplicate.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert isinstance(duplicate.value, DuplicateLabelError)  # the same errors as in-process

        with pytest.raises(PredictionNotFoundError, match="unknown prediction id 'nope'") as unknown:
            await asyncio.to_thread(client.feedback, "nope", 0)
        assert unknown.value.code == grpc.StatusCode.NOT_FOUND
        assert isinstance(unknown.value, UnknownPredictionError)

        other = await asyncio.to_thread(client.predict_with_id, {"": x})
        with pytest.raises(
            InvalidLabelError, match=r"label 2 is not a class of linear:1: expected a class id in 0\.\.1"
        ) as bad:
            await asyncio.to_thread(client.feedback, other.prediction_id, 2)
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT and isinstance(bad.value, LabelError)
        with pytest.raises(InvalidLabelError, match="expected a class id"):
            await asyncio.to_thread(client.feedback, other.prediction_id, -1)  # refused before sending

        clock = agent._clock
        assert isinstance(clock, FakeClock)
        clock.advance(agent.config.sketch.feedback_ttl_s + 1)
        with pytest.raises(PredictionNotFoundError, match="expired") as expired:
            await asyncio.to_thread(client.feedback, other.prediction_id, 1)
        assert expired.value.code == grpc.StatusCode.NOT_FOUND

    run(with_server(short_tmp, body))


def test_the_socket_is_group_accessible_only_and_removed_at_stop(short_tmp: Path) -> None:
    sock = short_tmp / "api.sock"

    async def body(agent: Agent, client: LocalClient) -> None:
        mode = sock.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660

    run(with_server(short_tmp, body))
    assert not sock.exists()


def test_no_model_yet_is_failed_precondition(short_tmp: Path) -> None:
    async def body(agent: Agent, client: LocalClient) -> None:
        with pytest.raises(NoModelServingError, match="no model is serving yet") as info:
            await asyncio.to_thread(client.predict, np.zeros((1, 4), np.float32))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        described = await asyncio.to_thread(client.info)
        assert described.model_version is None and described.health == "idle"
        assert agent.telemetry.errors == 1

    run(with_server(short_tmp, body))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"": np.zeros((1, 4), np.float64)}, "input 'x': expected dtype float32, got float64"),
        ({"": np.zeros((1, 5), np.float32)}, "input 'x': expected shape [-1, 4], got [1, 5]"),
        ({"z": np.zeros((1, 4), np.float32)}, "missing ['x'], unexpected ['z']"),
    ],
)
def test_bad_inputs_are_invalid_argument_with_what_was_expected(
    short_tmp: Path, inputs: dict[str, np.ndarray], message: str
) -> None:
    async def body(agent: Agent, client: LocalClient) -> None:
        await install_v1(agent)
        with pytest.raises(InvalidInputError) as info:
            await asyncio.to_thread(client.predict_named, inputs)
        assert message in str(info.value)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert agent.telemetry.errors == 1

    run(with_server(short_tmp, body))


def test_health_follows_the_model(short_tmp: Path) -> None:
    def check(target: str, service: str) -> int:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)

    async def body(agent: Agent, client: LocalClient) -> None:
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        assert await asyncio.to_thread(check, client.target, "") == serving
        assert await asyncio.to_thread(check, client.target, INFERENCE_SERVICE) == not_serving
        await install_v1(agent)
        # The agent updates health in a task of its own; poll the server (external state) with a deadline.
        deadline = time.monotonic() + 5
        while await asyncio.to_thread(check, client.target, INFERENCE_SERVICE) != serving:
            assert time.monotonic() < deadline, "health never turned SERVING"

    run(with_server(short_tmp, body))


def test_loopback_tcp_serves_the_same_api(short_tmp: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def body(agent: Agent, client: LocalClient) -> None:
        assert client.target == f"127.0.0.1:{port}"
        await install_v1(agent)
        y = await asyncio.to_thread(client.predict, np.ones((1, 4), np.float32))
        assert y.shape == (1, 2)

    run(with_server(short_tmp, body, tcp_port=port, unix=False))


def test_a_stale_socket_is_replaced_but_a_regular_file_is_not(short_tmp: Path) -> None:
    stale = short_tmp / "api.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # closed without unlinking: what a killed agent leaves behind

    async def body(agent: Agent, client: LocalClient) -> None:
        info = await asyncio.to_thread(client.info)
        assert info.device_id == "dev-1"

    run(with_server(short_tmp, body))

    other = short_tmp / "other" / "api.sock"
    other.parent.mkdir()
    other.write_text("not a socket")

    async def refuse() -> None:
        server = make_agent(short_tmp / "other", socket_path=other).local_api
        assert server is not None
        with pytest.raises(AgentError, match="exists and is not a socket; refusing to replace it"):
            await server.start()

    run(refuse())
    assert other.read_text() == "not a socket"
