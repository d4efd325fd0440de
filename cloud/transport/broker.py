"""Find an MQTT broker for single-machine runs, or start an embedded one.

Production fleets use a real broker (Mosquitto, EMQX, VerneMQ, HiveMQ; see
docs/architecture.md). For the demo and for laptops, edgefleet uses the
Mosquitto on 127.0.0.1:1883 when one answers, and otherwise starts amqtt in a
background thread. amqtt speaks MQTT 3.1.1 only, so the handle reports which
protocol the broker offers and callers configure their clients from it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

log = logging.getLogger(__name__)

Protocol = Literal["5", "3.1.1"]


class BrokerError(RuntimeError):
    """No broker could be found or started."""


@dataclass
class BrokerHandle:
    host: str
    port: int
    protocol: Protocol
    embedded: bool
    _stop: Any = field(default=None, repr=False)

    @property
    def description(self) -> str:
        kind = "embedded amqtt broker" if self.embedded else "MQTT broker"
        return f"{kind} at {self.host}:{self.port} (MQTT {self.protocol})"

    def stop(self) -> None:
        """Stop the embedded broker; a no-op for an external one."""
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()


def probe_mqtt(host: str, port: int, *, timeout: float = 3.0) -> Protocol | None:
    """Return the best protocol a broker at host:port accepts, or None when nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError:
        return None
    for version, proto in ((MQTTProtocolVersion.MQTTv5, "5"), (MQTTProtocolVersion.MQTTv311, "3.1.1")):
        if _connects(host, port, version, timeout):
            return proto  # type: ignore[return-value]
    return None


def _connects(host: str, port: int, version: MQTTProtocolVersion, timeout: float) -> bool:
    done = threading.Event()
    result: dict[str, bool] = {"ok": False}

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object = None) -> None:
        result["ok"] = not reason.is_failure
        done.set()

    def on_disconnect(*_args: object) -> None:
        done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edgefleet-probe-{uuid.uuid4().hex[:8]}",
        protocol=version,
    )
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(host, port, keepalive=10)
        client.loop_start()
        done.wait(timeout)
    except OSError:
        return False
    finally:
        client.disconnect()
        client.loop_stop()
    return result["ok"]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _SnapshotDict(dict[str, Any]):
    """A dict whose iteration walks a copy, so that a loop with ``await`` inside survives changes."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return list(super().items())


def _guard_subscription_iteration(broker: Any) -> None:
    """Work around a race in amqtt 0.12.1 (the version pinned in constraints.txt, the newest there is).

    Its broker walks ``Broker._subscriptions`` (topic filter -> subscribers) with an ``await``
    inside the loop: when a client connects (``_handle_client_session`` re-sends retained
    messages per filter) and when it fans a message out (``_run_broadcast``). Another client
    that subscribes to a new filter, or a session that is cleaned up, changes the dict
    meanwhile, and the connecting client's handler dies with "RuntimeError: dictionary
    changed size during iteration" (a traceback, and a connection the broker no longer
    serves). Twenty simulated devices that connect at once hit it every time. Iterating over
    a snapshot is what those loops mean to do; filters added meanwhile get their retained
    messages through the SUBSCRIBE that added them. Staggering the clients' connects would
    only make the race rarer: reconnects (after a firmware slot switch) and clean-ups still
    overlap.
    """
    current = getattr(broker, "_subscriptions", None)
    if type(current) is dict:
        broker._subscriptions = _SnapshotDict(current)
    else:  # another amqtt layout: leave it alone rather than guess
        log.debug("amqtt broker has no plain _subscriptions dict; iteration guard not installed")


def start_embedded_broker(host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0) -> BrokerHandle:
    """Run amqtt in a daemon thread with its own event loop; bound to loopback only."""
    from amqtt.broker import Broker

    port = port or _free_port(host)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    async def _start() -> None:
        broker = Broker(config, loop=loop)
        _guard_subscription_iteration(broker)
        await broker.start()
        holder["broker"] = broker

    def _run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_start())
        except BaseException as e:  # reported to the caller below
            failure.append(e)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=_run, name="edgefleet-embedded-broker", daemon=True)
    thread.start()
    if not started.wait(timeout):
        raise BrokerError(f"embedded broker did not start within {timeout:.0f} s on {host}:{port}")
    if failure:
        raise BrokerError(f"embedded broker failed to start on {host}:{port}: {failure[0]}") from failure[0]

    def _stop() -> None:
        broker = holder.get("broker")
        if broker is not None:
            fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                fut.result(timeout=10)
            except Exception as e:  # shutdown is best effort at exit
                log.warning("embedded broker shutdown: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    log.info("started embedded amqtt broker on %s:%d (MQTT 3.1.1)", host, port)
    return BrokerHandle(host, port, "3.1.1", embedded=True, _stop=_stop)


def ensure_broker(
    host: str = "127.0.0.1", port: int = 1883, *, allow_embedded: bool = True, timeout: float = 3.0
) -> BrokerHandle:
    """Use the broker at host:port when it answers MQTT; otherwise start an embedded one."""
    proto = probe_mqtt(host, port, timeout=timeout)
    if proto is not None:
        return BrokerHandle(host, port, proto, embedded=False)
    if not allow_embedded:
        raise BrokerError(f"no MQTT broker answers at {host}:{port} and the embedded broker is disabled")
    log.info("no MQTT broker at %s:%d; starting an embedded one", host, port)
    return start_embedded_broker("127.0.0.1")
