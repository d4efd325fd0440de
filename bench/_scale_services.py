"""The processes ``bench/scale.py`` starts and reads: a private Mosquitto, the simulated fleet, and
what /proc says about a process.

The broker runs with the queue and message settings of ``deploy/mosquitto/edgefleet.conf`` (read
from that file, so the bench follows what edgefleet ships), on plain TCP and anonymous: the TLS,
ACL, CRL and persistence lines need certificates and a system folder that a bench does not have.
It may take any number of connections (``max_connections -1``) and open as many files as the hard
limit allows.
"""

from __future__ import annotations

import contextlib
import json
import queue
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet_proto.topics import Channel, FleetTopics
from edgefleet_proto.v1 import device_pb2

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONF = ROOT / "deploy" / "mosquitto" / "edgefleet.conf"
# Settings of the shipped file that a plain-TCP, anonymous, memory-only broker can keep.
KEPT = (
    "max_queued_messages",
    "max_queued_bytes",
    "max_inflight_messages",
    "sys_interval",
    "message_size_limit",
    "max_keepalive",
)
MiB = 1024 * 1024


class ServiceError(RuntimeError):
    """A process the bench needs did not start or answer; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def shipped_settings(path: Path = SHIPPED_CONF) -> dict[str, str]:
    """The :data:`KEPT` settings of the shipped broker config, as written there."""
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key in KEPT:
            found[key] = value.strip()
    missing = [k for k in KEPT if k not in found]
    if missing:
        raise ServiceError(f"{path} lacks {missing}: expected every one of {list(KEPT)}")
    return found


def _open_files_to_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_file_limit() -> int:
    """The hard limit on open files: the most connections one broker or fleet process can hold."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


class PrivateMosquitto:
    """Mosquitto on a free port of 127.0.0.1, in ``work``; :meth:`stop` ends it."""

    def __init__(self, work: Path) -> None:
        binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None
        )
        if binary is None:
            raise ServiceError("mosquitto not found: apt-get install mosquitto")
        self.host, self.port = "127.0.0.1", free_port()
        self.settings = shipped_settings()
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "max_connections -1",
            *(f"{k} {v}" for k, v in self.settings.items()),
        ]
        self.conf = work / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = (work / "mosquitto.log").open("w")
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_open_files_to_hard_limit,  # noqa: PLW1509 - only setrlimit, before exec
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"mosquitto did not listen on {self.port}; see {self.log.name}")
            time.sleep(0.05)  # polling a child's port: there is nothing to wait on

    def dropped_lines(self) -> int:
        """How many times the broker logged that it dropped messages for a client."""
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return text.count("Outgoing messages are being dropped")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class BrokerCounters:
    """The broker's own counters from ``$SYS`` (published every sys_interval seconds)."""

    TOPICS = (
        "$SYS/broker/publish/messages/received",
        "$SYS/broker/publish/messages/dropped",
        "$SYS/broker/clients/connected",
    )

    def __init__(self, host: str, port: int) -> None:
        self.values: dict[str, tuple[float, int]] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sys-{port}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 0) for t in self.TOPICS])
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(ValueError), self.cond:
            self.values[msg.topic.rsplit("/", 1)[-1] if "dropped" in msg.topic else msg.topic] = (
                time.monotonic(),
                int(msg.payload),
            )
            self.cond.notify_all()

    def get(self, name: str) -> tuple[float, int]:
        """(when it came, value) of the last ``name`` seen: "dropped" or a full $SYS topic."""
        with self.cond:
            return self.values.get(name, (time.monotonic(), 0))

    def next_update(self, name: str, timeout: float) -> tuple[float, int]:
        """Wait for the next publication of ``name`` and return it."""
        with self.cond:
            before = self.values.get(name)
            self.cond.wait_for(lambda: self.values.get(name) != before, timeout)
            return self.values.get(name, (time.monotonic(), 0))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def vm_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ServiceError(f"/proc/{pid}/status has no VmRSS line")


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


class FleetProc:
    """``edgefleet-agent simulate`` in a child process; its log goes to a file (10,000 devices say a lot)."""

    def __init__(self, argv: Sequence[str], log: Path, timeout: float) -> None:
        self.started = time.monotonic()
        self.err = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "simulate", *argv],
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            bufsize=1,
            cwd=ROOT,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.ready: dict[str, Any] | None = None
        self.ready_s: float | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, name="fleet-stdout", daemon=True).start()
        self._timeout = timeout

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def wait_ready(self) -> float:
        """Seconds from the process's start until it said every device is connected."""
        deadline = self.started + self._timeout
        while self.ready is None:
            if self.proc.poll() is not None:
                raise ServiceError(f"the fleet exited with {self.proc.returncode}; see {self.err.name}")
            try:
                line = self._lines.get(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise ServiceError(f"the fleet was not ready within {self._timeout:g} s") from None
                continue
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and msg.get("event") == "ready":
                    self.ready, self.ready_s = msg, time.monotonic() - self.started
        assert self.ready_s is not None
        return self.ready_s

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.err.close()


class FleetGroup:
    """One fleet simulated by several ``FleetProc``s, each a range of its devices (``--first-device``),
    so that the simulator uses more than one core: its devices share one event loop per process."""

    def __init__(self, procs: Sequence[FleetProc]) -> None:
        if not procs:
            raise ValueError("a fleet group needs at least one process")
        self.procs = list(procs)
        self.started = min(p.started for p in self.procs)

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.procs]

    def wait_ready(self) -> float:
        """Seconds from the first process's start until the last one said every device is connected."""
        return max(p.started + p.wait_ready() for p in self.procs) - self.started

    def stop(self) -> None:
        # All asked at once, so that they flush their last windows side by side.
        for p in self.procs:
            if p.proc.poll() is None:
                p.proc.terminate()
        for p in self.procs:
            p.stop()


class BirthWatch:
    """When the fleet's devices announce themselves ONLINE (their retained births), read from the broker:
    the first one marks the start of the connect, independent of how long the simulator took to build
    its devices."""

    def __init__(self, host: str, port: int, fleet: str) -> None:
        self.first: float | None = None
        self.online: set[str] = set()
        self.all_at: float | None = None
        self.expected = 0
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-births-{port}")
        topic = FleetTopics(fleet).filter(Channel.STATUS)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=0)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(Exception):
            status = device_pb2.DeviceStatus.FromString(bytes(msg.payload))
            now = time.monotonic()
            with self.cond:
                if status.state == device_pb2.DEVICE_STATE_ONLINE:
                    if self.first is None:
                        self.first = now
                    self.online.add(status.device_id)
                    if self.expected and self.all_at is None and len(self.online) >= self.expected:
                        self.all_at = now
                else:
                    self.online.discard(status.device_id)
                self.cond.notify_all()

    def expect(self, n: int) -> None:
        with self.cond:
            self.expected = n

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
