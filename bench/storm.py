"""A reconnect storm: every device's birth (retained status) at once, and how soon the hub knows them all.

    python bench/storm.py [--devices 3000] [--database-url URL] [--broker shipped|stock]

A private Mosquitto on a free port of 127.0.0.1, configured with the queue limits of the config
edgefleet ships (deploy/mosquitto/edgefleet.conf: max_queued_messages, max_inflight_messages),
or with Mosquitto's own defaults (``--broker stock``: 1,000 queued messages per client), and
``sys_interval 1`` so that its dropped count is read within a second. One paho client publishes
N retained statuses, QoS 1, as fast as the broker takes them: what N devices connecting at once
send (a publisher per device would measure the simulator's CPU, not the hub's).

Phases, each on a fleet of its own:

(a) bare: a plain paho subscriber (MQTT 5, QoS 1, the hub's Receive Maximum) subscribed to the
    status filter while the storm is published; seconds until it received all N.
(b) live: the hub's ingest (``HubMqtt`` into ``Ingestor``, as ``cloud.hub.Hub`` composes them)
    subscribed while the storm is published; seconds until all N devices are stored online.
(c) restart: a hub with an empty database connects after the storm, and learns the N devices
    from the retained statuses the broker sends on subscribing; seconds until all N are stored.

Also reported: the broker's dropped count over each hub phase, and the hub's status re-reads.
Targets (issue 12): all N devices known within 60 s in (b) and (c), and 0 messages dropped by
the broker. The last line of output is one JSON object (../shared/DESIGN.md, "Benchmarks");
the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from edgefleet_proto.topics import Channel, FleetTopics  # noqa: E402
from edgefleet_proto.v1 import common_pb2, device_pb2  # noqa: E402

TARGET_KNOWN_S = 60.0
TARGET_DROPPED = 0
SHIPPED_CONF = ROOT / "deploy" / "mosquitto" / "edgefleet.conf"
DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
HOST = "127.0.0.1"


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


# --- the broker -----------------------------------------------------------------------------------


def shipped_limits() -> dict[str, str]:
    """The queue limits of the shipped broker config, as its lines spell them."""
    wanted = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages")
    limits: dict[str, str] = {}
    for line in SHIPPED_CONF.read_text().splitlines():
        match = re.match(r"^(\w+)\s+(\S+)\s*$", line)
        if match and match.group(1) in wanted:
            limits[match.group(1)] = match.group(2)
    missing = [w for w in wanted if w not in limits]
    if missing:
        raise BenchError(f"{SHIPPED_CONF} does not set {', '.join(missing)}: expected every one of {wanted}")
    return limits


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _start_mosquitto(
    binary: str, folder: Path, limits: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    lines = [f"listener {port} {HOST}", "allow_anonymous true", "persistence false", "sys_interval 1"]
    lines += [f"{k} {v}" for k, v in limits.items()]
    (folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    with (folder / "log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-c", str(folder / "mosquitto.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 15
    while True:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(15)
            raise BenchError(f"mosquitto did not start: {(folder / 'log').read_text()[-2000:]}")
        time.sleep(0.05)  # a port has nothing to wait on


@contextlib.contextmanager
def mosquitto(limits: dict[str, str]) -> Iterator[int]:
    """A private Mosquitto with ``limits``; yields its port, and stops it and removes its folder."""
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        raise BenchError("mosquitto not found: apt-get install mosquitto")
    folder = Path(tempfile.mkdtemp(prefix="ef-storm-"))
    if os.geteuid() == 0:  # mosquitto switches to its own account as root; keep it in this folder's owner
        shutil.chown(folder, "mosquitto", "mosquitto")
    try:
        # A port found free can be taken before the broker binds it: a few tries.
        for attempt in range(3):
            try:
                proc, port = _start_mosquitto(binary, folder, limits)
                break
            except BenchError:
                if attempt == 2:
                    raise
        try:
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class DroppedCounter:
    """The broker's dropped count, as $SYS publishes it (every second here)."""

    def __init__(self, port: int) -> None:
        self.value = 0
        self._cond = threading.Condition()
        self._updates = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"storm-sys-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.connect(HOST, port, keepalive=60)
        self.client.loop_start()
        self.client.subscribe(DROPPED_TOPIC, 0)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.value = int(msg.payload.decode())
            self._updates += 1
            self._cond.notify_all()

    def fresh(self, timeout: float = 5.0) -> int:
        """The count after the broker's next publication of it (it publishes only on a change, so
        a quiet broker may say nothing: then the last value stands)."""
        with self._cond:
            seen = self._updates
            self._cond.wait_for(lambda: self._updates > seen, timeout)
            return self.value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the storm ------------------------------------------------------------------------------------


