"""The MQTT link: one connection loop per agent, on the event loop (aiomqtt over paho).

On every connect the link publishes a retained ONLINE status (birth), leaves a
retained OFFLINE status as its last will, and subscribes to the desired and
command topics; the broker then hands over the retained desired state, which is
the whole re-sync protocol. Events and telemetry wait in a bounded
:class:`~edge_agent.outbox.Outbox` (on disk) until the broker acknowledges them
(QoS 1 PUBACK), so an outage loses only the oldest messages past the bound, and
counts them. A lost connection is retried with capped, jittered back-off; a
clean stop publishes OFFLINE first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import aiomqtt

from edge_agent.backoff import Backoff
from edge_agent.config import MqttConfig
from edge_agent.errors import ConfigError
from edge_agent.logs import Log
from edge_agent.outbox import Outbox, OutMessage
from edge_agent.tasks import cancel_and_wait
from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import device_pb2

__all__ = ["LinkHandler", "MqttLink"]

log = logging.getLogger(__name__)

ONLINE = device_pb2.DEVICE_STATE_ONLINE
OFFLINE = device_pb2.DEVICE_STATE_OFFLINE


class LinkHandler(Protocol):
    """What the link needs from the agent."""

    def status(self, state: device_pb2.DeviceState.ValueType) -> device_pb2.DeviceStatus: ...

    def on_desired(self, payload: bytes) -> None: ...

    def on_command(self, payload: bytes) -> None: ...


class MqttLink:
    """Keeps one device connected to the broker until stopped."""

    def __init__(
        self,
        *,
        config: MqttConfig,
        client_id: str,
        topics: DeviceTopics,
        handler: LinkHandler,
        outbox: Outbox,
        backoff: Backoff,
        drain_timeout_s: float = 2.0,
        logger: Log = log,
    ) -> None:
        self._log = logger
        self._config = config
        self._client_id = client_id
        self._topics = topics
        self._handler = handler
        self._outbox = outbox
        self._backoff = backoff
        self._publish_timeout = config.ack_timeout_s
        self._drain_timeout = drain_timeout_s
        self._status_dirty = False
        self._resubscribe = False
        self.connected = asyncio.Event()
        # Successful connections so far (tests and diagnostics read it).
        self.connections = 0

    def request_status(self) -> None:
        """Publish a fresh status as soon as connected (after an activation, on a ping)."""
        self._status_dirty = True
        self._outbox.changed.set()

    def request_resync(self) -> None:
        """Publish status and subscribe to the desired topic again, so the broker resends it."""
        self._status_dirty = True
        self._resubscribe = True
        self._outbox.changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, reconnect with back-off; return after a clean shutdown once ``stop`` is set."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except (aiomqtt.MqttError, ConfigError) as e:
                self._log.warning(
                    "mqtt link to %s:%d down: %s", self._config.host, self._config.port, e or type(e).__name__
                )
            finally:
                self.connected.clear()
            if stop.is_set():
                return
            delay = self._backoff.next_delay()
            self._log.info("mqtt reconnect in %.1f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    def _client(self) -> aiomqtt.Client:
        cfg = self._config
        will = aiomqtt.Will(
            topic=self._topics.status,
            payload=self._handler.status(OFFLINE).SerializeToString(),
            qos=1,
            retain=True,
        )
        tls = None
        if cfg.tls:
            # The broker is verified against ca_file (else the system's store); the device's certificate,
            # when set, is its identity there (the shipped broker takes its CN as the username).
            tls = aiomqtt.TLSParameters(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
            )
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.read_password(),
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5" else aiomqtt.ProtocolVersion.V311,
            will=will,
            keepalive=cfg.keepalive_s,
            tls_params=tls,
            timeout=self._publish_timeout,
        )

    async def _session(self, stop: asyncio.Event) -> None:
        client = self._client()
        try:
            await self._serve(client, stop)
        finally:
            _retrieve_disconnect_error(client)

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        async with client:
            self.connections += 1
            self._backoff.reset()
            self._status_dirty = False
            await self._publish_status(client, ONLINE)
            await client.subscribe([(self._topics.desired, 1), (self._topics.cmd, 1)])
            self._log.info(
                "mqtt connected to %s:%d as %s", self._config.host, self._config.port, self._client_id
            )
            self.connected.set()
            reader = asyncio.create_task(self._read(client), name=f"mqtt-read-{self._client_id}")
            writer = asyncio.create_task(self._write(client), name=f"mqtt-write-{self._client_id}")
            stopper = asyncio.create_task(stop.wait(), name=f"mqtt-stop-{self._client_id}")
            tasks = {reader, writer, stopper}
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(tasks)
            if stopper not in done:
                failed = reader if reader in done else writer
                error = failed.exception()
                raise error if error is not None else aiomqtt.MqttError("mqtt task ended unexpectedly")
            await self._shutdown(client)

    async def _shutdown(self, client: aiomqtt.Client) -> None:
        """Flush what is queued (briefly), then say OFFLINE; leaving the context disconnects cleanly."""
        try:
            async with asyncio.timeout(self._drain_timeout):
                while (message := self._outbox.peek()) is not None:
                    await client.publish(
                        message.topic, message.payload, qos=message.qos, retain=message.retain
                    )
                    self._outbox.ack(message)
        except TimeoutError:
            self._log.warning("shutdown: %d message(s) not flushed", len(self._outbox))
        await self._publish_status(client, OFFLINE)

    async def _publish_status(self, client: aiomqtt.Client, state: device_pb2.DeviceState.ValueType) -> None:
        payload = self._handler.status(state).SerializeToString()
        await client.publish(self._topics.status, payload, qos=1, retain=True)

    async def _publish(self, client: aiomqtt.Client, message: OutMessage) -> None:
        await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        self._outbox.ack(message)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            topic = message.topic.value
            try:
                if topic == self._topics.desired:
                    self._handler.on_desired(payload)
                elif topic == self._topics.cmd:
                    self._handler.on_command(payload)
                else:
                    self._log.debug("ignoring message on %s", topic)
            except Exception:  # one bad message must not drop the connection
                self._log.exception("handling a message on %s failed", topic)

    async def _write(self, client: aiomqtt.Client) -> None:
        changed = self._outbox.changed
        while True:
            if self._status_dirty:
                self._status_dirty = False
                await self._publish_status(client, ONLINE)
                continue
            if self._resubscribe:
                self._resubscribe = False
                await client.subscribe(self._topics.desired, qos=1)
                continue
            message = self._outbox.peek()
            if message is not None:
                await self._publish(client, message)
                continue
            changed.clear()
            await changed.wait()


def _retrieve_disconnect_error(client: aiomqtt.Client) -> None:
    """Mark the reason a connection dropped as seen, once the session is over.

    aiomqtt records an unexpected disconnection (a broker that closes the socket, at its
    shutdown or after an error of its own) as the exception of a private future. When the
    drop comes while the client is already leaving its context, ``__aexit__`` returns
    early without reading it, and asyncio logs "Future exception was never retrieved" for
    each such client when the future is collected. The link has already logged the drop
    (or stopped on purpose), so reading it here loses nothing.
    """
    disconnected = getattr(client, "_disconnected", None)
    if isinstance(disconnected, asyncio.Future) and disconnected.done() and not disconnected.cancelled():
        disconnected.exception()
