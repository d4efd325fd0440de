"""The fault suite as a soak: rollouts under a broker restart, a killed hub replica and a partition, N rounds.

    python bench/fault_soak.py                         # 3 rounds, 30 devices, SQLite (needs root: ip netns)
    python bench/fault_soak.py --rounds 10 --devices 100 --database-url postgresql+psycopg://...

One environment for every round: a Mosquitto of the bench's own (persistence on, a second listener
on the host side of a veth pair), two ``fleet hub`` replicas on one database (a SQLite file unless
--database-url names another, e.g. PostgreSQL) sharing the artifact folder and signing keys, a
relay on the host side that stands for the load balancer in front of them, and the simulated fleet
(real agents, this file run with ``--child``) in a network namespace, each device keeping a ledger
of the telemetry windows the broker acknowledged to it. Each round runs three staged rollouts of a
new version; while each one's first stage bakes:

1. broker: the broker stops and starts again (sessions kept by its persistence);
2. replica: replica A is killed with SIGKILL; B carries on; A's supervisor starts it again once the
   rollout has completed (same data folder, so the same MQTT session: see docs/operations.md);
3. partition: the link to the fleet's namespace goes down until every device holds a simulated
   hour of windows in its queue (360: the production period of 10 s, at --period s each), then up.

The plans turn the offline gate off and make the last stage wait for every device (``min_devices``),
so that a fault stalls a rollout rather than aborting it. Figures: rollouts completed, the time each
took, and windows lost (acknowledged to a device by the broker, never stored by a hub), duplicated
or dropped by a full device queue, counted window by window once the fleet stopped. The baseline is
the same fleet and rollouts with no fault (round 0), in the same run. Targets: every rollout
completes; 0 windows lost. The last line of output is one JSON object; exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import bindparam, create_engine, text  # noqa: E402

from cloud.client.hub import HubClient  # noqa: E402

T = TypeVar("T")
PRODUCTION_PERIOD_S = 10.0  # the agent's default telemetry.interval_s
HOUR_WINDOWS = round(3600 / PRODUCTION_PERIOD_S)
FAULTS = ("broker", "replica", "partition")


class SoakError(RuntimeError):
    """A step did not happen in time; the message says which."""


def wait_until(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    # Polled: what is awaited is other processes' state (an API, a database, queue files).
    deadline, pause = time.monotonic() + timeout, threading.Event()
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if result := probe():
                return result
        if time.monotonic() >= deadline:
            raise SoakError(f"timed out after {timeout:g} s waiting for {what}")
        pause.wait(0.2)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- the fleet (child process) --------------------------------------------------------------------


def child(argv: list[str]) -> int:
    """The simulated fleet with a ledger of acknowledged windows; SIGTERM stops it and writes the ledger."""
    from edge_agent import sim
    from edge_agent.config import AgentConfig, BackoffConfig, TrialConfig
    from edge_agent.outbox import OutMessage
    from edge_agent.trust.config import TrustConfig
    from edgefleet_proto.v1 import telemetry_pb2

    p = argparse.ArgumentParser()
    for name in ("fleet", "state-root", "ledger", "mqtt-host", "grpc-endpoint", "trust-root", "trust-url"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--period", type=float, required=True)
    a = p.parse_args(argv)
    sent: dict[str, set[int]] = {}
    acked: dict[str, set[int]] = {}

    def seqs(payload: bytes) -> list[int]:
        return [w.seq for w in telemetry_pb2.TelemetryBatch.FromString(payload).windows]

    class ShortKeepalive:
        # The broker publishes a silent device's last will after 1.5 x keepalive (30 s by default).
        @staticmethod
        def for_simulation(**kwargs: Any) -> AgentConfig:
            config = AgentConfig.for_simulation(**kwargs)
            return replace(config, mqtt=replace(config.mqtt, keepalive_s=5))

    async def run() -> list[Any]:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        sim.AgentConfig = ShortKeepalive  # type: ignore[attr-defined,assignment]  # read by Fleet per agent
        fleet = sim.Fleet(
            a.devices, Path(a.state_root), a.fleet, mqtt_host=a.mqtt_host, mqtt_port=a.mqtt_port,
            grpc_endpoint=a.grpc_endpoint, local_api_devices=0, telemetry_interval_s=a.period,
            backoff=BackoffConfig(initial_s=0.2, max_s=1.0), trial=TrialConfig(window_s=1.0),
            trust=TrustConfig(require_signed=True, root_file=Path(a.trust_root), http_url=a.trust_url),
        )  # fmt: skip
        for agent in fleet.agents:
            topic, box = agent.topics.telemetry, agent.outbox
            s, k = sent.setdefault(agent.device_id, set()), acked.setdefault(agent.device_id, set())

            def put(m: OutMessage, put: Any = box.put, s: set[int] = s, topic: str = topic) -> None:
                if m.topic == topic:
                    s.update(seqs(m.payload))
                put(m)

            def ack(m: OutMessage, ack: Any = box.ack, k: set[int] = k, topic: str = topic) -> None:
                ack(m)  # called once the broker's PUBACK came
                if m.topic == topic:
                    k.update(seqs(m.payload))

            box.put, box.ack = put, ack  # type: ignore[method-assign,assignment]
        await fleet.run(stop)
        return list(fleet.agents)

    agents = asyncio.run(run())
    ledger = {
        "sent": {d: sorted(v) for d, v in sent.items()},
        "acked": {d: sorted(v) for d, v in acked.items()},
        "dropped": sum(agent.outbox.dropped for agent in agents),
    }
    Path(a.ledger).write_text(json.dumps(ledger))
    return 0


# --- the environment --------------------------------------------------------------------------------


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise SoakError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def netns() -> Iterator[tuple[str, str, str]]:
    """(namespace, host-side interface, host-side address) of a fresh namespace joined by a veth pair."""
    tag = uuid.uuid4().hex[:8]
    name, host_if, inner_if = f"ef-{tag}", f"efh{tag}", f"efd{tag}"
    net = random.randrange(0, 1 << 14) * 4
    host, inner = f"10.214.{net >> 8}.{(net & 0xFF) + 1}", f"10.214.{net >> 8}.{(net & 0xFF) + 2}"
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", inner_if)
        _ip("link", "set", inner_if, "netns", name)
        _ip("addr", "add", f"{host}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        inside = ("netns", "exec", name, "ip")
        _ip(*inside, "addr", "add", f"{inner}/30", "dev", inner_if)
        _ip(*inside, "link", "set", inner_if, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield name, host_if, host
    finally:
        for args in (("netns", "del", name), ("link", "del", host_if)):
            with contextlib.suppress(SoakError, subprocess.TimeoutExpired):
                _ip(*args)


class Broker:
    """Mosquitto with persistence, on 127.0.0.1 and on the veth pair's host side."""

    def __init__(self, work: Path, extra_host: str) -> None:
        self.dir = work / "mqtt"
        self.dir.mkdir()
        self.dir.chmod(0o777)  # run as root, mosquitto drops to its own account and writes here
        self.port, self.extra_port = free_port(), free_port()
        conf = [
            f"listener {self.port} 127.0.0.1", f"listener {self.extra_port} {extra_host}",
            "allow_anonymous true", "max_queued_messages 100000",
            "persistence true", f"persistence_location {self.dir}/",
        ]  # fmt: skip
        (self.dir / "mosquitto.conf").write_text("\n".join(conf) + "\n")
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.dir / "log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.dir / "mosquitto.conf")], stdout=log, stderr=log
            )

        def accepts() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return True
            return False

        wait_until("the broker to accept connections", accepts, 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: it saves its sessions first
            self.proc.wait(20)


class Hub:
    """``fleet hub`` in a child process: one replica, its own data folder (hence its MQTT session)."""

    def __init__(self, work: Path, name: str, *, fleet: str, broker: Broker, db: str) -> None:
        self.data = work / name
        self.api_port, self.grpc_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.log = work / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")} | {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "proto")]),
            "EDGEFLEET_DATA_DIR": str(self.data), "EDGEFLEET_DATABASE_URL": db, "EDGEFLEET_FLEET": fleet,
            "EDGEFLEET_MQTT_PORT": str(broker.port), "EDGEFLEET_API_PORT": str(self.api_port),
            "EDGEFLEET_GRPC_PORT": str(self.grpc_port),
            "EDGEFLEET_ARTIFACT_DIR": str(work / "artifacts"), "EDGEFLEET_TUF_KEYS_DIR": str(work / "keys"),
            "EDGEFLEET_ROLLOUT_TICK_S": "0.5", "EDGEFLEET_LEADER_RENEW_S": "1",
            "EDGEFLEET_SHARE_GROUP": "edgefleet-hub",
        }  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            argv = [sys.executable, "-m", "cloud.cli", "hub", "--log-level", "WARNING"]
            self.proc = subprocess.Popen(argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_until(f"{self.data.name} to be healthy", self._healthy, 120)

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise SoakError(f"hub {self.data.name} exited with {self.proc.returncode}; see {self.log}")
        return httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Relay:
    """The load balancer in front of the replicas: ``host``:port to the first of ``ports`` on the
    loopback that accepts (the plaintext artifact service serves loopback callers only)."""

    def __init__(self, host: str, ports: Sequence[int]) -> None:
        self.server = socket.create_server((host, 0))
        self.address = f"{host}:{self.server.getsockname()[1]}"
        self.ports = ports
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.server.accept()
            except OSError:
                return
            for port in self.ports:
                with contextlib.suppress(OSError):
                    outbound = socket.create_connection(("127.0.0.1", port), timeout=5)
                    outbound.settimeout(None)
                    for a, b in ((inbound, outbound), (outbound, inbound)):
                        threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
                    break
            else:
                inbound.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


def make_model(path: Path, seed: int) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(64, 16)).astype(np.float32), rng.normal(size=(16, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])],
        "soak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


