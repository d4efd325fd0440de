"""Benchmark the device agent against the bare tools it wraps.

    python bench/agent.py                        # everything, idle CPU over 60 s
    python bench/agent.py --idle-seconds 10      # a quicker idle window
    python bench/agent.py --idle-seconds 10 --settle-seconds 2   # quicker still; RSS read earlier

Figures, each measured beside its baseline in the same run:

- predict overhead: ``Agent.predict`` (input checks, telemetry accounting, the trial
  hook) against a bare onnxruntime ``session.run`` at batch 1, one thread, on the demo
  CNN and MLP (untrained weights: the cost does not depend on them); interleaved
  rounds, medians;
- the local predict API (gRPC on a Unix socket, through ``LocalClient``) against the
  in-process call;
- rollback latency: clients hammer the local API while a bad version (NaN outputs, then
  garbage answers) is on trial; from the instant its gate fails to the first answer the
  previous version gives, with every request's outcome counted (target: none failed);
- RSS of the real agent process (``edgefleet-agent --config ...``) with its defaults (signed
  updates, drift sketching) serving the digits MLP, against a bare process that imports
  numpy, onnxruntime, paho-mqtt and grpc and loads the same model; both read after a few
  predictions and the first telemetry window. Beside it, to say what each part costs: the
  agent unsigned with metrics on, with sketching off, and with the signed-update stack
  loaded (as after its first check; by default the agent imports it only then), and the
  bare process with datasketches imported, and with a gRPC server started;
- idle CPU of those agent processes over ``--idle-seconds`` (the bare process beside them).

The last line of output is one JSON object: machine, versions, results, targets. The
exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.agent import Agent
from edge_agent.client import LocalApiError, LocalClient
from edge_agent.config import AgentConfig, LocalApiConfig, TrialConfig
from edge_agent.fetcher import write_chunks_from
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import common_pb2, desired_pb2

T = TypeVar("T")
NO_TRIAL = TrialConfig(window_requests=0, window_s=0)
UNSIGNED = TrustConfig(require_signed=False)
FLEET = f"bench-{os.getpid()}"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def versions() -> dict[str, str]:
    out = {}
    for dist in ("numpy", "onnxruntime", "grpcio", "paho-mqtt", "aiomqtt", "protobuf", "prometheus-client"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


# -- models ----------------------------------------------------------------------------------------


def export_models(folder: Path) -> dict[str, Path]:
    """The demo MLP and CNN as ONNX (untrained: latency does not depend on the weights)."""
    from model_tools.export import export_onnx
    from model_tools.zoo import build_model

    paths = {}
    for kind in ("mlp", "cnn"):
        path = folder / f"{kind}.onnx"
        export_onnx(build_model(kind, seed=0), path, example=np.zeros((2, 64), np.float32))
        paths[kind] = path
    return paths


def bad_models(folder: Path, good: Path) -> dict[str, Path]:
    """Variants of ``good`` (an [N, 64] -> [N, 10] classifier) that fail a trial gate."""
    import onnx
    from onnx import helper, numpy_helper

    out = {}
    for kind in ("nan", "constant"):
        model = onnx.load(str(good))
        graph = model.graph
        name = graph.output[0].name
        for node in graph.node:
            node.output[:] = [f"{name}_inner" if o == name else o for o in node.output]
        scale = np.float32(np.nan) if kind == "nan" else np.float32(0.0)
        bias = np.zeros(10, np.float32)
        bias[3] = 0.0 if kind == "nan" else 10.0
        graph.initializer.extend(
            [numpy_helper.from_array(np.array(scale), "bad_scale"), numpy_helper.from_array(bias, "bad_bias")]
        )
        graph.node.extend(
            [
                helper.make_node("Mul", [f"{name}_inner", "bad_scale"], ["bad_scaled"]),
                helper.make_node("Add", ["bad_scaled", "bad_bias"], [name]),
            ]
        )
        path = folder / f"bad-{kind}.onnx"
        onnx.save(model, str(path))
        out[kind] = path
    return out


def ref_of(path: Path, version: str) -> common_pb2.ModelRef:
    data = path.read_bytes()
    return common_pb2.ModelRef(
        name="digits",
        version=version,
        format="onnx",
        sha256=hashlib.sha256(data).hexdigest(),
        length=len(data),
    )


class FileFetcher:
    """The hub's artifact service, in memory: serves files by digest."""

    def __init__(self, paths: list[Path]) -> None:
        self._blobs = {hashlib.sha256(p.read_bytes()).hexdigest(): p.read_bytes() for p in paths}

    async def fetch(
        self, ref: common_pb2.ModelRef, dest_partial: Path, offset: int, *, endpoint: str = ""
    ) -> AsyncIterator[int]:
        data = self._blobs[ref.sha256]

        async def chunks() -> AsyncIterator[tuple[int, bytes]]:
            yield offset, data[offset:]

        async for held in write_chunks_from(chunks(), ref, dest_partial, offset, 1 << 30):
            yield held


