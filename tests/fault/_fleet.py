"""What the rollout fault tests share: hub processes, a simulated fleet, a rollout, and the count of windows.

Every part is the real thing in a process of its own, so that a test can kill it, cut it off or
restart what it talks to: ``fleet hub`` (one or more replicas), ``tests.fault._fleet_child`` (the
simulated fleet of real agents with a ledger of its telemetry), the test's broker and database.
The hub is driven through its HTTP API, as an operator would (``HubClient``). Nothing here sleeps
to let something happen: each wait names its condition and has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from sqlalchemy import create_engine, text

from cloud.client.hub import HubClient
from tests._services import restartable_port
from tests.fault._fleet_child import Ledger

__all__ = [
    "FleetTimings",
    "HubProcess",
    "Ledger",
    "Relay",
    "SimFleet",
    "WindowCount",
    "assert_completed_in_two_stages",
    "assert_stored_exactly_once",
    "count_windows",
    "finish_rollout",
    "make_model",
    "serve_version_1",
    "start_two_stage_rollout",
    "wait_until",
]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


class FaultTestError(AssertionError):
    """A step of a fault scenario did not happen in time; the message says what was awaited."""


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; raise naming ``what`` after ``timeout`` s.

    Polling, because what is awaited is the state of other processes (a hub's API, its database,
    files an agent writes): nothing in this process is notified when it changes.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise FaultTestError(f"timed out after {timeout:g} s waiting for {what}")
        pause.wait(interval)


def make_model(path: Path, seed: int) -> None:
    """A small ONNX MLP (64 inputs -> 10 logits) whose weights depend on ``seed``: one version each."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("MatMul", ["hr", "w2"], ["logits"]),
        ],
        "fault_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(64, 16)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.normal(size=(16, 10)).astype(np.float32), "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without the caller's EDGEFLEET_* settings, this tree first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "proto"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