# --- the soak ---------------------------------------------------------------------------------------


@dataclass
class Env:
    work: Path
    client: HubClient
    broker: Broker
    hubs: tuple[Hub, ...]
    ns: tuple[str, str, str]
    fleet: subprocess.Popen[bytes]
    ids: set[str]
    period: float


def _serving(client: HubClient, version: str) -> set[str]:
    return {
        d["id"]
        for d in client.list_devices()
        if d["active_model"] and d["active_model"]["version"] == version and d["trial"] is None
    }


def _queued_min(env: Env) -> int:
    import sqlite3

    least = None
    for device in env.ids:
        path = env.work / "fleet" / device / "queue.sqlite"
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db,
        ):
            n = db.execute("SELECT COUNT(*) FROM outbox WHERE topic LIKE '%/telemetry'").fetchone()[0]
            least = n if least is None else min(least, n)
    return least or 0


def one_rollout(env: Env, version: int, fault: str | None, timeout: float) -> dict[str, Any]:
    c, n = env.client, len(env.ids)
    path = env.work / f"v{version}.onnx"
    make_model(path, version)
    c.push_model(path, name="soak", version=str(version))
    plan = {
        "name": f"soak-{version}", "target": {"model": "soak", "version": str(version)},
        "gates": {"max_offline_pct": None},
        "stages": [{"name": "half", "percent": 50, "bake": "2s"},
                   {"name": "all", "percent": 100, "bake": "1s", "min_devices": n}],
    }  # fmt: skip
    t0 = time.monotonic()
    rid = c.create_rollout(json.dumps(plan), content_type="application/json")["id"]
    wait_until("the first stage to bake", lambda: c.rollout(rid)["state"] == "baking", timeout)
    a = env.hubs[0]
    if fault == "broker":
        env.broker.stop()
        env.broker.start()
    elif fault == "replica":
        a.kill()
    elif fault == "partition":
        _ip("link", "set", env.ns[1], "down")
        try:
            wait_until("an hour of windows queued", lambda: _queued_min(env) >= HOUR_WINDOWS, timeout)
        finally:
            _ip("link", "set", env.ns[1], "up")
    try:
        wait_until("the rollout to complete", lambda: c.rollout(rid)["state"] == "completed", timeout)
        wait_until("every device to serve it", lambda: _serving(c, str(version)) == env.ids, timeout)
        done = True
    except SoakError:
        done = False
    if fault == "replica":
        a.start()  # its supervisor brings it back: same folder, same session
    state = c.rollout(rid)["state"]
    return {"fault": fault, "version": version, "completed": done, "state": state,
            "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip


def count_windows(ledger: dict[str, Any], db: str, timeout: float) -> dict[str, int]:
    devices = sorted(ledger["sent"])
    engine = create_engine(db)
    query = text(
        "SELECT device_id, seq, COUNT(*) FROM telemetry_window "
        "WHERE device_id IN :ids GROUP BY device_id, seq"
    ).bindparams(bindparam("ids", expanding=True))
    deadline, pause = time.monotonic() + timeout, threading.Event()
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(query, {"ids": devices}).all()
            stored = {(str(d), int(s)): int(k) for d, s, k in rows}
            acked = {(d, s) for d, seqs in ledger["acked"].items() for s in seqs}
            lost = len(acked - stored.keys())
            if not lost or time.monotonic() >= deadline:
                break
            pause.wait(0.5)  # the hubs store the last windows a moment after the fleet stops
    finally:
        engine.dispose()
    return {
        "acknowledged": len(acked), "stored": len(stored), "lost": lost,
        "duplicated": sum(1 for k in stored.values() if k != 1), "dropped_by_full_queues": ledger["dropped"],
    }  # fmt: skip


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fleet_name = f"soak-{os.getpid()}"
    db = args.database_url or f"sqlite:///{work / 'hub.db'}"
    with contextlib.ExitStack() as stack:
        ns = stack.enter_context(netns())
        broker = Broker(work, ns[2])
        broker.start()
        stack.callback(broker.stop)
        hubs = tuple(Hub(work, name, fleet=fleet_name, broker=broker, db=db) for name in "ab")
        grpc_lb, api_lb = Relay(ns[2], [h.grpc_port for h in hubs]), Relay(ns[2], [h.api_port for h in hubs])
        for closing in (grpc_lb.close, api_lb.close, *(h.stop for h in hubs)):
            stack.callback(closing)
        for hub in hubs:
            hub.env["EDGEFLEET_GRPC_PUBLIC_ENDPOINT"] = grpc_lb.address
            hub.start()  # one after the other: A makes the repository and the admin token
        token = (hubs[0].data / "admin.token").read_text().strip()
        client = stack.enter_context(HubClient(f"http://{api_lb.address}", token, timeout=60))
        (work / "root.json").write_bytes(httpx.get(f"{hubs[0].api_url}/tuf/metadata/1.root.json").content)
        argv = [
            "ip", "netns", "exec", ns[0], sys.executable, str(Path(__file__).resolve()), "--child",
            "--devices", str(args.devices), "--fleet", fleet_name, "--state-root", str(work / "fleet"),
            "--ledger", str(work / "ledger.json"),
            "--mqtt-host", ns[2], "--mqtt-port", str(broker.extra_port),
            "--grpc-endpoint", grpc_lb.address, "--trust-root", str(work / "root.json"),
            "--trust-url", f"http://{api_lb.address}/tuf", "--period", str(args.period),
        ]  # fmt: skip
        with (work / "fleet.log").open("ab") as log:
            env_vars = {k: v for k, v in hubs[0].env.items() if not k.startswith("EDGEFLEET_")}
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env_vars)

        def stop_fleet() -> None:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)

        stack.callback(stop_fleet)
        from edge_agent.sim import device_ids

        env = Env(work, client, broker, hubs, ns, proc, set(device_ids(args.devices)), args.period)
        t0 = time.monotonic()
        wait_until(
            "every device online",
            lambda: [d["state"] for d in client.list_devices()].count("online") == args.devices,
            args.timeout,
        )
        online_s = time.monotonic() - t0
        rollouts = [one_rollout(env, 1, None, args.timeout)]  # round 0: the baseline, no fault
        for _ in range(args.rounds):
            for fault in args.faults:
                rollouts.append(one_rollout(env, len(rollouts) + 1, fault, args.timeout))
                print(json.dumps(rollouts[-1]), flush=True)
        stop_fleet()
        ledger = json.loads((work / "ledger.json").read_text())
        windows = count_windows(ledger, db, timeout=60)
    faulted = [r for r in rollouts if r["fault"]]
    return {
        "devices": args.devices, "rounds": args.rounds, "faults": list(args.faults),
        "database": db.split(":")[0], "fleet_online_s": round(online_s, 1),
        "telemetry_period_s": args.period, "simulated_hour_windows": HOUR_WINDOWS,
        "baseline_rollout_s": rollouts[0]["seconds"],
        "rollouts": len(faulted), "rollouts_completed": sum(r["completed"] for r in faulted),
        "rollout_s_by_fault": {f: [r["seconds"] for r in faulted if r["fault"] == f] for f in args.faults},
        "not_completed": [r for r in rollouts if not r["completed"]],
        "windows": windows,
    }  # fmt: skip