def _device(fleet: str, i: int) -> str:
    """Device ids of their fleet's own: a device row is keyed by its id alone, and the phases share a
    database when it is PostgreSQL."""
    return f"{fleet.rpartition('-')[2]}-{i:05d}"


def _status(device_id: str, fleet: str, i: int) -> bytes:
    status = device_pb2.DeviceStatus(
        device_id=device_id,
        fleet=fleet,
        state=device_pb2.DEVICE_STATE_ONLINE,
        agent_version="storm",
        labels={"site": f"s{i % 10}", "board": "pi4"},
        sent_at_ms=int(time.time() * 1000),
        health="serving",
    )
    status.slots.add(name="active", model=common_pb2.ModelRef(name="digits", version="1", sha256="a" * 64))
    return status.SerializeToString()


def storm(port: int, fleet: str, devices: int) -> float:
    """Publish every device's retained status at once; returns the seconds until the broker took all."""
    topics = FleetTopics(fleet)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"storm-pub-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(HOST, port, keepalive=60)
    client.loop_start()
    payloads = [
        (topics.device(_device(fleet, i)).status, _status(_device(fleet, i), fleet, i))
        for i in range(devices)
    ]
    started = time.monotonic()
    infos = [client.publish(topic, payload, qos=1, retain=True) for topic, payload in payloads]
    for info in infos:
        info.wait_for_publish(120)
    took = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return took


def clear(port: int, fleet: str, devices: int) -> None:
    topics = FleetTopics(fleet)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"storm-clear-{uuid.uuid4().hex[:6]}")
    client.connect(HOST, port, keepalive=60)
    client.loop_start()
    infos = [
        client.publish(topics.device(_device(fleet, i)).status, b"", qos=1, retain=True)
        for i in range(devices)
    ]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


# --- the subscribers ------------------------------------------------------------------------------


def bare(port: int, devices: int, receive_maximum: int) -> dict[str, Any]:
    fleet = f"storm-bare-{uuid.uuid4().hex[:6]}"
    got: set[str] = set()
    done, subscribed = threading.Event(), threading.Event()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        got.add(msg.topic)
        if len(got) >= devices:
            done.set()

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{fleet}-sub", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = receive_maximum
    client.connect(HOST, port, keepalive=60, properties=properties)
    client.loop_start()
    client.subscribe(FleetTopics(fleet).filter(Channel.STATUS), 1)
    if not subscribed.wait(10):
        raise BenchError("the bare subscriber got no SUBACK")
    started = time.monotonic()
    published_s = storm(port, fleet, devices)
    complete = done.wait(TARGET_KNOWN_S * 3)
    took = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    clear(port, fleet, devices)
    return {"received": len(got), "seconds": took if complete else None, "publish_s": published_s}