class HubProcess:
    """``fleet hub`` in a child process, on its own data folder and ports.

    ``database_url``, ``artifact_dir`` and ``keys_dir`` are what replicas of one hub have in
    common (by default each lives in the data folder); the data folder is each replica's own,
    since the broker tells replicas apart by the client id derived from it
    (cloud.transport.mqtt.stable_client_id).
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        fleet: str,
        mqtt_port: int,
        database_url: str | None = None,
        artifact_dir: Path | None = None,
        keys_dir: Path | None = None,
        grpc_public_endpoint: str | None = None,
        tick_s: float = 0.5,
        shared: bool = False,
    ) -> None:
        self.data_dir = data_dir
        # A replica among several: telemetry, sketches and events through one shared subscription.
        self.shared = shared
        # Kept across a restart of this hub (a replica killed and started again).
        self.api_port, self.grpc_port = restartable_port(), restartable_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.grpc_endpoint = f"127.0.0.1:{self.grpc_port}"
        self.database_url = database_url or f"sqlite:///{data_dir / 'hub.db'}"
        self.fleet, self.mqtt_port, self.tick_s = fleet, mqtt_port, tick_s
        self.artifact_dir, self.keys_dir = artifact_dir, keys_dir
        # Where devices are told to fetch artifacts (None: the bound gRPC address); settable until start().
        self.grpc_public_endpoint = grpc_public_endpoint
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _environment(self) -> dict[str, str]:
        env = {
            "EDGEFLEET_DATA_DIR": str(self.data_dir),
            "EDGEFLEET_DATABASE_URL": self.database_url,
            "EDGEFLEET_FLEET": self.fleet,
            "EDGEFLEET_MQTT_HOST": "127.0.0.1",
            "EDGEFLEET_MQTT_PORT": str(self.mqtt_port),
            "EDGEFLEET_API_PORT": str(self.api_port),
            "EDGEFLEET_GRPC_PORT": str(self.grpc_port),
            "EDGEFLEET_ROLLOUT_TICK_S": str(self.tick_s),
            "EDGEFLEET_LEADER_RENEW_S": "1",
        }
        if self.shared:
            env["EDGEFLEET_SHARE_GROUP"] = "edgefleet-hub"
        if self.artifact_dir is not None:
            env["EDGEFLEET_ARTIFACT_DIR"] = str(self.artifact_dir)
        if self.keys_dir is not None:
            env["EDGEFLEET_TUF_KEYS_DIR"] = str(self.keys_dir)
        if self.grpc_public_endpoint is not None:
            env["EDGEFLEET_GRPC_PUBLIC_ENDPOINT"] = self.grpc_public_endpoint
        return _child_env(env)

    def start(self, timeout: float = 60.0) -> HubProcess:
        """Start the hub; return once its health check passes (database and broker both up).
        A hub killed or stopped before starts again on the same folder, ports and database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cloud.cli", "hub", "--log-level", "WARNING"],
                env=self._environment(),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(f"the hub at {self.api_url} to be healthy", self._healthy, timeout, interval=0.2)
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise FaultTestError(f"the hub exited with {self.proc.returncode}:\n{self.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200
        return False

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the hub was not started"
        return self.proc.pid

    def token(self) -> str:
        """The admin token this hub wrote at its first start (a replica started later writes none)."""
        return (self.data_dir / "admin.token").read_text().strip()

    def client(self, token: str | None = None) -> HubClient:
        return HubClient(self.api_url, token or self.token(), timeout=60)

    def kill(self) -> None:
        """SIGKILL: the hub gets no chance to finish anything."""
        assert self.proc is not None, "the hub was not started"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return "(no log)"


@dataclass(frozen=True, slots=True)
class FleetTimings:
    """How fast the simulated fleet's clocks run (see the tests for what each stands for)."""

    telemetry_interval_s: float = 0.1
    trial_window_s: float = 1.0
    keepalive_s: int = 30
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 1.0


@dataclass
class SimFleet:
    """The simulated fleet in a child process (``prefix``: e.g. ``ip netns exec NAME``)."""

    devices: int
    fleet: str
    root: Path
    mqtt: tuple[str, int]
    grpc_endpoint: str
    api_url: str
    timings: FleetTimings = field(default_factory=FleetTimings)
    prefix: Sequence[str] = ()
    proc: subprocess.Popen[str] | None = None
    _lines: queue.Queue[str] = field(default_factory=queue.Queue)

    @property
    def state_root(self) -> Path:
        return self.root / "devices"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.json"

    @property
    def ids(self) -> list[str]:
        from edge_agent.sim import device_ids

        return device_ids(self.devices)

    def start(self, timeout: float = 60.0) -> SimFleet:
        """Fetch the hub's trusted root, start the agents, return once every one is connected."""
        self.root.mkdir(parents=True, exist_ok=True)
        root_json = self.root / "root.json"
        response = httpx.get(f"{self.api_url}/tuf/metadata/1.root.json", timeout=10)
        response.raise_for_status()
        root_json.write_bytes(response.content)
        t = self.timings
        argv = [
            *self.prefix, sys.executable, "-m", "tests.fault._fleet_child",
            "--devices", str(self.devices), "--fleet", self.fleet,
            "--state-root", str(self.state_root), "--ledger", str(self.ledger_path),
            "--mqtt-host", self.mqtt[0], "--mqtt-port", str(self.mqtt[1]),
            "--grpc-endpoint", self.grpc_endpoint,
            "--trust-root", str(root_json), "--trust-http-url", f"{self.api_url}/tuf",
            "--telemetry-interval", str(t.telemetry_interval_s), "--trial-window", str(t.trial_window_s),
            "--keepalive", str(t.keepalive_s),
            "--backoff-initial", str(t.backoff_initial_s), "--backoff-max", str(t.backoff_max_s),
        ]  # fmt: skip
        with (self.root / "fleet.log").open("ab") as err:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1, env=_child_env({}), cwd=ROOT
            )
        threading.Thread(target=self._pump, name="fleet-stdout", daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                self.stop()
                raise FaultTestError(
                    f"the simulated fleet did not report ready within {timeout:g} s "
                    f"(exit code {self.proc.poll()}); see {self.root / 'fleet.log'}"
                )
            with contextlib.suppress(queue.Empty, ValueError):
                line = json.loads(self._lines.get(timeout=min(remaining, 1.0)))
                if isinstance(line, dict) and line.get("event") == "ready":
                    return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def stop(self, timeout: float = 30.0) -> Ledger:
        """Stop the agents cleanly (SIGTERM: they flush what the broker takes); return their ledger."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise FaultTestError(f"the simulated fleet did not stop within {timeout:g} s") from None
        if self.proc is None or not self.ledger_path.exists():
            raise FaultTestError(f"the simulated fleet left no ledger at {self.ledger_path}")
        return Ledger.from_json(json.loads(self.ledger_path.read_text()))

    def close(self) -> None:
        """Stop the agents if they still run (a test's clean-up, whatever happened before)."""
        with contextlib.suppress(FaultTestError):
            self.stop(timeout=10)

    def queued_windows(self) -> dict[str, set[int]]:
        """The seq of each telemetry window waiting in each device's on-disk queue right now
        (read beside the agent, from the file it writes)."""
        import sqlite3

        from tests.fault._fleet_child import window_seqs

        queued: dict[str, set[int]] = {}
        for device in self.ids:
            path = self.state_root / device / "queue.sqlite"
            try:
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
                    rows = db.execute("SELECT topic, payload FROM outbox").fetchall()
            except sqlite3.Error:
                rows = []  # not created yet
            queued[device] = {seq for t, p in rows if t.endswith("/telemetry") for seq in window_seqs(p)}
        return queued


class Relay:
    """Forwards TCP connections from ``listen_host`` (a free port) to the first of ``target_ports``
    on the loopback that accepts: the load balancer in front of hub replicas, or a proxy on the
    hub's machine.

    The hub's plaintext gRPC service serves anonymous callers on the loopback only
    (cloud.identity.grpc_auth), as in the single-machine demo; connections through the relay come
    from the loopback, so devices elsewhere (another namespace) download as the demo's do.
    """

    def __init__(self, listen_host: str, target_ports: Sequence[int]) -> None:
        self.host = listen_host
        self.targets = [("127.0.0.1", port) for port in target_ports]
        self._server = socket.create_server((listen_host, 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True).start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self._server.accept()
            except OSError:
                return  # closed
            outbound = self._connect()
            if outbound is None:
                inbound.close()
                continue
            with self._lock:
                if self._closed:
                    inbound.close()
                    outbound.close()
                    return
                self._sockets |= {inbound, outbound}
            for a, b in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        for target in self.targets:
            with contextlib.suppress(OSError):
                outbound = socket.create_connection(target, timeout=5)
                outbound.settimeout(None)
                return outbound
        return None

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        # One direction ended: end the other too, so neither peer waits on a half-open connection.
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, set()
        self._server.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()


# --- rollouts -------------------------------------------------------------------------------------


def push_versions(client: HubClient, work: Path, name: str, versions: Iterable[str]) -> None:
    for seed, version in enumerate(versions, start=1):
        path = work / f"{name}-{version}.onnx"
        make_model(path, seed)
        client.push_model(path, name=name, version=version)


def serving(client: HubClient, version: str) -> set[str]:
    """Devices whose committed (active) model is ``version``, by the hub's account."""
    return {
        d["id"]
        for d in client.list_devices()
        if d["active_model"] is not None and d["active_model"]["version"] == version and d["trial"] is None
    }


def states(client: HubClient) -> dict[str, str]:
    """Each device's state (online, offline) by the hub's account."""
    return {d["id"]: str(d["state"]) for d in client.list_devices()}


# The model every rollout scenario serves: version 1 on every device before, version 2 rolled out.
MODEL = "fault"


def serve_version_1(
    stack: contextlib.ExitStack,
    fleet: SimFleet,
    client: HubClient,
    work: Path,
    timeout: float,
    *,
    observer: HubClient | None = None,
) -> set[str]:
    """Push versions 1 and 2 of ``MODEL`` through ``client`` (model files in ``work``), start
    ``fleet`` (closed with ``stack``) and assign it version 1; return its device ids once every
    device serves version 1, by ``observer``'s account (``client``'s unless given)."""
    stack.callback(fleet.close)
    push_versions(client, work, MODEL, ["1", "2"])
    fleet.start()
    ids = set(fleet.ids)
    hub = observer or client
    wait_until("every device online", lambda: set(states(hub).values()) == {"online"}, timeout)
    client.assign(model=MODEL, version="1", devices=sorted(ids))
    wait_until("every device to serve version 1", lambda: serving(hub, "1") == ids, timeout)
    return ids


def start_rollout(
    client: HubClient, name: str, version: str, stages: list[dict[str, Any]], gates: dict[str, Any]
) -> str:
    plan = {
        "name": f"fault-{version}",
        "target": {"model": name, "version": version},
        "stages": stages,
        "gates": gates,
    }
    return str(client.create_rollout(json.dumps(plan), content_type="application/json")["id"])


def start_two_stage_rollout(
    client: HubClient, first_bake: str, *, gates: dict[str, Any] | None = None, **last_stage: Any
) -> str:
    """A rollout of version 2 of ``MODEL``: half the fleet, baking ``first_bake``, then all of it,
    baking 1 s (``last_stage``: more fields of that stage's plan)."""
    stages = [
        {"name": "half", "percent": 50, "bake": first_bake},
        {"name": "all", "percent": 100, "bake": "1s", **last_stage},
    ]
    return start_rollout(client, MODEL, "2", stages=stages, gates=gates or {})


# Where a rollout rests unless someone acts: completed, or stopped by its gates.
SETTLED = frozenset({"completed", "paused", "rolled_back", "superseded"})


def describe(view: dict[str, Any]) -> str:
    """A rollout's view in a line: its state and each transition with the gates' verdict."""
    steps = [
        {"to": t.get("to_state"), "event": t.get("event"), "stage": t.get("stage"),
         "detail": (t.get("figures") or {}).get("detail")}
        for t in view.get("transitions", [])
    ]  # fmt: skip
    where = {k: view.get(k) for k in ("state", "stage", "next_action")}
    return json.dumps({**where, "transitions": steps}, default=str)


def wait_rollout(
    client: HubClient, rollout_id: str, until: Collection[str], timeout: float
) -> dict[str, Any]:
    """The rollout's view once its state is one of ``until``; on timeout, say where it stands and why."""
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        last.update(client.rollout(rollout_id))
        return dict(last) if last["state"] in until else None

    try:
        return wait_until(f"rollout {rollout_id} to be {'/'.join(sorted(until))}", probe, timeout)
    except FaultTestError as e:
        raise FaultTestError(f"{e}; it is {describe(last)}") from None


def chain(view: dict[str, Any]) -> list[str]:
    return [t["to_state"] for t in view["transitions"]]


def assert_completed_in_two_stages(view: dict[str, Any]) -> None:
    """The rollout went through both stages of ``start_two_stage_rollout`` and nothing else."""
    assert chain(view) == [
        "running", "baking", "promoting", "running", "baking", "promoting", "completed",
    ], describe(view)  # fmt: skip


def finish_rollout(
    client: HubClient, rollout_id: str, fleet: SimFleet, ids: set[str], timeout: float
) -> tuple[dict[str, Any], Ledger]:
    """Wait for the rollout to settle and, if it completed, for every device of ``ids`` to serve
    version 2; then stop the fleet. Returns the rollout's view and the fleet's ledger."""
    view = wait_rollout(client, rollout_id, SETTLED, timeout)
    if view["state"] == "completed":
        wait_until("every device to serve version 2", lambda: serving(client, "2") == ids, timeout)
    return view, fleet.stop()


# --- the count of windows -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowCount:
    """The ledger beside the hub's rows: what was acknowledged but not stored, stored twice, or never sent."""

    acked: int
    stored: int
    missing: dict[str, list[int]]
    duplicated: dict[str, list[int]]
    unknown: dict[str, list[int]]
    dropped: int

    @property
    def lost(self) -> int:
        return sum(len(s) for s in self.missing.values())

    def problems(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{self.lost} acknowledged windows not stored: {_short(self.missing)}")
        if self.duplicated:
            out.append(f"windows stored more than once: {_short(self.duplicated)}")
        if self.unknown:
            out.append(f"windows stored that no device sent: {_short(self.unknown)}")
        if self.dropped:
            out.append(f"{self.dropped} messages dropped by full device queues")
        return out


def _short(by_device: dict[str, list[int]]) -> str:
    shown = (f"{d}: {seqs[:8]}{'...' if len(seqs) > 8 else ''}" for d, seqs in sorted(by_device.items()))
    return "; ".join(shown)


def assert_stored_exactly_once(count: WindowCount, *notes: str) -> None:
    """Every window the broker acknowledged is stored once, none is stored that no device sent, and
    no device queue dropped any (``notes``: said beside the problems on failure)."""
    problems = count.problems()
    assert not problems, "\n".join([*problems, *notes])


def stored_windows(database_url: str, devices: Sequence[str]) -> dict[str, dict[int, int]]:
    """From the hub's database: per device, each stored window's seq and how many rows it has."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT device_id, seq, COUNT(*) FROM telemetry_window "
                    "WHERE device_id IN :ids GROUP BY device_id, seq"
                ).bindparams(_expanding("ids")),
                {"ids": list(devices)},
            ).all()
    finally:
        engine.dispose()
    out: dict[str, dict[int, int]] = {d: {} for d in devices}
    for device, seq, n in rows:
        out[str(device)][int(seq)] = int(n)
    return out


def _expanding(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)


def count_windows(ledger: Ledger, database_url: str) -> WindowCount:
    devices = sorted(ledger.sent)
    stored = stored_windows(database_url, devices)
    missing, duplicated, unknown = {}, {}, {}
    for d in devices:
        rows = stored[d]
        if gone := sorted(ledger.acked[d] - rows.keys()):
            missing[d] = gone
        if twice := sorted(seq for seq, n in rows.items() if n != 1):
            duplicated[d] = twice
        if extra := sorted(rows.keys() - ledger.sent[d]):
            unknown[d] = extra
    return WindowCount(
        acked=sum(len(s) for s in ledger.acked.values()),
        stored=sum(len(r) for r in stored.values()),
        missing=missing,
        duplicated=duplicated,
        unknown=unknown,
        dropped=sum(ledger.dropped.values()),
    )


def settled_count(ledger: Ledger, database_url: str, timeout: float) -> WindowCount:
    """The count once every acknowledged window is stored, or as it stands at the deadline: the hub
    stores what the broker delivers in batches, so the last windows arrive a moment after the fleet stops."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        count = count_windows(ledger, database_url)
        if not count.missing or time.monotonic() >= deadline:
            return count
        pause.wait(0.2)  # the hub's database is another process's: polled
