"""Telemetry and sketch ingest at fleet scale: windows persisted per second, beside a bare subscriber.

    python bench/ingest.py [--devices 1000] [--windows 10] [--database-url URL]
                           [--mqtt-host 127.0.0.1 --mqtt-port 1883] [--publishers 2] [--credit 900]
                           [--rounds 3] [--protocol 5]

N simulated devices publish, QoS 1, a telemetry batch and a sketch batch per period (``--windows``
periods each) to the broker. A window is one telemetry window or one sketch window (one message,
one row). The devices are light publishers: a few paho clients (``--publishers``, a process each)
publishing on the N device topics, every PUBACK counted. A sketch window holds what an image
model's device sends: five KLL feature sketches of 60 values, a confidence sketch, class counts.

Two phases in the same run, the same number of messages each (new window numbers), each
subscriber in a process of its own so that neither shares the other's interpreter, alternated
for ``--rounds`` rounds (the rates compared are the medians; the hub starts anew each round):

(a) bare: a plain paho subscriber (MQTT 5, QoS 1, acknowledging on receipt, the hub's Receive
    Maximum) counts what it gets.
(b) hub: the hub's ingest (``HubMqtt`` and ``Ingestor``, as ``cloud.hub.Hub`` composes them:
    shared subscription, batches of a transaction each, PUBACK once stored) into SQLite (a
    temporary file) or --database-url (PostgreSQL: in a fresh schema, dropped afterwards).
    The devices' retained statuses are published first, so the hub knows the fleet before
    the clock starts, as a running hub would.

The publishers stay at most ``--credit`` messages ahead of what the subscriber has taken
(received in (a), committed in (b)): a stock Mosquitto queues 1,000 messages per subscriber and
drops the rest, so without it the figure would be the broker's queue limit rather than the
subscriber's rate. Windows per second run from the publishers' start to the last window
received (a) or committed (b). Lost: windows the broker acknowledged to a device that are not in
the database at the end. Targets: hub >= 50% of the bare rate; 0 lost. The last line of output
is one JSON object (see ../shared/DESIGN.md, "Benchmarks"); the exit status is 1 when a target
is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

import numpy as np  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from edgefleet_proto.topics import Channel, FleetTopics  # noqa: E402
from edgefleet_proto.v1 import device_pb2, sketch_pb2, telemetry_pb2  # noqa: E402

TARGET_RATIO = 0.5
TARGET_LOST = 0
FEATURES = ("mean", "std", "lit_fraction", "center_row", "center_col")
WINDOW_MS = 10_000
# A subscriber that got nothing for this long after the publishers finished has got all it will.
IDLE_S = 30.0

if TYPE_CHECKING:
    from cloud.services.ingest import InboundMessage


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


# --- what a device sends ----------------------------------------------------------------------


def _template(rng: np.random.Generator) -> sketch_pb2.SketchWindow:
    """One window's sketches; every message copies it with its own device and window number."""

    def kll(values: np.ndarray) -> bytes:
        sketch = kll_floats_sketch(200)
        sketch.update(np.ascontiguousarray(values, dtype=np.float32))
        return bytes(sketch.serialize())

    window = sketch_pb2.SketchWindow(
        model_name="digits",
        model_version="1",
        samples=60,
        reduction="image_summary",
        class_counts=np.bincount(rng.integers(0, 10, 60), minlength=10).tolist(),
        confidence_kll=kll(rng.beta(5, 2, 60)),
    )
    for name in FEATURES:
        values = rng.random(60)
        window.features.add(name=name, kll_floats=kll(values), count=60, min=values.min(), max=values.max())
    return window


def _window_payloads(
    device_id: str, seq: int, start_ms: int, template: sketch_pb2.SketchWindow
) -> tuple[bytes, bytes]:
    end_ms = start_ms + WINDOW_MS
    telemetry = telemetry_pb2.TelemetryBatch(device_id=device_id)
    telemetry.windows.add(
        seq=seq,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        model_name="digits",
        model_version="1",
        requests=60,
        errors=0,
        latency=telemetry_pb2.LatencySummary(p50_ms=1.2, p95_ms=2.5, p99_ms=4.0, mean_ms=1.4, max_ms=6.0),
        resources=telemetry_pb2.ResourceUsage(cpu_percent=3.5, rss_bytes=80 << 20, peak_rss_bytes=90 << 20),
    )
    sketch = sketch_pb2.SketchBatch(device_id=device_id)
    window = sketch.windows.add()
    window.CopyFrom(template)
    window.seq, window.window_start_ms, window.window_end_ms = seq, start_ms, end_ms
    return telemetry.SerializeToString(), sketch.SerializeToString()