def hub_phase(port: int, devices: int, database_url: str | None, *, restart: bool) -> dict[str, Any]:
    """The hub's ingest path into a fresh database; ``restart``: the storm came before the hub."""
    from cloud.db import create_all, create_db_engine, session_factory
    from cloud.services.ingest import InboundMessage, Ingestor
    from cloud.settings import Settings
    from cloud.transport.mqtt import HubMqtt

    fleet = f"storm-{'restart' if restart else 'live'}-{uuid.uuid4().hex[:6]}"
    folder = Path(tempfile.mkdtemp(prefix="ef-storm-hub-"))
    settings = Settings(
        data_dir=folder, fleet=fleet, database_url=database_url, mqtt_host=HOST, mqtt_port=port
    )
    engine = create_db_engine(settings.resolved_database_url())
    create_all(engine)
    ingestor = Ingestor(session_factory(engine), FleetTopics(fleet))
    known = threading.Event()
    seen: set[str] = set()  # devices whose status was stored (a re-read applies some twice)
    counter = DroppedCounter(port)
    dropped_before = counter.fresh()

    def on_batch(messages: Sequence[InboundMessage]) -> None:
        ingestor.ingest(messages)
        seen.update(m.topic for m in messages if m.payload)
        if len(seen) >= devices:
            known.set()

    publish_s = storm(port, fleet, devices) if restart else 0.0
    hub = HubMqtt(settings, on_batch=on_batch, desired_source=list, client_id=f"{fleet}-hub")
    started = time.monotonic()
    hub.start()
    try:
        if not hub.wait_ready(30):
            raise BenchError(f"the hub did not connect to {HOST}:{port} within 30 s")
        if not restart:
            started = time.monotonic()
            publish_s = storm(port, fleet, devices)
        complete = known.wait(TARGET_KNOWN_S * 3)
        took = time.monotonic() - started
        dropped = counter.fresh() - dropped_before
    finally:
        hub.stop()
        counter.close()
        _end_session(port, f"{fleet}-hub")
    with engine.connect() as conn:
        from sqlalchemy import text

        online = conn.execute(
            text("SELECT count(*) FROM device WHERE fleet = :f AND state = 'online'"), {"f": fleet}
        ).scalar_one()
    engine.dispose()
    clear(port, fleet, devices)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "known_online": int(online),
        "seconds": took if complete else None,
        "publish_s": publish_s,
        "broker_dropped": dropped,
        "status_rereads": getattr(hub, "heals", 0),
        "statuses_applied": ingestor.stats.snapshot()["statuses"],
    }


def _end_session(port: int, client_id: str) -> None:
    """Discard the stopped hub's session: the broker would queue the clean-up for it (and drop past its
    queue limit, counted against the next phase)."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0
    client.connect(HOST, port, keepalive=60, clean_start=True, properties=properties)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


# --- the report -----------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("paho-mqtt", "sqlalchemy", "protobuf", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        line = subprocess.run(
            [binary, "-h"], check=False, capture_output=True, text=True, timeout=5
        ).stdout.splitlines()
        out["mosquitto"] = line[0] if line else "unknown"
    return out


def _target(value: float | None, goal: float, unit: str) -> dict[str, Any]:
    """At most ``goal``; None (the phase never completed) is never met."""
    return {"value": value, "goal": goal, "unit": unit, "met": value is not None and value <= goal}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--broker", choices=("shipped", "stock"), default="shipped")
    args = parser.parse_args(argv)
    if args.devices <= 0:
        parser.error(f"--devices must be positive, got {args.devices}")
    from cloud.settings import Settings
    from cloud.transport.mqtt import receive_maximum

    limits = shipped_limits() if args.broker == "shipped" else {}
    with mosquitto(limits) as port:
        baseline = bare(port, args.devices, receive_maximum(Settings()))
        live = hub_phase(port, args.devices, args.database_url, restart=False)
        restart = hub_phase(port, args.devices, args.database_url, restart=True)
    results = {
        "devices": args.devices,
        "broker": {"config": args.broker, **limits},
        "database": "sqlite" if args.database_url is None else args.database_url.split(":", 1)[0],
        "bare": baseline,
        "live": live,
        "restart": restart,
        # How much longer the hub took than the bare subscriber to take the same storm.
        "live_vs_bare": live["seconds"] / baseline["seconds"]
        if live["seconds"] and baseline["seconds"]
        else None,
    }
    targets = {
        "live_all_known_s": _target(live["seconds"], TARGET_KNOWN_S, "s"),
        "restart_all_known_s": _target(restart["seconds"], TARGET_KNOWN_S, "s"),
        "broker_dropped": _target(
            float(live["broker_dropped"] + restart["broker_dropped"]), TARGET_DROPPED, "messages"
        ),
    }
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "versions": _versions(),
        "results": results,
        "targets": targets,
    }
    print(json.dumps(report))
    return 0 if all(t["met"] for t in targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
