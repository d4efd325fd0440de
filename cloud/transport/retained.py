"""Clearing retained messages a fleet left on a broker (demo and test clean-up)."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet_proto.topics import Channel, FleetTopics


def clear_fleet_retained(
    host: str, port: int, fleet: str, protocol: str = "5", *, timeout: float = 5.0
) -> int:
    """Publish an empty retained payload on every retained topic of ``fleet``.

    Returns how many topics were cleared (0 when the broker cannot be reached).
    """
    topics = FleetTopics(fleet)
    filters = [topics.filter(Channel.STATUS), topics.filter(Channel.DESIRED)]
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"edgefleet-clean-{uuid.uuid4().hex[:8]}", protocol=version
    )
    found: set[str] = set()
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, msg: found.add(msg.topic) if msg.retain and msg.payload else None
    client.on_subscribe = lambda *_a: subscribed.set()
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return 0
    client.loop_start()
    try:
        client.subscribe([(f, 0) for f in filters])
        subscribed.wait(timeout)
        # Retained messages are sent right after SUBACK; a round trip through the broker marks their end.
        marker = f"{topics.prefix}/{fleet}/clean/{uuid.uuid4().hex}"
        done = threading.Event()
        client.message_callback_add(marker, lambda *_a: done.set())
        client.subscribe(marker, 0)
        client.publish(marker, b"x", qos=0)
        done.wait(timeout)
        infos = [client.publish(t, b"", qos=1, retain=True) for t in sorted(found)]
        for info in infos:
            info.wait_for_publish(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(found)