def desired(ref: common_pb2.ModelRef, generation: int, device: str = "bench") -> desired_pb2.DesiredState:
    return desired_pb2.DesiredState(device_id=device, fleet=FLEET, generation=generation, model=ref)


class LoopThread:
    """An event loop in a thread, so that blocking clients can call an agent served on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


async def committed_agent(
    state_dir: Path,
    model: Path,
    fetch: list[Path],
    *,
    trial: TrialConfig = NO_TRIAL,
    socket: Path | None = None,
) -> Agent:
    """An agent (no broker needed) that serves ``model`` as its committed version."""
    config = AgentConfig.for_simulation(
        device_id="bench", fleet=FLEET, state_dir=state_dir, trial=NO_TRIAL, trust=UNSIGNED
    )
    if socket is not None:
        config = replace(config, local_api=LocalApiConfig(socket=socket))
    agent = Agent(config, fetcher=FileFetcher([model, *fetch]))
    if not await agent.updater.apply(desired(ref_of(model, "good"), 1)):
        raise RuntimeError(f"could not install {model}: {agent.updater.last_failure}")
    agent.updater.steps.trial = trial
    return agent


# -- 1, 2: predict overhead and the local API --------------------------------------------------------


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def interleaved(
    a: Callable[[], object], b: Callable[[], object], calls: int, rounds: int
) -> tuple[float, float]:
    """Median per-call time of ``a`` and ``b`` in µs, measured in alternating rounds."""
    for fn in (a, b):
        per_call_us(fn, max(10, calls // 10))  # warm up
    xs, ys = [], []
    for _ in range(rounds):
        xs.append(per_call_us(a, calls))
        ys.append(per_call_us(b, calls))
    return statistics.median(xs), statistics.median(ys)


def bare_session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def measure_overhead(
    models: dict[str, Path], work: Path, calls: dict[str, int], rounds: int
) -> dict[str, Any]:
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    out: dict[str, Any] = {}
    loop = LoopThread()
    try:
        for kind, path in models.items():
            agent = loop.call(committed_agent(work / f"overhead-{kind}", path, []))
            session = bare_session(path)
            bare, wrapped = interleaved(
                functools.partial(session.run, ["logits"], {"input": x}),
                functools.partial(agent.predict, {"input": x}),
                calls[kind],
                rounds,
            )
            out[kind] = {
                "bare_us": round(bare, 2),
                "agent_us": round(wrapped, 2),
                "overhead_us": round(wrapped - bare, 2),
                "overhead_pct": round(100 * (wrapped - bare) / bare, 2),
            }
            agent.outbox.close()
        # The local API: one gRPC round trip on the Unix socket against the in-process call.
        socket = work / "api.sock"
        agent = loop.call(committed_agent(work / "api", models["mlp"], [], socket=socket))
        assert agent.local_api is not None
        loop.call(agent.local_api.start())
        try:
            with LocalClient(f"unix:{socket}") as client:
                in_process, remote = interleaved(
                    lambda: agent.predict({"input": x}), lambda: client.predict(x), calls["api"], rounds
                )
        finally:
            loop.call(agent.local_api.stop())
        out["local_api_mlp"] = {
            "in_process_us": round(in_process, 2),
            "round_trip_us": round(remote, 2),
            "added_us": round(remote - in_process, 2),
        }
    finally:
        loop.stop()
    return out


# -- 3: rollback under load --------------------------------------------------------------------------


class _Traffic:
    """Client threads calling the local API in a loop; every outcome is recorded."""

    def __init__(
        self,
        *,
        socket: Path,
        samples: np.ndarray,
        clients: int,
        stop: threading.Event,
        lock: threading.Lock,
        log: list[tuple[float, str]],
        failures: list[str],
    ) -> None:
        self.socket, self.samples, self.clients = socket, samples, clients
        self.stop, self.lock, self.log, self.failures = stop, lock, log, failures

    def run(self, seed: int) -> None:
        import grpc

        from edge_agent.tensors import array_to_tensor
        from edgefleet_proto.v1 import inference_pb2, inference_pb2_grpc

        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            i = seed
            while not self.stop.is_set():
                x = self.samples[i % len(self.samples)][None, :]
                request = inference_pb2.PredictRequest(inputs={"input": array_to_tensor(x)})
                try:
                    reply = stub.Predict(request, timeout=10)
                except grpc.RpcError as e:
                    with self.lock:
                        self.failures.append(str(e))
                    continue
                with self.lock:
                    self.log.append((time.monotonic(), reply.model.version))
                i += self.clients


def measure_rollback(good: Path, bad: dict[str, Path], work: Path, clients: int) -> dict[str, Any]:
    samples = np.random.default_rng(1).standard_normal((256, 64)).astype(np.float32)
    trial = TrialConfig(window_requests=5000, window_s=120, min_requests=20)
    out: dict[str, Any] = {}
    for kind, path in bad.items():
        loop = LoopThread()
        socket = work / f"rb-{kind}.sock"
        agent = loop.call(
            committed_agent(work / f"rollback-{kind}", good, [path], trial=trial, socket=socket)
        )
        assert agent.local_api is not None
        loop.call(agent.local_api.start())
        stop = threading.Event()
        log: list[tuple[float, str]] = []  # (monotonic when answered, the version that answered)
        failures: list[str] = []
        lock = threading.Lock()

        traffic = _Traffic(
            socket=socket, samples=samples, clients=clients, stop=stop, lock=lock, log=log, failures=failures
        )
        threads = [threading.Thread(target=traffic.run, args=(n,), daemon=True) for n in range(clients)]
        for t in threads:
            t.start()
        while len(log) < 200:  # traffic flows before the update
            time.sleep(0.01)
        sessions: list[Any] = []
        result = asyncio.run_coroutine_threadsafe(
            agent.updater.apply(desired(ref_of(path, kind), 2)), loop.loop
        )
        while not result.done():
            trial_session = agent.updater.trial
            if trial_session is not None and not sessions:
                sessions.append(trial_session)
            time.sleep(0.0005)  # watching another thread's state
        committed = result.result()
        time.sleep(0.2)  # traffic after the rollback, to count its failures too
        stop.set()
        for t in threads:
            t.join(10)
        loop.call(agent.local_api.stop())
        loop.stop()
        session = sessions[0] if sessions else None
        if committed or session is None or session.failed_at is None:
            raise RuntimeError(f"the {kind} version was not rolled back")
        gate_failed = session.failed_at
        # Answers by the previous version after the gate failed (the tripping request's own, first).
        after = sorted(t for t, version in log if t >= gate_failed and version == "good")
        out[kind] = {
            "gate": session.verdict.gate,
            "requests_judged": session.judge.requests,
            # Garbage that looked like answers went out until the gate failed (NaN never does).
            "answered_by_the_bad_version": sum(1 for _, version in log if version == kind),
            "swap_ms": round(session.rollback_ms or 0.0, 4),
            "gate_to_previous_answer_ms": round((after[0] - gate_failed) * 1000, 3) if after else None,
            "requests": len(log) + len(failures),
            "failed_requests": len(failures),
            "clients": clients,
        }
        agent.outbox.close()
    return out


# -- 4, 5: RSS and idle CPU of real processes ----------------------------------------------------------

# The bare process: the libraries the agent cannot do without, and the same model, a few predictions.
# Extra arguments, for attribution only (the target is against the plain one): "datasketches" imports
# that library too (its own cost, apart from what the agent's sketching does with it); "grpc_server"
# also starts a gRPC server on a Unix socket (what starting gRPC's runtime costs, which importing it
# does not).
FLOOR = textwrap.dedent(
    """
    import sys
    import numpy as np, onnxruntime as ort, paho.mqtt.client, grpc
    if "datasketches" in sys.argv[2:]:
        import datasketches
    if "grpc_server" in sys.argv[2:]:
        from concurrent import futures
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        server.add_insecure_port("unix:" + sys.argv[1] + ".floor.sock")
        server.start()
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(sys.argv[1], sess_options=so, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 64), np.float32)
    for _ in range(20):
        s.run(["logits"], {"input": x})
    print("ready", flush=True)
    sys.stdin.read()
    """
)


# The agent after its first signed-update check: the stack that check imports (python-tuf,
# securesystemslib, cryptography) loaded up front. The agent itself defers those imports until a
# desired state, an artifact or the periodic repository check needs them; this is what it then holds.
TRUST_LOADED = textwrap.dedent(
    """
    import sys
    import edge_agent.trust.repository, edge_agent.trust.transport
    import securesystemslib.signer
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from edge_agent.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@dataclass(frozen=True)
class Variant:
    """One agent process to measure: its config and how it is launched."""

    signed: bool = True
    metrics: bool = False
    sketch: bool = True
    trust_loaded: bool = False


