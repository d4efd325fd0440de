"""The broker stops and starts again in the middle of a telemetry stream: nothing acknowledged is lost.

A Mosquitto of this test's own (tests/_services: its own port, persistence on, so that the
hub's session survives the restart as it would on a production broker) runs for this test.
The agent streams a telemetry window every 50 ms into its on-disk queue; the hub stand-in
is a persistent QoS 1 session. The test counts end to end: none was dropped, every window the broker
acknowledged reached the subscriber, and the rest (at most the last one or two, if the
clean stop could not flush them) are still in the queue on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, BackoffConfig, TelemetryConfig
from edge_agent.outbox import OutMessage
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import desired_pb2, telemetry_pb2
from tests._services import Mosquitto, running
from tests.unit.agent.fakes import NO_TRIAL, FakeFetcher, linear_model, ref_for

pytestmark = pytest.mark.integration


def queued_seqs(path: Path | None, topic: str) -> set[int]:
    """Telemetry window numbers still in the agent's queue file."""
    assert path is not None
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT payload FROM outbox WHERE topic = ?", (topic,)).fetchall()
    return {w.seq for (payload,) in rows for w in telemetry_pb2.TelemetryBatch.FromString(payload).windows}


class Subscriber:
    """The hub's side: a persistent QoS 1 session that reconnects on its own."""

    def __init__(self, port: int, topic: str) -> None:
        self.seqs: list[int] = []
        # Notified on every batch, so a test waits for windows instead of polling for them.
        self._arrived = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id="hub-restart-test",
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.reconnect_delay_set(0.05, 0.2)
        # session_present of every connect: after the restart the broker must have kept the session.
        self.sessions: list[bool] = []
        self.client.on_connect = lambda c, _u, flags, *_: (
            self.sessions.append(flags.session_present),
            c.subscribe(topic, qos=1),
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        batch = telemetry_pb2.TelemetryBatch.FromString(msg.payload)
        with self._arrived:
            self.seqs.extend(w.seq for w in batch.windows)
            self._arrived.notify_all()

    def received(self) -> set[int]:
        with self._arrived:
            return set(self.seqs)

    def wait_for(self, predicate: Callable[[set[int]], bool], timeout: float) -> bool:
        """Wait until ``predicate`` holds for the windows received so far; False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(lambda: predicate(set(self.seqs)), timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    with running(lambda: Mosquitto(persistence=True), request) as b:
        yield b


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_no_acknowledged_telemetry_is_lost_across_a_broker_restart(
    broker: Mosquitto, short_tmp: Path
) -> None:
    model = linear_model(1.0)
    fetcher = FakeFetcher()
    fetcher.add(model)
    config = AgentConfig.for_simulation(
        device_id="dev-1",
        fleet="restart",
        state_dir=short_tmp / "state",
        mqtt_port=broker.port,
        mqtt_protocol="3.1.1",
        trial=NO_TRIAL,
        backoff=BackoffConfig(initial_s=0.05, max_s=0.2),
    )
    config = replace(
        config, telemetry=TelemetryConfig(interval_s=0.05), trust=TrustConfig(require_signed=False)
    )
    topic = DeviceTopics("restart", "dev-1").telemetry
    hub = Subscriber(broker.port, topic)
    produced: list[int] = []

    async def scenario() -> None:
        agent = Agent(config, fetcher=fetcher)
        put = agent.outbox.put

        def counting_put(message: OutMessage) -> None:
            if message.topic == topic:
                produced.extend(
                    w.seq for w in telemetry_pb2.TelemetryBatch.FromString(message.payload).windows
                )
            put(message)

        agent.outbox.put = counting_put  # type: ignore[method-assign]
        desired = desired_pb2.DesiredState(
            device_id="dev-1", fleet="restart", generation=1, model=ref_for(model)
        )
        assert await agent.updater.apply(desired)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))

        async def wait(condition: Callable[[], bool], what: str) -> None:
            async with asyncio.timeout(20):
                while not condition():
                    await asyncio.sleep(0.01)  # polling other threads' state

        try:
            assert await asyncio.to_thread(hub.wait_for, lambda got: len(got) >= 10, 20), (
                "the stream did not reach the hub within 20 s"
            )
            await asyncio.to_thread(broker.stop)
            before = len(produced)
            await wait(
                lambda: len(agent.outbox) >= 10 and len(produced) >= before + 10, "windows queued on disk"
            )
            queued_during_outage = len(agent.outbox)
            await asyncio.to_thread(broker.start)
            await wait(lambda: agent.link.connections >= 2, "the agent to reconnect")
            await wait(lambda: len(produced) >= before + 30, "the stream to go on")
        finally:
            stop.set()
            await task
        assert queued_during_outage >= 10
        assert agent.outbox.dropped == 0

    try:
        run(scenario())
        # What the broker did not acknowledge before the agent stopped is still in the queue on disk.
        waiting = queued_seqs(config.queue.path, topic)
        acknowledged = set(produced) - waiting
        try:
            if not hub.wait_for(lambda got: got >= acknowledged, 20):
                raise AssertionError("timed out after 20 s waiting for every acknowledged window at the hub")
        except AssertionError as e:
            missing = sorted(acknowledged - hub.received())
            raise AssertionError(f"{e}: missing {missing} of {len(produced)}") from None
    finally:
        hub.close()
    # The hub's persistent session came back with the broker (else delivery would be a race).
    assert len(hub.sessions) >= 2 and hub.sessions[-1] is True, hub.sessions
    assert sorted(set(produced)) == list(range(produced[0], produced[0] + len(set(produced))))
    assert len(waiting) <= 2, f"the clean stop flushed the queue, leaving at most the last windows: {waiting}"
    assert hub.received() | waiting == set(produced)
