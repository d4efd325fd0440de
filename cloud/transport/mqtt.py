"""The hub's MQTT transport: device messages in, desired states out.

One paho client with its own network thread. Inbound messages go to a bounded queue that
an ingest thread drains in batches, one database transaction per batch (it waits up to
``ingest_linger_s`` for a batch to fill, so a quiet fleet is not stored a message at a
time). A full queue would block the network thread; on MQTT 5 it cannot fill, since the hub
takes no more unacknowledged messages than it holds (``receive_maximum``). What the hub has not
taken yet waits at the broker, which drops it past ``max_queued_messages``: the broker's limit
is what decides how long a burst or an outage the hub rides out.

Nothing the broker acknowledged to a device is lost when the hub stops, crashes or loses
its connection:

- a message is acknowledged (PUBACK, sent by hand) only once its batch is committed, in the
  order received, so whatever was not stored yet is still the broker's to redeliver;
- the session outlives the connection: a client id that stays the same for a restarted hub
  (``stable_client_id``), never a clean start, and on MQTT 5 a session expiry
  (``SESSION_EXPIRY_S``). While the hub is away the broker queues its messages, up to the
  broker's ``max_queued_messages`` (deploy/mosquitto/edgefleet.conf sizes it);
- a database that refuses a batch (``StoreUnavailableError``) leaves it unacknowledged and
  is retried with back-off; what the broker drops anyway shows in ``broker_dropped``, read
  from ``$SYS/broker/publish/messages/dropped``.

On MQTT 5 the hub tells the broker how many unacknowledged messages it takes at once (as many as
``ingest_queue_size``); on 3.1.1 the broker's ``max_inflight_messages`` decides: set it at least
to ``ingest_batch_size`` (or batches stay that small) and at most to ``ingest_queue_size``.

Subscriptions on MQTT 5: telemetry, sketches and events through a shared subscription, so
replicas of the hub split the load. Mosquitto 2.0 keeps dealing an offline member of a share
group its part of the messages (queued in its session), so each replica needs a client id of
its own that comes back (``EDGEFLEET_DATA_DIR`` per replica, or a stable host name).
Status uses a plain subscription on purpose: MQTT 5 (4.8.2) says a broker sends no retained
messages to a new shared subscription (EMQX and HiveMQ follow it; Mosquitto 2.0 sends them
anyway), and the retained statuses are how a (re)starting hub learns which devices exist and
whether they are online. Every replica applying every status is harmless: applying one is
idempotent.

On every (re)connect the hub resubscribes and republishes every stored desired state,
so a broker that lost its retained store heals.

Healing what the broker dropped: a status is retained, but reaches the hub only when the hub
subscribes, so a birth the broker dropped for the hub (its queue past ``max_queued_messages``
in a reconnect storm) would stay unknown until the device reconnects. When the broker's dropped
count moves, or ingest finds a gap in a device's telemetry ``seq`` (``request_heal``), the hub
subscribes to the status filter again: the broker then sends every retained status once more
(MQTT 5 Retain Handling 0; MQTT 3.1.1 3.8.4 for a filter already subscribed), without an
unsubscribe that would lose live statuses meanwhile. Applying a status twice is harmless. A
re-read sends every device's status, so it runs at most once per ``heal_min_interval_s``; a
request within that time is kept and runs when it ends, so the last drop of a storm is healed.
It also waits until the hub has stored everything it received: poured onto a backlog, the re-read
would only pass the broker's queue limit again. (So the broker's queue must hold one re-read, a
status per device, on top of the hub's in-flight window; the shipped config holds a million.)
"""

from __future__ import annotations

import hashlib
import logging
import queue
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.errors import InvalidInputError, PublishError
from cloud.observability.metrics import HealMetrics, IngestMetrics
from cloud.services.ingest import InboundMessage, StoreUnavailableError
from cloud.settings import Settings
from cloud.startup import HubStartError, hostport
from edgefleet_proto.topics import Channel, FleetTopics, TopicError