def _client(host: str, port: int, client_id: str, protocol: str = "5") -> paho.Client:
    v5 = protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    )
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)  # every message handed to paho is sent, however many
    client.connect(host, port, keepalive=60)
    client.loop_start()
    return client


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    fleet: str
    receive_maximum: int = 65_535


@dataclass
class Flow:
    """Credit between the publishers and the subscriber of a phase, in shared memory.

    The publishers stay at most ``credit`` messages ahead of what the subscriber has taken
    (received, or stored), so that the broker never holds more for it than its queue allows:
    Mosquitto drops what passes ``max_queued_messages`` (1,000 unless configured, as on a
    stock install), for the bare subscriber as for the hub. The rate measured is then the
    subscriber's own, not the broker's queue limit.
    """

    published: Any  # multiprocessing Value("q"): messages handed to paho by every publisher
    consumed: Any  # multiprocessing RawValue("q"): written by the subscriber alone
    credit: int
    go: Any  # multiprocessing Event: the publishers start together

    def wait_for_credit(self, messages: int) -> None:
        while self.published.value - self.consumed.value + messages > self.credit:
            time.sleep(0.0005)  # a shared counter has nothing to wait on; the subscriber moves it
        with self.published.get_lock():
            self.published.value += messages


def publisher(broker: Broker, devices: list[str], seqs: range, flow: Flow, out: mp.Queue[Any]) -> None:
    """Say "ready", wait for ``go``, publish windows ``seqs`` of ``devices``; put the PUBACKs counted."""
    topics = FleetTopics(broker.fleet)
    template = _template(np.random.default_rng(1))
    client = _client(broker.host, broker.port, f"{broker.fleet}-pub-{uuid.uuid4().hex[:8]}")
    base_ms = int(time.time() * 1000) - 3_600_000
    infos: list[tuple[paho.MQTTMessageInfo, paho.MQTTMessageInfo]] = []
    out.put("ready")
    flow.go.wait()
    for seq in seqs:
        for device_id in devices:
            telemetry, sketch = _window_payloads(device_id, seq, base_ms + seq * WINDOW_MS, template)
            device = topics.device(device_id)
            flow.wait_for_credit(2)
            infos.append(
                (
                    client.publish(device.telemetry, telemetry, qos=1),
                    client.publish(device.sketch, sketch, qos=1),
                )
            )
    acknowledged = 0
    for t, s in infos:
        t.wait_for_publish(120)
        s.wait_for_publish(120)
        acknowledged += int(t.is_published()) + int(s.is_published())
    client.disconnect()
    client.loop_stop()
    out.put(acknowledged)