def _machine() -> dict[str, Any]:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")), cpu)  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def _versions() -> dict[str, str]:
    out = {}
    for name in ("paho-mqtt", "aiomqtt", "sqlalchemy", "grpcio", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out["mosquitto"] = subprocess.run(
            ["mosquitto", "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.splitlines()[0]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--devices", type=int, default=30)
    p.add_argument("--period", type=float, default=0.05, help="telemetry period of the devices (s)")
    p.add_argument(
        "--faults", type=lambda s: s.split(","), default=list(FAULTS), help="broker,replica,partition"
    )
    p.add_argument("--database-url", default=None, help="default: a SQLite file in the work folder")
    p.add_argument("--timeout", type=float, default=180.0, help="for each step (s)")
    args = p.parse_args(argv)
    if unknown := set(args.faults) - set(FAULTS):
        p.error(f"--faults: expected some of {','.join(FAULTS)}, got {','.join(sorted(unknown))}")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        p.error("the partition needs root and iproute2 (ip netns); run as root")
    work = Path(tempfile.mkdtemp(prefix="efsoak-", dir="/tmp"))  # short: Unix socket paths
    work.chmod(0o711)  # the broker, run as root, drops to its own account and must reach its folder
    try:
        results = soak(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lost = results["windows"]["lost"]
    done, planned = results["rollouts_completed"], results["rollouts"]
    targets = {
        "rollouts_completed": {"value": done, "goal": planned, "unit": "rollouts", "met": done == planned},
        "windows_lost": {
            "value": lost,
            "goal": 0,
            "unit": "acknowledged telemetry windows",
            "met": lost == 0,
        },
    }
    print(
        json.dumps({"machine": _machine(), "versions": _versions(), "results": results, "targets": targets})
    )
    return 0 if all(t["met"] for t in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
