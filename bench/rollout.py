"""Delivering a new model version to a fleet: time until every device serves it, and the hub's CPU per device.

    python bench/rollout.py [--devices 1000] [--model-mib 1] [--database-url URL]
                            [--mqtt-host 127.0.0.1 --mqtt-port 1883]

A real hub (`fleet hub` in a child process: SQLite in a temporary folder unless
--database-url names another database, e.g. PostgreSQL), a generated ONNX model of at least
--model-mib MiB (an MLP on 64 inputs, widened; onnxruntime loads and runs it here before it is
pushed), and N real agents (`edgefleet-agent simulate`, one child process, signed updates
on) on the broker. Then:

(a) assign: the version is assigned to every device in one request; the time from the
    request until every device's active slot (its retained status) holds the version, and
    the hub's CPU time over that span divided by N. The hub's CPU is read with psutil from
    the hub process (user + system, its threads included); the bench and the simulated
    fleet run in other processes, so neither counts. The hub's idle CPU rate (N devices
    connected, serving nothing yet, so sending no telemetry) is measured first, after
    --settle-s, and reported beside it.
(b) rollout: a staged rollout (10, 50, 100 percent, bake 0) promoted to 100%, and a gate's
    reaction to a bad version on a canary of the devices with a local API
    (--local-api-devices), which the bench sends traffic; see ``bench/_staged.py``.
(c) bare transfer: the same bytes pulled N times at once from the hub's artifact service by a
    plain grpc.aio client on one channel (the simulated fleet also shares one channel), the
    baseline of (a); the ratio (a)/(c) says what the rest of the path adds.

Targets: hub CPU per device updated <= 5 ms; every device serves the new version <= 30 s
after the assignment (after the promotion for a rollout); gate reaction <= 1 s. The last
line of output is one JSON object (see ../shared/DESIGN.md, "Benchmarks"); the exit status
is 1 when a measured target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

import grpc.aio  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psutil  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bench._staged import CpuMark, measure_rollout  # noqa: E402
from cloud.client.hub import HubClient  # noqa: E402
from cloud.demo.run import FleetProcess, start_fleet  # noqa: E402
from cloud.transport.broker import BrokerHandle  # noqa: E402
from cloud.transport.retained import clear_fleet_retained  # noqa: E402
from edgefleet_proto.topics import Channel, FleetTopics  # noqa: E402
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc, device_pb2  # noqa: E402

MiB = 1024 * 1024
TARGET_CPU_MS = 5.0
TARGET_ALL_SERVING_S = 30.0
TARGET_GATE_S = 1.0


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_model(path: Path, mib: float, seed: int) -> bytes:
    """An MLP 64 -> hidden -> 10 whose weights take at least ``mib`` MiB; onnxruntime must load it."""
    hidden = max(16, int(mib * MiB / 4 / (64 + 10)) + 1)
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((64, hidden), dtype=np.float32) * 0.05
    w2 = rng.standard_normal((hidden, 10), dtype=np.float32) * 0.05
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("MatMul", ["hr", "w2"], ["logits"]),
        ],
        "bench_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    path.write_bytes(data)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.ones((1, 64), dtype=np.float32)})[0]
    if out.shape != (1, 10) or len(data) < mib * MiB:
        raise BenchError(f"the generated model is wrong: output {out.shape}, {len(data)} bytes")
    return data


class HubProcess:
    """`fleet hub` in a child process; ``cpu_s()`` is its CPU time so far (user + system)."""

    def __init__(self, work: Path, fleet: str, args: argparse.Namespace) -> None:
        self.api_port, self.grpc_port = free_port(), free_port()
        env = {
            **os.environ,
            "EDGEFLEET_DATA_DIR": str(work / "hub"),
            "EDGEFLEET_FLEET": fleet,
            "EDGEFLEET_MQTT_HOST": args.mqtt_host,
            "EDGEFLEET_MQTT_PORT": str(args.mqtt_port),
        }
        if args.database_url:
            env["EDGEFLEET_DATABASE_URL"] = args.database_url
        argv = [
            sys.executable, "-c", "from cloud.cli.app import app; app()", "hub",
            "--port", str(self.api_port), "--grpc-port", str(self.grpc_port), "--log-level", "WARNING",
        ]  # fmt: skip
        self.log = (work / "hub.log").open("w")
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.grpc_endpoint = f"127.0.0.1:{self.grpc_port}"
        self.token_path = work / "hub" / "admin.token"

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the hub exited with {self.proc.returncode}; see {self.log.name}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                if httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200:
                    return self.token_path.read_text().strip()
            time.sleep(0.2)  # polling a child process's HTTP port: there is nothing to wait on
        raise BenchError(f"the hub did not answer within {timeout:g} s")

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mib(self) -> float:
        return float(self.ps.memory_info().rss) / MiB

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class StatusWatch:
    """The devices' retained status messages, read straight from the broker (the hub is not asked)."""

    def __init__(self, host: str, port: int, fleet: str) -> None:
        self.topics = FleetTopics(fleet)
        self.online: set[str] = set()
        self.active: dict[str, str] = {}
        self.trial: dict[str, str] = {}  # device -> the version it has on trial ("" none)
        self.served: dict[str, set[str]] = {}  # sha256 -> every device seen serving it
        self.first_serving: dict[str, float] = {}
        self.target = ""
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(self.topics.filter(Channel.STATUS), qos=1)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(Exception):
            status = device_pb2.DeviceStatus.FromString(bytes(msg.payload))
            device = status.device_id
            active = next((s.model.sha256 for s in status.slots if s.name == "active"), "")
            trial = next((s.model.sha256 for s in status.slots if s.name == "trial"), "")
            now = time.monotonic()
            with self.cond:
                if status.state == device_pb2.DEVICE_STATE_ONLINE:
                    self.online.add(device)
                else:
                    self.online.discard(device)
                self.active[device] = active
                self.trial[device] = trial
                if active:
                    self.served.setdefault(active, set()).add(device)
                if self.target and active == self.target:
                    self.first_serving.setdefault(device, now)
                self.cond.notify_all()

    def expect(self, sha256: str) -> None:
        with self.cond:
            self.target = sha256
            self.first_serving = {d: time.monotonic() for d, a in self.active.items() if a == sha256}

    def wait(self, what: str, count: Any, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(count, timeout):
                raise BenchError(f"timed out after {timeout:g} s waiting for {what}")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def measure_assign(
    client: HubClient,
    hub: HubProcess,
    watch: StatusWatch,
    model: dict[str, Any],
    ids: list[str],
    *,
    fleet: psutil.Process,
    idle_cpu_per_s: float,
    timeout: float,
) -> dict[str, Any]:
    """(a) one assignment to every device; time until all serve it, hub CPU per device.

    ``idle_cpu_per_s``: the hub's CPU seconds per second before the assignment (the fleet
    connected, no update); the figure net of it is what the update itself cost.
    """
    n = len(ids)
    watch.expect(model["sha256"])
    cpu0, mark0, t0 = hub.cpu_s(), CpuMark.now(fleet), time.monotonic()
    client.assign(model=model["name"], version=model["version"], devices=ids)
    assigned_s = time.monotonic() - t0
    watch.wait(f"{n} devices to serve {model['version']}", lambda: len(watch.first_serving) >= n, timeout)
    cpu1, mark1, t1 = hub.cpu_s(), CpuMark.now(fleet), time.monotonic()
    times = sorted(t - t0 for t in watch.first_serving.values())
    return {
        "devices": n,
        "assign_request_s": round(assigned_s, 3),
        "all_serving_s": round(t1 - t0, 2),
        "first_serving_s": round(times[0], 2),
        "median_serving_s": round(times[n // 2], 2),
        "hub_cpu_s": round(cpu1 - cpu0, 2),
        "hub_cpu_ms_per_device": round((cpu1 - cpu0) * 1000 / n, 2),
        "hub_cpu_ms_per_device_net_of_idle": round((cpu1 - cpu0 - idle_cpu_per_s * (t1 - t0)) * 1000 / n, 2),
        "hub_rss_mib_after": round(hub.rss_mib(), 1),
        **mark1.since(mark0),
    }


async def _pull_all(endpoint: str, sha256: str, n: int) -> tuple[float, int]:
    options = [("grpc.max_receive_message_length", 2 * MiB)]
    async with grpc.aio.insecure_channel(endpoint, options=options) as channel:
        stub = artifact_pb2_grpc.ArtifactServiceStub(channel)

        async def one() -> int:
            digest, got = hashlib.sha256(), 0
            async for chunk in stub.Fetch(artifact_pb2.FetchRequest(sha256=sha256), timeout=300):
                digest.update(chunk.data)
                got += len(chunk.data)
            if digest.hexdigest() != sha256:
                raise BenchError("a bare transfer got bytes that do not hash to the artifact")
            return got

        t0 = time.monotonic()
        sizes = await asyncio.gather(*(one() for _ in range(n)))
        return time.monotonic() - t0, sum(sizes)


def measure_bare(hub: HubProcess, model: dict[str, Any], n: int) -> dict[str, Any]:
    """(c) the same bytes to N receivers at once over the agents' transport, from the artifact service."""
    cpu0 = hub.cpu_s()
    seconds, total = asyncio.run(_pull_all(hub.grpc_endpoint, model["sha256"], n))
    cpu1 = hub.cpu_s()
    return {
        "receivers": n,
        "all_received_s": round(seconds, 2),
        "bytes": total,
        "mib_per_s": round(total / MiB / seconds, 1),
        "hub_cpu_ms_per_receiver": round((cpu1 - cpu0) * 1000 / n, 2),
    }


def _versions() -> dict[str, str]:
    out = {}
    for name in ("grpcio", "paho-mqtt", "sqlalchemy", "onnxruntime", "psutil"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
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


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="efroll-", dir="/tmp"))  # short: Unix socket paths
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.devices
    fleet = f"bench-{os.getpid()}"
    # The hub and the fleet run this tree's code, whatever is installed.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "proto")])
    broker = BrokerHandle(args.mqtt_host, args.mqtt_port, "5", embedded=False)
    results: dict[str, Any] = {"database": "postgresql" if args.database_url else "sqlite"}
    with contextlib.ExitStack() as stack, _workdir(args.workdir) as work:
        hub = HubProcess(work, fleet, args)
        stack.callback(hub.stop)
        token = hub.wait_ready(60)
        client = stack.enter_context(HubClient(hub.api_url, token, timeout=120))
        root = httpx.get(f"{hub.api_url}/tuf/metadata/1.root.json", timeout=10)
        root.raise_for_status()
        (work / "root.json").write_bytes(root.content)

        v1 = make_model(work / "v1.onnx", args.model_mib, seed=1)
        pushed = client.push_model(work / "v1.onnx", name="bench", version="1")
        model = {"name": "bench", "version": "1", "sha256": hashlib.sha256(v1).hexdigest(), "bytes": len(v1)}
        if pushed.get("sha256", model["sha256"]) != model["sha256"]:
            raise BenchError(f"the hub registered {pushed.get('sha256')}, expected {model['sha256']}")
        results["model"] = model

        watch = StatusWatch(args.mqtt_host, args.mqtt_port, fleet)
        stack.callback(watch.stop)
        t_fleet = time.monotonic()
        fleet_proc: FleetProcess = start_fleet(
            devices=n,
            fleet=fleet,
            broker=broker,
            grpc_endpoint=hub.grpc_endpoint,
            state_root=work / "fleet",
            local_api_devices=min(args.local_api_devices, n),
            telemetry_interval=args.telemetry_interval,
            timeout=args.timeout,
            extra_args=["--trust-root", str(work / "root.json"), "--trust-http-url", f"{hub.api_url}/tuf"],
        )
        stack.callback(lambda: clear_fleet_retained(args.mqtt_host, args.mqtt_port, fleet, "5"))
        stack.callback(fleet_proc.stop)
        watch.wait(f"{n} devices online", lambda: len(watch.online) >= n, args.timeout)
        ids = sorted(watch.online)
        results["fleet_online_s"] = round(time.monotonic() - t_fleet, 1)

        # What the hub spends with N devices connected, before any update (they serve nothing
        # yet, so they send no telemetry); after the statuses of their connects were stored.
        threading.Event().wait(args.settle_s)  # a pause for the hub's backlog, not an event
        cpu0, t0 = hub.cpu_s(), time.monotonic()
        threading.Event().wait(args.idle_s)  # a measuring window, not a wait for an event
        idle = (hub.cpu_s() - cpu0) / (time.monotonic() - t0)
        results["hub_idle_cpu_pct"] = round(idle * 100, 2)

        fleet_ps = psutil.Process(fleet_proc.proc.pid)
        results["assign"] = measure_assign(
            client, hub, watch, model, ids, fleet=fleet_ps, idle_cpu_per_s=idle, timeout=args.timeout
        )

        def push(version: str, seed: int) -> dict[str, Any]:
            path = work / f"v{version}.onnx"
            data = make_model(path, args.model_mib, seed=seed)
            client.push_model(path, name="bench", version=version)
            return {"name": "bench", "version": version, "sha256": hashlib.sha256(data).hexdigest()}

        results["rollout"] = measure_rollout(
            client, hub, watch, ids,
            sockets=fleet_proc.sockets, push=push, workdir=work,
            database_url=args.database_url or f"sqlite:///{work / 'hub' / 'hub.db'}",
            fleet=fleet_ps, idle_s=args.idle_s, timeout=args.timeout,
        )  # fmt: skip
        results["bare_transfer"] = measure_bare(hub, model, n)
        results["assign_vs_bare_time"] = round(
            results["assign"]["all_serving_s"] / results["bare_transfer"]["all_received_s"], 1
        )
        results["rollout_after_promotion_vs_bare_time"] = round(
            results["rollout"]["all_serving_after_promotion_s"] / results["bare_transfer"]["all_received_s"],
            1,
        )
    return results


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assign, rollout = results["assign"], results["rollout"]
    out: dict[str, dict[str, Any]] = {
        "assign_hub_cpu_per_device": {
            "value": assign["hub_cpu_ms_per_device"], "goal": TARGET_CPU_MS, "unit": "ms",
        },
        "assign_all_serving": {"value": assign["all_serving_s"], "goal": TARGET_ALL_SERVING_S, "unit": "s"},
    }  # fmt: skip
    for name, key, goal, unit in (
        ("rollout_hub_cpu_per_device", "hub_cpu_ms_per_device", TARGET_CPU_MS, "ms"),
        ("rollout_all_serving_after_promotion", "all_serving_after_promotion_s", TARGET_ALL_SERVING_S, "s"),
        ("gate_reaction", "gate_reaction_s", TARGET_GATE_S, "s"),
        ("devices_offered_after_pause", "offered_after_pause", 0, "devices"),
    ):
        out[name] = {"value": rollout.get(key), "goal": goal, "unit": unit}
    for t in out.values():
        t["met"] = None if t["value"] is None else t["value"] <= t["goal"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    parser.add_argument("--model-mib", type=float, default=1.0, help="model size in MiB (default 1)")
    parser.add_argument("--database-url", help="the hub's database (default: SQLite in the work folder)")
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--telemetry-interval", type=float, default=10.0, help="devices' telemetry period, s")
    parser.add_argument(
        "--local-api-devices", type=int, default=10, help="devices with a local API: the canary (default 10)"
    )
    parser.add_argument(
        "--settle-s", type=float, default=10.0, help="pause after the fleet is online, before measuring, s"
    )
    parser.add_argument("--idle-s", type=float, default=10.0, help="window for the hub's idle CPU, s")
    parser.add_argument("--timeout", type=float, default=600.0, help="per step, s")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.local_api_devices < 1:
        parser.error(
            f"expected --local-api-devices >= 1 (the canary takes traffic), got {args.local_api_devices}"
        )
    if args.devices < 1 or args.model_mib < 1:
        parser.error(f"expected --devices >= 1 and --model-mib >= 1, got {args.devices} and {args.model_mib}")
    results = run(args)
    goals = targets(results)
    print(json.dumps({"machine": _machine(), "versions": _versions(), "results": results, "targets": goals}))
    return 1 if any(t["met"] is False for t in goals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