__all__ = [
    "DROPPED_TOPIC",
    "SESSION_EXPIRY_S",
    "HealLimiter",
    "HubMqtt",
    "check_broker",
    "receive_maximum",
    "stable_client_id",
    "tls_context",
]

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[InboundMessage]], None]
DesiredSource = Callable[[], Sequence[tuple[str, bytes]]]

# How long the broker keeps the hub's session (subscriptions and queued messages) after the hub
# went away: long enough to ride out a restart, an upgrade or a night's outage of the hub.
SESSION_EXPIRY_S = 86_400
# Mosquitto's count of messages it dropped since it started (queue limits), every sys_interval.
DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
_RECEIVE_MAXIMUM_LIMIT = 65_535  # the most MQTT 5 can say
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 30.0

_STOP = object()
_PUT_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class _Received:
    message: InboundMessage
    mid: int
    qos: int
    # Which connection delivered it: a packet id means nothing on another connection.
    connection: int
    # time.monotonic() on receipt, for the receive-to-commit latency in /metrics.
    received_at: float = 0.0


@dataclass(slots=True)
class HealLimiter:
    """At most one re-read of the retained statuses per ``min_interval_s`` (times: time.monotonic())."""

    min_interval_s: float
    last: float | None = None

    def wait_s(self, now: float) -> float:
        """Seconds until a re-read may run: 0 for the first one, else what is left of the interval."""
        if self.last is None:
            return 0.0
        return max(0.0, self.last + self.min_interval_s - now)

    def ran(self, now: float) -> None:
        self.last = now


def receive_maximum(settings: Settings) -> int:
    """How many unacknowledged messages the hub lets the broker send it at once (MQTT 5 Receive Maximum).

    As many as the ingest queue holds, so that a burst is read off the socket at once; no more,
    or the network thread would wait on the full queue. Measured on Mosquitto 2.0.11: what a
    subscriber has not read yet is queued, and dropped past ``max_queued_messages``, whatever its
    Receive Maximum, so the broker's queue limit is what must be sized (deploy/mosquitto/).
    """
    return min(_RECEIVE_MAXIMUM_LIMIT, settings.ingest_queue_size)


def stable_client_id(settings: Settings) -> str:
    """``edgefleet-hub-{fleet}-{digest}``, the same each time this hub starts on this host with this data
    folder, so that the broker hands a restarted hub the session (and the messages) it left behind."""
    where = f"{socket.gethostname()}\0{settings.data_dir.resolve()}"
    return f"edgefleet-hub-{settings.fleet}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


def _client_for(settings: Settings, client_id: str, *, persistent: bool = False) -> paho.Client:
    v5 = settings.mqtt_protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        # MQTT 3.1.1 keeps a session only without clean session; MQTT 5 says so at connect (clean_start).
        clean_session=None if v5 else not persistent,
        # Acknowledged once stored: see the module's docstring.
        manual_ack=persistent,
    )
    if settings.mqtt_username is not None:
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        client.username_pw_set(settings.mqtt_username, password)
    if settings.mqtt_uses_tls():
        client.tls_set_context(tls_context(settings))
    return client


