"""A small paho client for tests: plays a device, reads retained messages, cleans up after itself."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll external state (a database row) until it is truthy; fail with the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class Probe:
    """One MQTT connection; records every topic it published retained so ``close()`` can clear them."""

    def __init__(self, host: str, port: int, *, protocol: str = "5", client_id: str | None = None) -> None:
        self.host, self.port = host, port
        version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
            protocol=version,
        )
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.retained_topics: set[str] = set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise AssertionError(f"probe could not connect to {host}:{port}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()
        if retain and payload:
            self.retained_topics.add(topic)

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        if not self._subscribed.wait(10):
            raise AssertionError(f"no SUBACK for {topic}")

    def next_message(self, timeout: float = 10.0) -> paho.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def close(self) -> None:
        for topic in sorted(self.retained_topics):
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        self.client.disconnect()
        self.client.loop_stop()


def read_retained(host: str, port: int, topic: str, timeout: float = 10.0) -> bytes:
    """What a device connecting now would read on ``topic``."""
    probe = Probe(host, port)
    try:
        probe.subscribe(topic)
        msg = probe.next_message(timeout)
        assert msg.retain, f"expected a retained message on {topic}"
        return bytes(msg.payload)
    finally:
        probe.close()
