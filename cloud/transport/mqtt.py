"""The hub's MQTT transport: device messages in, desired states out.

One paho client with its own network thread. Inbound messages go to a bounded queue that
an ingest thread drains in batches, one database transaction per batch (it waits up to
``ingest_linger_s`` for a batch to fill, so a quiet fleet is not stored a message at a
time): a full queue blocks the network thread, which slows the broker connection rather
than dropping messages the broker already acknowledged.

Subscriptions on MQTT 5: telemetry and events through a shared subscription, so replicas
of the hub split the load. Status uses a plain subscription on purpose: MQTT 5 (4.8.2) says
a broker sends no retained messages to a new shared subscription (EMQX and HiveMQ follow
it; Mosquitto 2.0 sends them anyway), and the retained statuses are how a (re)starting hub
learns which devices exist and whether they are online. Every replica applying every
status is harmless: applying one is idempotent.

On every (re)connect the hub resubscribes and republishes every stored desired state,
so a broker that lost its retained store heals.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.errors import InvalidInputError, PublishError
from cloud.services.ingest import InboundMessage
from cloud.settings import Settings
from cloud.startup import HubStartError, hostport
from edgefleet_proto.topics import Channel, FleetTopics, TopicError

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[InboundMessage]], None]
DesiredSource = Callable[[], Sequence[tuple[str, bytes]]]

_STOP = object()
_PUT_RETRY_S = 1.0


def _client_for(settings: Settings, client_id: str) -> paho.Client:
    v5 = settings.mqtt_protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    )
    if settings.mqtt_username is not None:
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        client.username_pw_set(settings.mqtt_username, password)
    return client


def check_broker(settings: Settings, *, timeout: float) -> None:
    """Connect once as the hub would (protocol, credentials), publish nothing, and disconnect.

    Raises HubStartError naming the broker and the settings to change when it does not
    answer, does not answer MQTT within ``timeout`` seconds, or refuses the hub.
    """
    where = hostport(settings.mqtt_host, settings.mqtt_port)
    client = _client_for(settings, f"edgefleet-hub-check-{secrets.token_hex(4)}")
    answered = threading.Event()
    refused: list[str] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        answered.set()

    client.on_connect = on_connect
    client.connect_timeout = timeout
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=settings.mqtt_keepalive_s)
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise HubStartError(
            f"no MQTT broker answers at {where}: {reason} (EDGEFLEET_MQTT_HOST, EDGEFLEET_MQTT_PORT)"
        ) from e
    client.loop_start()
    try:
        if not answered.wait(timeout):
            raise HubStartError(
                f"the MQTT broker at {where} did not accept a connection within {timeout:g} s "
                "(EDGEFLEET_MQTT_HOST, EDGEFLEET_MQTT_PORT)"
            )
        if refused:
            raise HubStartError(
                f"the MQTT broker at {where} refused the hub: {refused[0]} (EDGEFLEET_MQTT_USERNAME, "
                f"EDGEFLEET_MQTT_PASSWORD; EDGEFLEET_MQTT_PROTOCOL is {settings.mqtt_protocol})"
            )
    finally:
        client.disconnect()
        client.loop_stop()


class HubMqtt:
    """MQTT transport of one hub process; implements the DesiredPublisher protocol."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_batch: BatchHandler,
        desired_source: DesiredSource,
        client_id: str | None = None,
    ) -> None:
        self._settings = settings
        self._on_batch = on_batch
        self._desired_source = desired_source
        self.topics = FleetTopics(settings.fleet, settings.topic_prefix)
        self._v5 = settings.mqtt_protocol == "5"
        self._queue: queue.Queue[InboundMessage | object] = queue.Queue(maxsize=settings.ingest_queue_size)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._resync_wanted = threading.Event()
        self._resyncs = 0
        self._resync_cond = threading.Condition()
        self._subscribe_mid: int | None = None
        self._threads: list[threading.Thread] = []
        self._started = False

        self._client = _client_for(
            settings, client_id or f"edgefleet-hub-{settings.fleet}-{secrets.token_hex(4)}"
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; a broker that is down now is retried until it is up."""
        if self._started:
            raise RuntimeError("HubMqtt.start() called twice")
        self._started = True
        for target, name in ((self._ingest_loop, "mqtt-ingest"), (self._resync_loop, "mqtt-resync")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._client.connect_async(
            self._settings.mqtt_host, self._settings.mqtt_port, keepalive=self._settings.mqtt_keepalive_s
        )
        self._client.loop_start()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect, store what was already received, stop the threads (idempotent)."""
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._resync_wanted.set()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("ingest queue still full at shutdown; %d messages not stored", self._queue.qsize())
        for thread in self._threads:
            thread.join(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed; False on timeout."""
        return self._connected.wait(timeout) and self._subscribed.wait(timeout)

    @property
    def resyncs(self) -> int:
        """How many times the stored desired states were republished (once per connect)."""
        with self._resync_cond:
            return self._resyncs

    def wait_resyncs(self, count: int, timeout: float) -> bool:
        with self._resync_cond:
            return self._resync_cond.wait_for(lambda: self._resyncs >= count, timeout)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # --- outbound -----------------------------------------------------------------------

    def _desired_topic(self, device_id: str) -> str:
        try:
            return self.topics.device(device_id).desired
        except TopicError as e:
            raise InvalidInputError(str(e)) from e

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        where = f"{self._settings.mqtt_host}:{self._settings.mqtt_port}"
        if not self.connected:
            raise PublishError(f"not connected to the MQTT broker at {where}")
        info = self._client.publish(topic, payload, qos=1, retain=True)
        timeout = self._settings.publish_timeout_s
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as e:
            raise PublishError(f"broker at {where} did not take the message: {e}") from e
        if not info.is_published():
            raise PublishError(f"no acknowledgement from the broker at {where} within {timeout:g} s")

    def publish_desired(self, device_id: str, payload: bytes) -> None:
        """Publish a desired state retained with QoS 1 and wait for the broker's PUBACK."""
        self._publish_retained(self._desired_topic(device_id), payload)

    def publish_desired_many(self, payloads: Sequence[tuple[str, bytes]]) -> dict[str, str]:
        """Publish many desired states (retained, QoS 1) at once, then wait for their PUBACKs.

        Returns device id -> why, for those the broker did not take. All are handed to paho
        first (it keeps as many in flight as the broker allows), so a batch costs one round
        trip's wait, not one per device. The wait gives up once no acknowledgement came for
        ``publish_timeout_s``: while they keep coming, a large batch is not cut short.
        """
        where = f"{self._settings.mqtt_host}:{self._settings.mqtt_port}"
        if not self.connected:
            return {d: f"not connected to the MQTT broker at {where}" for d, _ in payloads}
        failed: dict[str, str] = {}
        sent: list[tuple[str, paho.MQTTMessageInfo]] = []
        for device_id, payload in payloads:
            try:
                topic = self._desired_topic(device_id)
            except InvalidInputError as e:
                failed[device_id] = str(e)
                continue
            info = self._client.publish(topic, payload, qos=1, retain=True)
            sent.append((device_id, info))
        timeout = self._settings.publish_timeout_s
        stalled = False
        for device_id, info in sent:
            if not stalled:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as e:
                    failed[device_id] = f"broker at {where} did not take the message: {e}"
                    continue
            if not info.is_published():
                # Nothing came back for a whole timeout: the rest are not waited for one by one.
                stalled = True
                failed[device_id] = f"no acknowledgement from the broker at {where} within {timeout:g} s"
        return failed

    def clear_retained(self, device_id: str) -> None:
        """Remove a device's retained desired state from the broker."""
        self._publish_retained(self._desired_topic(device_id), b"")

    # --- paho callbacks (network thread: never block on anything but the ingest queue) ---

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT broker refused the connection: %s", reason)
            return
        log.info("connected to MQTT broker %s:%d", self._settings.mqtt_host, self._settings.mqtt_port)
        self._connected.set()
        self._subscribed.clear()
        group = self._settings.share_group if self._v5 else None
        filters = [
            self.topics.filter(Channel.STATUS),
            self.topics.filter(Channel.TELEMETRY, group),
            self.topics.filter(Channel.EVENTS, group),
        ]
        if self._v5:
            _rc, self._subscribe_mid = client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        else:
            _rc, self._subscribe_mid = client.subscribe([(f, 1) for f in filters])
        self._resync_wanted.set()

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        if mid != self._subscribe_mid:
            return
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("MQTT broker refused subscriptions: %s", ", ".join(failed))
            return
        self._subscribed.set()

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self._connected.clear()
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        item = InboundMessage(msg.topic, bytes(msg.payload), bool(msg.retain))
        warned = False
        while True:
            try:
                self._queue.put(item, timeout=_PUT_RETRY_S)
                return
            except queue.Full:
                if self._stopping.is_set():
                    return
                if not warned:
                    log.warning("ingest queue full (%d); slowing the broker connection", self._queue.maxsize)
                    warned = True

    # --- worker threads -----------------------------------------------------------------

    def _ingest_loop(self) -> None:
        batch_size = self._settings.ingest_batch_size
        linger = self._settings.ingest_linger_s
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            # A quiet fleet's messages arrive one at a time; waiting a moment for more stores them
            # in one transaction. A busy one fills the batch without waiting.
            deadline = time.monotonic() + linger
            while len(batch) < batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                self._on_batch([m for m in batch if isinstance(m, InboundMessage)])
            except Exception:
                log.exception("ingest of a batch of %d messages failed", len(batch))
            if stop:
                return

    def _resync_loop(self) -> None:
        while True:
            self._resync_wanted.wait()
            self._resync_wanted.clear()
            if self._stopping.is_set():
                return
            try:
                self._republish()
            except Exception:
                log.exception("republishing stored desired states failed; retrying on the next connect")

    def _republish(self) -> None:
        payloads = self._desired_source()
        infos = []
        for device_id, payload in payloads:
            if not self.connected:
                return  # the next connect starts over
            infos.append(self._client.publish(self._desired_topic(device_id), payload, qos=1, retain=True))
        for info in infos:
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                info.wait_for_publish(self._settings.publish_timeout_s)
        log.info("republished %d stored desired state(s)", len(infos))
        with self._resync_cond:
            self._resyncs += 1
            self._resync_cond.notify_all()
