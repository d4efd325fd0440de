"""The baseline of ``bench/scale.py``: how many messages a second a bare paho subscriber takes from
the same broker, QoS 1, from a publisher in another process, payloads the size of a telemetry batch."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def _publish(host: str, port: int, topic: str, count: int, size: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-pub-{port}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    payload = b"x" * size
    infos = [client.publish(topic, payload, qos=1) for _ in range(count)]
    for info in infos:
        info.wait_for_publish(120)
    client.loop_stop()
    client.disconnect()


def bare_rate(
    host: str, port: int, *, messages: int = 20_000, size: int = 120, timeout: float = 120
) -> dict[str, Any]:
    """Messages/s a bare paho subscriber (QoS 1, MQTT 3.1.1, loop thread) receives from one publisher."""
    topic = f"bench/bare/{port}"
    got = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(_c: Any, _u: Any, _m: mqtt.MQTTMessage) -> None:
        nonlocal got, first, last
        now = time.monotonic()
        if got == 0:
            first = now
        got += 1
        last = now
        if got >= messages:
            done.set()

    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-sub-{port}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    sub.connect(host, port)
    sub.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("the bare subscriber was not subscribed within 10 s")
        pub = multiprocessing.get_context("fork").Process(
            target=_publish, args=(host, port, topic, messages, size), daemon=True
        )
        pub.start()
        done.wait(timeout)
        pub.join(10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    seconds = max(last - first, 1e-9)
    return {
        "messages": messages,
        "received": got,
        "payload_bytes": size,
        "seconds": round(seconds, 2),
        "messages_per_s": round((got - 1) / seconds, 1) if got > 1 else 0.0,
    }