def publish_statuses(host: str, port: int, fleet: str, devices: list[str], *, clear: bool = False) -> None:
    """Every device's retained status (or, with ``clear``, the empty payload that removes it)."""
    topics = FleetTopics(fleet)
    client = _client(host, port, f"{fleet}-status-{uuid.uuid4().hex[:8]}")
    infos = []
    for device_id in devices:
        status = device_pb2.DeviceStatus(
            device_id=device_id,
            state=device_pb2.DEVICE_STATE_ONLINE,
            agent_version="bench",
            labels={"site": f"s{int(device_id[-4:]) % 10}"},
            sent_at_ms=int(time.time() * 1000),
        )
        payload = b"" if clear else status.SerializeToString()
        infos.append(client.publish(topics.device(device_id).status, payload, qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


# --- the two subscribers ----------------------------------------------------------------------


def _wait_done(done: threading.Event, finished: Event, last: Callable[[], float], idle_s: float) -> None:
    """Until everything came, or the publishers finished and nothing came for ``idle_s`` since."""
    finished_at: float | None = None
    while not done.wait(0.5):
        if finished.is_set():
            finished_at = finished_at or time.time()
            if time.time() - max(last(), finished_at) > idle_s:
                return


@dataclass
class Signals:
    """Between the bench and a subscriber process."""

    ready: Event  # set by the subscriber: connected, subscribed, taking messages
    finished: Event  # set by the bench: the publishers are done
    out: mp.Queue[Any]  # the subscriber's figures


def bare_subscriber(broker: Broker, expected: int, flow: Flow, signals: Signals) -> None:
    """A plain paho subscriber: counts the messages and notes when the last one came."""
    topics = FleetTopics(broker.fleet)
    state = {"received": 0, "last": 0.0}
    done = threading.Event()

    def on_message(_c: paho.Client, _u: Any, _msg: paho.MQTTMessage) -> None:
        state["received"] += 1
        state["last"] = time.time()
        flow.consumed.value = state["received"]
        if state["received"] >= expected:
            done.set()

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{broker.fleet}-bare", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_message = on_message
    client.on_subscribe = lambda *_a: signals.ready.set()
    # The hub's in-flight window (cloud.transport.mqtt.receive_maximum): the same room at the broker.
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = broker.receive_maximum
    client.connect(broker.host, broker.port, keepalive=60, properties=properties)
    client.loop_start()
    client.subscribe([(topics.filter(Channel.TELEMETRY), 1), (topics.filter(Channel.SKETCH), 1)])
    cpu0 = time.process_time()
    _wait_done(done, signals.finished, lambda: state["last"], IDLE_S)
    cpu = time.process_time() - cpu0
    client.disconnect()
    client.loop_stop()
    signals.out.put({"received": state["received"], "last": state["last"], "cpu_s": cpu})


def hub_ingest(job: dict[str, Any], flow: Flow, signals: Signals) -> None:
    """The hub's ingest path as cloud.hub.Hub composes it (HubMqtt into Ingestor), into the database.

    ``job``: ``settings`` (of the hub), ``expected`` (windows), ``devices`` (statuses to wait for).
    """
    from cloud.db import create_db_engine, session_factory
    from cloud.services.ingest import Ingestor
    from cloud.settings import Settings
    from cloud.transport.mqtt import HubMqtt

    settings, expected, devices = job["settings"], job["expected"], job["devices"]
    s = Settings(**settings)
    engine = create_db_engine(s.resolved_database_url())
    ingestor = Ingestor(session_factory(engine), FleetTopics(s.fleet))
    state = {"last": 0.0}
    known, done = threading.Event(), threading.Event()

    def on_batch(messages: Sequence[InboundMessage]) -> None:
        ingestor.ingest(messages)
        snap = ingestor.stats.snapshot()
        stored = snap["telemetry_windows"] + snap["sketch_windows"]
        flow.consumed.value = stored
        if stored:
            state["last"] = time.time()
        if snap["statuses"] >= devices:
            known.set()
        if stored >= expected:
            done.set()

    hub = HubMqtt(s, on_batch=on_batch, desired_source=list)
    hub.start()
    try:
        if not hub.wait_ready(30):
            raise BenchError(f"the hub did not connect to {s.mqtt_host}:{s.mqtt_port} within 30 s")
        # The retained statuses, received on subscribing: the hub knows the fleet before the clock starts.
        if not known.wait(120):
            raise BenchError(f"the hub learned {ingestor.stats.snapshot()['statuses']} of {devices} devices")
        dropped_before = hub.broker_dropped
        cpu0 = time.process_time()
        signals.ready.set()
        _wait_done(done, signals.finished, lambda: state["last"], IDLE_S)
        cpu = time.process_time() - cpu0
        dropped_after = hub.broker_dropped
    finally:
        hub.stop()
        engine.dispose()
        _end_session(s.mqtt_host, s.mqtt_port, hub.client_id)
    signals.out.put(
        {
            "last": state["last"],
            "cpu_s": cpu,
            "stats": ingestor.stats.snapshot(),
            "broker_dropped": [dropped_before, dropped_after],
        }
    )


def _end_session(host: str, port: int, client_id: str) -> None:
    """Remove the hub's persistent session from the broker: the bench's fleet is gone after the run."""
    connected = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_connect = lambda *_a: connected.set()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0
    client.connect(host, port, clean_start=True, properties=properties)
    client.loop_start()
    connected.wait(10)
    client.disconnect()
    client.loop_stop()


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    fleet: str
    devices: list[str]
    ctx: Any = field(default_factory=lambda: mp.get_context("spawn"))

    def publish(self, seqs: range, flow: Flow) -> tuple[float, int]:
        """Every device's windows ``seqs`` from the publishers; returns (start, messages acknowledged)."""
        args, ctx = self.args, self.ctx
        out = ctx.Queue()
        shares = [self.devices[i :: args.publishers] for i in range(args.publishers)]
        procs = [
            ctx.Process(
                target=publisher,
                args=(Broker(args.mqtt_host, args.mqtt_port, self.fleet), share, seqs, flow, out),
                name=f"publisher-{i}",
            )
            for i, share in enumerate(shares)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:  # each says when it is connected and has its payloads ready
            if out.get(timeout=args.timeout) != "ready":
                raise BenchError("a publisher failed to start")
        start = time.time()
        flow.go.set()
        acknowledged = sum(int(out.get(timeout=args.timeout)) for _ in procs)
        for proc in procs:
            proc.join(30)
        return start, acknowledged

    def phase(self, target: Callable[..., None], extra: tuple[Any, ...], seqs: range) -> dict[str, Any]:
        """Start a subscriber process, publish ``seqs``, and return what it measured."""
        ctx = self.ctx
        ready, finished, out = ctx.Event(), ctx.Event(), ctx.Queue()
        flow = Flow(ctx.Value("q", 0), ctx.RawValue("q", 0), self.args.credit, ctx.Event())
        signals = Signals(ready, finished, out)
        proc = ctx.Process(target=target, args=(*extra, flow, signals), name=target.__name__)
        proc.start()
        if not ready.wait(180):
            proc.kill()
            raise BenchError(f"{target.__name__} did not get ready within 180 s")
        start, acknowledged = self.publish(seqs, flow)
        finished.set()
        result: dict[str, Any] = out.get(timeout=self.args.timeout)
        proc.join(60)
        result.update(start=start, acknowledged=acknowledged)
        return result


@contextlib.contextmanager
def _database(url: str | None, work: Path) -> Iterator[str]:
    """SQLite in ``work``, or a fresh schema of the PostgreSQL database at ``url``, dropped afterwards."""
    from sqlalchemy.engine import make_url

    from cloud.db import normalize_url

    if url is None:
        yield f"sqlite:///{work / 'hub.db'}"
        return
    import psycopg

    url = normalize_url(url)
    if not url.startswith("postgresql"):
        raise BenchError(f"--database-url: expected postgresql+psycopg://..., got {url.split(':', 1)[0]}")
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _stored(url: str, seqs: range) -> tuple[int, int]:
    """Telemetry and sketch rows of windows ``seqs`` in the database; the unique keys make each once."""
    from sqlalchemy import func
    from sqlmodel import Session, col, select

    from cloud.db import create_db_engine
    from cloud.models import TelemetryWindow
    from cloud.telemetry.tables import SketchRecord

    engine = create_db_engine(url)
    try:
        with Session(engine) as session:
            counts = []
            for table in (TelemetryWindow, SketchRecord):
                in_phase = col(table.seq).between(seqs.start, seqs.stop - 1)
                counts.append(
                    int(session.exec(select(func.count()).select_from(table).where(in_phase)).one())
                )
        return counts[0], counts[1]
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cloud.db import create_all, create_db_engine

    fleet = f"bench-{secrets.token_hex(4)}"
    devices = [f"dev{i:05d}" for i in range(args.devices)]
    n, w = args.devices, args.windows
    expected = 2 * n * w  # a telemetry and a sketch window per device and period
    bares: list[dict[str, Any]] = []
    hubs: list[dict[str, Any]] = []
    with _workdir() as work, _database(args.database_url, work) as url:
        engine = create_db_engine(url)
        create_all(engine)
        engine.dispose()
        bench = Run(args, fleet, devices)
        publish_statuses(args.mqtt_host, args.mqtt_port, fleet, devices)
        broker = Broker(args.mqtt_host, args.mqtt_port, fleet, min(65_535, args.ingest_queue_size))
        settings = {
            "data_dir": work,
            "database_url": url,
            "fleet": fleet,
            "mqtt_host": args.mqtt_host,
            "mqtt_port": args.mqtt_port,
            "mqtt_protocol": args.protocol,
            "ingest_queue_size": args.ingest_queue_size,
        }
        job = {"settings": settings, "expected": expected, "devices": n}
        try:
            # Rounds alternate the two, so that what else the machine does weighs on both alike.
            for r in range(args.rounds):
                first = 2 * r * w + 1
                bares.append(
                    _bare_figures(bench.phase(bare_subscriber, (broker, expected), range(first, first + w)))
                )
                hub_seqs = range(first + w, first + 2 * w)
                hubs.append(_hub_figures(bench.phase(hub_ingest, (job,), hub_seqs), _stored(url, hub_seqs)))
        finally:
            publish_statuses(args.mqtt_host, args.mqtt_port, fleet, devices, clear=True)
    bare_rate = statistics.median(b["windows_per_s"] for b in bares)
    hub_rate = statistics.median(h["windows_per_s"] for h in hubs)
    return {
        "publishers": f"{args.publishers} paho clients (one process each) publishing on {n:,} device topics",
        "devices": n,
        "windows_per_device": w,
        "window": "one telemetry or one sketch window (one message, QoS 1); a device sends both each period",
        "sketch_bytes": len(_window_payloads("dev00000", 1, 0, _template(np.random.default_rng(1)))[1]),
        "database": make_url_safe(args.database_url) if args.database_url else "sqlite (temporary file)",
        "protocol": args.protocol,
        "hub_ingest_queue_size": args.ingest_queue_size,
        "credit": args.credit,
        "rounds": args.rounds,
        "bare": bares,
        "hub": hubs,
        "bare_windows_per_s_median": round(bare_rate, 1),
        "hub_windows_per_s_median": round(hub_rate, 1),
        "hub_vs_bare": round(hub_rate / bare_rate, 3) if bare_rate else None,
        "lost": sum(h["lost"] for h in hubs),
    }


def _bare_figures(bare: dict[str, Any]) -> dict[str, Any]:
    seconds = max(bare["last"] - bare["start"], 1e-9)
    return {
        "acknowledged_to_devices": bare["acknowledged"],
        "received": bare["received"],
        "seconds": round(seconds, 3),
        "windows_per_s": round(bare["received"] / seconds, 1),
        "cpu_us_per_window": round(bare["cpu_s"] * 1e6 / max(bare["received"], 1), 1),
    }


def _hub_figures(hub: dict[str, Any], rows: tuple[int, int]) -> dict[str, Any]:
    seconds = max(hub["last"] - hub["start"], 1e-9)
    stored = sum(rows)
    return {
        "acknowledged_to_devices": hub["acknowledged"],
        "telemetry_windows_stored": rows[0],
        "sketch_windows_stored": rows[1],
        "lost": hub["acknowledged"] - stored,
        "seconds": round(seconds, 3),
        "windows_per_s": round(stored / seconds, 1),
        "cpu_us_per_window": round(hub["cpu_s"] * 1e6 / max(stored, 1), 1),
        "duplicates": hub["stats"]["duplicates"],
        "malformed": hub["stats"]["malformed"],
        # Mosquitto's count since it started, before and after (None: not published lately).
        "broker_dropped_before_after": hub["broker_dropped"],
    }


def make_url_safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="efingest-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ratio, lost = results["hub_vs_bare"], results["lost"]
    return {
        "hub_vs_bare_windows_per_s": {
            "value": ratio,
            "goal": TARGET_RATIO,
            "unit": "ratio (at least)",
            "met": None if ratio is None else ratio >= TARGET_RATIO,
        },
        "lost_windows": {"value": lost, "goal": TARGET_LOST, "unit": "windows", "met": lost <= TARGET_LOST},
    }


def _versions() -> dict[str, str]:
    out = {}
    for name in ("paho-mqtt", "sqlalchemy", "psycopg", "protobuf", "datasketches"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out["mosquitto"] = subprocess.run(
            ["mosquitto", "-h"], check=False, capture_output=True, text=True, timeout=5
        ).stdout.splitlines()[0]
    return out


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    parser.add_argument("--windows", type=int, default=10, help="periods each device reports (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="bare and hub phases, alternated; medians (default 3)"
    )
    parser.add_argument("--publishers", type=int, default=2, help="publishing paho clients (default 2)")
    parser.add_argument("--database-url", help="the hub's database (default: SQLite in a temporary folder)")
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--protocol", choices=("5", "3.1.1"), default="5", help="the hub's MQTT version")
    parser.add_argument(
        "--ingest-queue-size",
        type=int,
        default=10_000,
        help="the hub's EDGEFLEET_INGEST_QUEUE_SIZE, hence its MQTT 5 Receive Maximum (default 10000)",
    )
    parser.add_argument(
        "--credit",
        type=int,
        default=900,
        help="messages the publishers may be ahead of the subscriber (default 900: under a stock "
        "Mosquitto's max_queued_messages of 1000; raise it on a broker configured as edgefleet.conf)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per step, s")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.windows < 1 or args.rounds < 1 or not 1 <= args.publishers <= args.devices:
        parser.error(
            f"expected --devices, --windows and --rounds >= 1 and 1 <= --publishers <= --devices, got "
            f"{args.devices}, {args.windows}, {args.rounds} and {args.publishers}"
        )
    results = run(args)
    goals = targets(results)
    print(json.dumps({"machine": _machine(), "versions": _versions(), "results": results, "targets": goals}))
    return 1 if any(t["met"] is False for t in goals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