VARIANTS = {
    # What a device runs by default (signed updates, sketching on): the one with the RSS target.
    "default": Variant(),
    "unsigned_with_metrics": Variant(signed=False, metrics=True),
    "sketch_off": Variant(sketch=False),
    "trust_loaded": Variant(trust_loaded=True),
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def maps_file_under(pid: int, package: str) -> bool:
    """Whether the process mapped a file of ``package`` (its compiled modules) from site-packages."""
    return f"/site-packages/{package}/" in Path(f"/proc/{pid}/maps").read_text()


def agent_process(work: Path, model: Path, name: str, variant: Variant) -> subprocess.Popen[bytes]:
    state = work / f"agent-{name}"
    loop = LoopThread()
    try:
        agent = loop.call(committed_agent(state, model, []))
        agent.outbox.close()
    finally:
        loop.stop()
    socket = state / "agent.sock"
    config = state.parent / f"{state.name}.toml"
    config.write_text(
        f'device_id = "bench"\nfleet = "{FLEET}"\nstate_dir = "{state}"\n'
        f'[local_api]\nsocket = "{socket}"\n[metrics]\nport = {_free_port() if variant.metrics else 0}\n'
        f"[trust]\nrequire_signed = {str(variant.signed).lower()}\n"
        f"[sketch]\nenabled = {str(variant.sketch).lower()}\n",
        encoding="utf-8",
    )
    launcher = ["-c", TRUST_LOADED] if variant.trust_loaded else ["-m", "edge_agent"]
    proc = subprocess.Popen(
        [sys.executable, *launcher, "--config", str(config), "--log-level", "ERROR"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with LocalClient(f"unix:{socket}", timeout_s=2) as client:
                if client.info().model_sha256:
                    x = np.zeros((1, 64), np.float32)
                    for _ in range(20):
                        client.predict(x)
                    return proc
        except LocalApiError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"the agent process ({name}) did not serve its model within 60 s")
        time.sleep(0.05)  # polling another process's socket


def floor_process(model: Path, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR, str(model), *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("the floor process did not start")
    return proc


def measure_processes(model: Path, work: Path, idle_s: float, settle_s: float) -> dict[str, Any]:
    floors = {
        "floor": floor_process(model),
        "floor_with_datasketches": floor_process(model, "datasketches"),
        "floor_with_grpc_server": floor_process(model, "grpc_server"),
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, variant in VARIANTS.items():
            procs[name] = agent_process(work, model, name, variant)
        # Start-up work (first connection attempts) settles, and the first telemetry window (10 s)
        # closes, so that sketching has run once before the resident size is read.
        time.sleep(settle_s)
        out: dict[str, Any] = {}
        for name, proc in floors.items():
            out[f"{name}_rss_mib"] = round(rss_kib(proc.pid) / 1024, 1)
        for name, proc in procs.items():
            out[f"agent_{name}_rss_mib"] = round(rss_kib(proc.pid) / 1024, 1)
        # The signed-update stack's compiled core, mapped or not: the check that the default agent
        # deferred it and that the trust_loaded one holds it.
        for name in ("default", "trust_loaded"):
            out[f"{name}_maps_cryptography"] = maps_file_under(procs[name].pid, "cryptography")
        watched = procs | {"floor": floors["floor"]}
        before = {name: cpu_seconds(p.pid) for name, p in watched.items()}
        time.sleep(idle_s)  # the idle window being measured
        after = {name: cpu_seconds(p.pid) for name, p in watched.items()}
        for name, start in before.items():
            out[f"{name}_idle_cpu_pct"] = round(100 * (after[name] - start) / idle_s, 3)
        out["idle_seconds"] = idle_s
        out["settle_seconds"] = settle_s
        return out
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(20)
        for proc in floors.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- main ----------------------------------------------------------------------------------------------


def target(value: float, goal: float, unit: str, *, lower_is_better: bool = True) -> dict[str, Any]:
    return {
        "value": value,
        "goal": goal,
        "unit": unit,
        "met": value <= goal if lower_is_better else value >= goal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU window (default 60)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    parser.add_argument(
        "--clients", type=int, default=4, help="client threads during the rollback (default 4)"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=12.0,
        help="wait after the agents serve, before reading RSS: past the first telemetry window (default 12)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="efb-", dir="/tmp"))
    try:
        print(f"work folder {work}", file=sys.stderr)
        models = export_models(work)
        print("predict overhead ...", file=sys.stderr)
        overhead = measure_overhead(models, work, {"mlp": 20_000, "cnn": 2_000, "api": 2_000}, args.rounds)
        print("rollback under load ...", file=sys.stderr)
        rollback = measure_rollback(models["mlp"], bad_models(work, models["mlp"]), work, args.clients)
        print(f"RSS and idle CPU over {args.idle_seconds:g} s ...", file=sys.stderr)
        processes = measure_processes(models["mlp"], work, args.idle_seconds, args.settle_seconds)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    worst_latency = max(r["gate_to_previous_answer_ms"] or 0.0 for r in rollback.values())
    failed = sum(r["failed_requests"] for r in rollback.values())
    floor = float(processes["floor_rss_mib"])

    def ratio(name: str) -> float:
        return round(float(processes[f"agent_{name}_rss_mib"]) / floor, 3)

    results = {
        "predict": overhead,
        "rollback": rollback,
        "processes": processes,
        **{f"rss_ratio_{name}": ratio(name) for name in VARIANTS},
        # What each part costs, from the processes above (MiB).
        "rss_cost_mib": {
            "sketch_enabled_over_disabled": round(
                processes["agent_default_rss_mib"] - processes["agent_sketch_off_rss_mib"], 1
            ),
            "datasketches_import": round(processes["floor_with_datasketches_rss_mib"] - floor, 1),
            "grpc_runtime_started": round(processes["floor_with_grpc_server_rss_mib"] - floor, 1),
            "signed_update_stack_once_loaded": round(
                processes["agent_trust_loaded_rss_mib"] - processes["agent_default_rss_mib"], 1
            ),
        },
    }
    targets = {
        "predict_overhead_cnn": target(
            overhead["cnn"]["overhead_pct"], 10.0, "% over bare session.run, batch 1"
        ),
        "rollback_latency": target(
            worst_latency, 50.0, "ms from the failed gate to the previous version's answer"
        ),
        "rollback_failed_requests": target(failed, 0, "requests"),
        "rss_vs_floor": target(
            ratio("default"), 1.15, "x the bare numpy+onnxruntime+paho+grpc process (agent defaults)"
        ),
        "idle_cpu": target(processes["default_idle_cpu_pct"], 0.5, "% of one core"),
    }
    print(json.dumps({"machine": machine(), "versions": versions(), "results": results, "targets": targets}))
    missed = sorted(name for name, t in targets.items() if not t["met"])
    if missed:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
