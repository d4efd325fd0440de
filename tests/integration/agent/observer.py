"""A hub stand-in on the real broker: subscribes to a fleet's device topics, decodes what arrives,
publishes desired states and commands, and clears every retained message it saw or made."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import aiomqtt

from edgefleet_proto.topics import Channel, FleetTopics
from edgefleet_proto.v1 import command_pb2, desired_pb2, device_pb2, event_pb2, telemetry_pb2

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    device: str
    channel: Channel
    payload: bytes
    retain: bool


class Observer:
    def __init__(self, host: str, port: int, fleet: str) -> None:
        self.topics = FleetTopics(fleet)
        self._client = aiomqtt.Client(
            host, port, identifier=f"observer-{uuid.uuid4().hex[:8]}", protocol=aiomqtt.ProtocolVersion.V5
        )
        self.received: list[Received] = []
        self._arrived = asyncio.Event()
        self._retained: set[str] = set()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        await self._client.__aenter__()
        await self._client.subscribe(f"{self.topics.prefix}/{self.topics.fleet}/dev/+/+", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leave no retained message behind for later tests.
        for topic in sorted(self._retained):
            await self._client.publish(topic, b"", qos=1, retain=True)
        if self._reader is not None:
            self._reader.cancel()
        await self._client.__aexit__(exc_type, exc, tb)

    async def _read(self) -> None:
        async for message in self._client.messages:
            device, channel = self.topics.parse(message.topic.value)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if channel is Channel.STATUS and payload:
                self._retained.add(message.topic.value)
            self.received.append(Received(device, channel, payload, message.retain))
            self._arrived.set()

    async def wait_for(self, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Return ``probe()``'s first non-None value, re-checking as messages arrive."""
        async with asyncio.timeout(timeout):
            while True:
                found = probe()
                if found is not None:
                    return found
                self._arrived.clear()
                await self._arrived.wait()

    # -- decoded views ---------------------------------------------------------------------------

    def _payloads(self, device: str, channel: Channel) -> list[bytes]:
        return [r.payload for r in self.received if r.device == device and r.channel is channel and r.payload]

    def statuses(self, device: str) -> list[device_pb2.DeviceStatus]:
        return [device_pb2.DeviceStatus.FromString(p) for p in self._payloads(device, Channel.STATUS)]

    def events(self, device: str) -> list[event_pb2.Event]:
        return sorted(
            (event_pb2.Event.FromString(p) for p in self._payloads(device, Channel.EVENTS)),
            key=lambda e: e.seq,
        )

    def windows(self, device: str) -> list[telemetry_pb2.TelemetryWindow]:
        batches = [
            telemetry_pb2.TelemetryBatch.FromString(p) for p in self._payloads(device, Channel.TELEMETRY)
        ]
        return [w for b in batches for w in b.windows]

    def last_status(self, device: str) -> device_pb2.DeviceStatus | None:
        found = self.statuses(device)
        return found[-1] if found else None

    def event_of(self, device: str, kind: int) -> event_pb2.Event | None:
        return next((e for e in self.events(device) if e.kind == kind), None)

    # -- acting as the hub -----------------------------------------------------------------------

    async def publish_desired(self, desired: desired_pb2.DesiredState) -> None:
        topic = self.topics.device(desired.device_id).desired
        self._retained.add(topic)
        await self._client.publish(topic, desired.SerializeToString(), qos=1, retain=True)

    async def publish_command(self, command: command_pb2.Command) -> None:
        await self._client.publish(
            self.topics.device(command.device_id).cmd, command.SerializeToString(), qos=1
        )

    async def retained_status(self, host: str, port: int, device: str) -> device_pb2.DeviceStatus:
        """What a subscriber arriving now is handed for ``device``'s status (the retained copy)."""
        async with aiomqtt.Client(host, port, identifier=f"late-{uuid.uuid4().hex[:8]}") as late:
            await late.subscribe(self.topics.device(device).status, qos=1)
            async with asyncio.timeout(5):
                async for message in late.messages:
                    assert message.retain
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    return device_pb2.DeviceStatus.FromString(payload)
        raise AssertionError("no retained status")
