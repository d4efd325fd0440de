"""The soak of ``bench/scale.py``: a fleet sends one telemetry window per device per second for
minutes; every window the broker took must be stored once, and the hub's memory must stay flat.

"Sent" is what a bare subscriber on the broker sees (each window's device and seq, decoded from
the QoS 1 batches the broker accepted from the devices); "stored" is the hub's telemetry table.
A window seen and not stored after the hub has drained is lost.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text
from sqlalchemy.engine import Engine

from edgefleet_proto.topics import Channel, FleetTopics
from edgefleet_proto.v1 import telemetry_pb2


class WindowWatch:
    """Every (device, seq) of the fleet's telemetry windows that the broker delivers."""

    def __init__(self, host: str, port: int, fleet: str) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.devices: set[str] = set()
        self.cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-soak-{port}", protocol=mqtt.MQTTv5
        )
        topic = FleetTopics(fleet).filter(Channel.TELEMETRY)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(Exception):
            batch = telemetry_pb2.TelemetryBatch.FromString(bytes(msg.payload))
            with self.cond:
                for w in batch.windows:
                    self.seen.add((batch.device_id, int(w.seq)))
                self.devices.add(batch.device_id)
                self.cond.notify_all()

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")

    def snapshot(self) -> set[tuple[str, int]]:
        with self.cond:
            return set(self.seen)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def stored_pairs(engine: Engine, devices: set[str]) -> set[tuple[str, int]]:
    """(device, seq) of every stored telemetry window of ``devices``."""
    found: set[tuple[str, int]] = set()
    ids = sorted(devices)
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join(f":d{j}" for j in range(len(chunk)))
            rows = conn.execute(
                text(f"SELECT device_id, seq FROM telemetry_window WHERE device_id IN ({marks})"),
                {f"d{j}": d for j, d in enumerate(chunk)},
            )
            found.update((str(d), int(s)) for d, s in rows)
    return found


def drain(engine: Engine, seen: set[tuple[str, int]], timeout: float) -> set[tuple[str, int]]:
    """Wait (polling the database: the hub's commits cannot be waited on from here) until every
    seen window is stored or ``timeout`` passes; returns the windows still missing."""
    devices = {d for d, _ in seen}
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        missing = seen - stored_pairs(engine, devices)
        if not missing or time.monotonic() > deadline:
            return missing
        pause.wait(2.0)


def rss_flat(samples: list[tuple[float, int]], start: float, minutes: float) -> dict[str, Any]:
    """Mean RSS over the second minute and over the last minute of the soak, and their ratio."""

    def mean(lo: float, hi: float) -> float:
        values = [rss for t, rss in samples if lo <= t - start < hi]
        return sum(values) / len(values) if values else float("nan")

    second = mean(60, 120)
    last = mean((minutes - 1) * 60, minutes * 60 + 1)
    return {
        "second_minute_mib": round(second / 2**20, 1),
        "last_minute_mib": round(last / 2**20, 1),
        "last_vs_second": round(last / second, 4) if second else None,
    }