def tls_context(settings: Settings) -> ssl.SSLContext:
    """TLS for the hub's MQTT client: the broker verified against EDGEFLEET_MQTT_TLS_CA (else the system's
    trust store), host name checked, and the hub's client certificate presented when one is set."""
    ca = settings.mqtt_tls_ca
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        if settings.mqtt_tls_cert is not None:
            key = settings.mqtt_tls_key
            ctx.load_cert_chain(str(settings.mqtt_tls_cert), str(key) if key is not None else None)
    except (OSError, ssl.SSLError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise HubStartError(
            f"cannot load the MQTT TLS files (CA {ca}, certificate {settings.mqtt_tls_cert}): {reason} "
            "(EDGEFLEET_MQTT_TLS_CA, EDGEFLEET_MQTT_TLS_CERT, EDGEFLEET_MQTT_TLS_KEY)"
        ) from e
    return ctx


def check_broker(settings: Settings, *, timeout: float) -> None:
    """Connect once as the hub would (protocol, credentials), publish nothing, and disconnect.

    Raises HubStartError naming the broker and the settings to change when it does not
    answer, does not answer MQTT within ``timeout`` seconds, or refuses the hub.
    """
    where = hostport(settings.mqtt_host, settings.mqtt_port)
    client = _client_for(settings, f"edgefleet-hub-check-{secrets.token_hex(4)}")
    answered = threading.Event()
    refused: list[str] = []

    closed: list[str] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        answered.set()

    def on_disconnect(_c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        # Closed before any CONNACK: over TLS 1.3 a refused client certificate shows only now.
        if not answered.is_set():
            closed.append(str(reason))
            answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect_timeout = timeout
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=settings.mqtt_keepalive_s)
    except ssl.SSLError as e:
        raise HubStartError(
            f"TLS with the MQTT broker at {where} failed: {e.reason or e} (EDGEFLEET_MQTT_TLS_CA, "
            "EDGEFLEET_MQTT_TLS_CERT, EDGEFLEET_MQTT_TLS_KEY; the broker's certificate must name "
            "EDGEFLEET_MQTT_HOST)"
        ) from e
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
        if closed:
            tls = (
                " (over TLS: a client certificate it does not accept, or none; EDGEFLEET_MQTT_TLS_CERT, "
                "EDGEFLEET_MQTT_TLS_KEY)"
                if settings.mqtt_uses_tls()
                else ""
            )
            raise HubStartError(f"the MQTT broker at {where} closed the connection before answering{tls}")
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
        metrics: IngestMetrics | None = None,
        heal_metrics: HealMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._heal_metrics = heal_metrics
        self._monotonic = monotonic
        self._heal_wanted = threading.Event()
        self._heal_cond = threading.Condition()
        self._heal_reasons: set[str] = set()
        self._heal_limit = HealLimiter(settings.heal_min_interval_s)
        self._heals = 0
        # Messages received and not yet through ingest: a re-read waits for the hub to catch up.
        self._pending = 0
        self._drained = threading.Condition()
        self._on_batch = on_batch
        self._metrics = metrics
        self._desired_source = desired_source
        self.topics = FleetTopics(settings.fleet, settings.topic_prefix)
        self._v5 = settings.mqtt_protocol == "5"
        self._queue: queue.Queue[_Received | object] = queue.Queue(maxsize=settings.ingest_queue_size)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._resync_wanted = threading.Event()
        self._resyncs = 0
        self._resync_cond = threading.Condition()
        self._subscribe_mid: int | None = None
        self._threads: list[threading.Thread] = []
        self._started = False
        # Bumped on each connect; held while acknowledging so that no PUBACK of an old connection's
        # packet id goes out on a new one.
        self._connection = 0
        self._ack_lock = threading.Lock()
        self._broker_dropped: int | None = None
        self.receive_maximum = receive_maximum(settings)

        self.client_id = client_id or stable_client_id(settings)
        self._client = _client_for(settings, self.client_id, persistent=True)
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
        loops = (
            (self._ingest_loop, "mqtt-ingest"),
            (self._resync_loop, "mqtt-resync"),
            (self._heal_loop, "mqtt-heal"),
        )
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        properties: Properties | None = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            properties.ReceiveMaximum = self.receive_maximum
        self._client.connect_async(
            self._settings.mqtt_host,
            self._settings.mqtt_port,
            keepalive=self._settings.mqtt_keepalive_s,
            # Never a clean start (paho's default is one on the first connect): the session this
            # hub left holds what devices sent while it was away. (3.1.1: clean_session, above.)
            clean_start=False if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store and acknowledge what was already received, disconnect, stop the threads (idempotent).

        What arrives meanwhile is left unacknowledged: the broker keeps it in the session.
        """
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning(
                "ingest queue still full at shutdown; %d messages left to the broker to redeliver",
                self._queue.qsize(),
            )
        for thread in self._threads:
            if thread.name == "mqtt-ingest":
                thread.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._resync_wanted.set()
        self._heal_wanted.set()
        with self._drained:
            self._drained.notify_all()
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
    def heals(self) -> int:
        """How many times the retained statuses were re-read to heal dropped messages."""
        with self._heal_cond:
            return self._heals

    def wait_heals(self, count: int, timeout: float) -> bool:
        with self._heal_cond:
            return self._heal_cond.wait_for(lambda: self._heals >= count, timeout)

    def request_heal(self, reason: str) -> None:
        """Re-read the retained statuses soon (at most once per ``heal_min_interval_s``).

        ``reason`` is ``broker_dropped`` or ``seq_gap``; it is counted and logged with the re-read.
        """
        if self._heal_metrics is not None:
            self._heal_metrics.triggers.labels(reason).inc()
        with self._heal_cond:
            self._heal_reasons.add(reason)
        self._heal_wanted.set()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def broker_dropped(self) -> int | None:
        """Messages the broker says it dropped since it started; None until it says.

        Mosquitto publishes the count when it changes, retained for 60 s only: a hub that connects
        after a quiet minute reads None until the next drop (or forever from a broker without $SYS).
        """
        return self._broker_dropped

    # --- outbound -----------------------------------------------------------------------

    def _desired_topic(self, device_id: str) -> str:
        try:
            return self.topics.device(device_id).desired
        except TopicError as e:
            raise InvalidInputError(str(e)) from e

    def _publish_retained(self, topic: str, payload: bytes, *, retain: bool = True) -> None:
        where = f"{self._settings.mqtt_host}:{self._settings.mqtt_port}"
        if not self.connected:
            raise PublishError(f"not connected to the MQTT broker at {where}")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
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

    def publish_command(self, device_id: str, payload: bytes) -> None:
        """Publish a signed command with QoS 1, not retained (a command is for now, not for later),
        and wait for the broker's PUBACK."""
        try:
            topic = self.topics.device(device_id).cmd
        except TopicError as e:
            raise InvalidInputError(str(e)) from e
        self._publish_retained(topic, payload, retain=False)

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
        with self._ack_lock:
            self._connection += 1
        self._connected.set()
        self._subscribed.clear()
        group = self._settings.share_group if self._v5 and self._settings.share_group else None
        filters = [
            self.topics.filter(Channel.STATUS),
            self.topics.filter(Channel.TELEMETRY, group),
            self.topics.filter(Channel.SKETCH, group),
            self.topics.filter(Channel.EVENTS, group),
        ]
        if self._v5:
            _rc, self._subscribe_mid = client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        else:
            _rc, self._subscribe_mid = client.subscribe([(f, 1) for f in filters])
        # On its own: a broker without $SYS (or one that refuses it) must not fail the hub's subscriptions.
        client.subscribe(DROPPED_TOPIC, 0)
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
        # Under the ack lock: a PUBACK being queued now lands before paho clears its outgoing
        # packets to reconnect, never after (ahead of the next CONNECT).
        with self._ack_lock:
            self._connected.clear()
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason)

    def _on_message(self, client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == DROPPED_TOPIC:
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            self._note_dropped(bytes(msg.payload))
            return
        item = _Received(
            InboundMessage(msg.topic, bytes(msg.payload), bool(msg.retain)),
            msg.mid,
            msg.qos,
            self._connection,
            time.monotonic(),
        )
        warned = False
        self._count_pending(1)
        while True:
            try:
                self._queue.put(item, timeout=_PUT_RETRY_S)
                return
            except queue.Full:
                if self._stopping.is_set():
                    self._count_pending(-1)
                    return  # unacknowledged: the broker redelivers it to this session
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
            received = [m for m in batch if isinstance(m, _Received)]
            if self._store(received):
                self._ack(received)
                if self._metrics is not None:
                    self._metrics.committed([(r.message.topic, r.received_at) for r in received])
            self._count_pending(-len(received))
            if stop:
                return

    def _count_pending(self, change: int) -> None:
        with self._drained:
            self._pending += change
            if self._pending <= 0:
                self._drained.notify_all()

    def _store(self, received: Sequence[_Received]) -> bool:
        """Hand a batch to ``on_batch`` until the database takes it; False when stopped first."""
        messages = [r.message for r in received]
        delay = _RETRY_MIN_S
        while True:
            try:
                self._on_batch(messages)
                return True
            except StoreUnavailableError as e:
                log.warning("%s; offering the batch of %d again in %.1f s", e, len(messages), delay)
            except Exception:
                # A fault of the hub's own, not of the database: retrying would fail the same way.
                log.exception("ingest of a batch of %d messages failed", len(messages))
                return True
            if self._stopping.wait(delay):
                return False  # unacknowledged: the broker redelivers the batch to this session
            delay = min(delay * 2, _RETRY_MAX_S)

    def _ack(self, received: Sequence[_Received]) -> None:
        """PUBACK what was stored, in the order received (as MQTT asks), on the connection it came by."""
        with self._ack_lock:
            if not self._connected.is_set():
                return
            for r in received:
                if r.qos and r.connection == self._connection:
                    self._client.ack(r.mid, r.qos)

    def _note_dropped(self, payload: bytes) -> None:
        try:
            value = int(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            log.warning("%s is not a count: %r", DROPPED_TOPIC, payload[:32])
            return
        previous, self._broker_dropped = self._broker_dropped, value
        if previous is None:
            log.info("the MQTT broker has dropped %d messages since it started", value)
        elif value > previous:
            self.request_heal("broker_dropped")
            log.warning(
                "the MQTT broker dropped %d messages (%d since it started): a client's queue passed the "
                "broker's max_queued_messages, or its in-flight window overflowed",
                value - previous,
                value,
            )
        elif value < previous:
            log.info("the MQTT broker's dropped count went back to %d: it restarted", value)

    def _heal_loop(self) -> None:
        while True:
            self._heal_wanted.wait()
            if self._stopping.is_set():
                return
            wait = self._heal_limit.wait_s(self._monotonic())
            # Requests that come meanwhile join this re-read; a stop ends the wait.
            if wait > 0 and self._stopping.wait(wait):
                return
            with self._drained:
                self._drained.wait_for(lambda: self._pending <= 0 or self._stopping.is_set())
            if self._stopping.is_set():
                return
            self._heal_wanted.clear()
            with self._heal_cond:
                reasons, self._heal_reasons = self._heal_reasons, set()
            # Not subscribed now: a (re)connect is under way, and its SUBSCRIBE reads them all anyway.
            self._reread_statuses(sorted(reasons))

    def _reread_statuses(self, reasons: Sequence[str]) -> bool:
        """Subscribe to the status filter again so the broker resends every retained status."""
        if not self._subscribed.is_set():
            return False
        status = self.topics.filter(Channel.STATUS)
        if self._v5:
            rc, _mid = self._client.subscribe(status, options=SubscribeOptions(qos=1))
        else:
            rc, _mid = self._client.subscribe(status, 1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning(
                "re-reading the retained statuses failed (%s); the next request or connect reads them", rc
            )
            return False
        self._heal_limit.ran(self._monotonic())
        log.warning("re-reading every retained device status (%s)", ", ".join(reasons) or "requested")
        if self._heal_metrics is not None:
            self._heal_metrics.heals.inc()
        with self._heal_cond:
            self._heals += 1
            self._heal_cond.notify_all()
        return True

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
