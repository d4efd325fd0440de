"""The kill -9 harness: the real agent process, killed at random instants during updates.

Each run publishes a new desired state (a retained message on the real broker), waits a
random time, kills the agent with SIGKILL, notes what its state file said at that instant
(downloading, verifying, loading, trial, or done), and starts it again. The restarted agent
must answer on its local API at once with a model whose artifact verifies (sha256): the
committed one, or the new one once its trial has resumed; and it must then finish the update
on its own.

``bench/kill9.py`` runs it 200 times; ``tests/fault/test_kill9.py`` runs a few in CI, through
``tests/fault/kill9.py``. It lives under bench/ because a benchmark must run from a clone
without the test suite (bench/ never imports tests/), while a test may import bench/; it is
not agent code, so it does not ship in ``edge_agent``. For the same reason it carries its
own two small doubles: the hub's artifact service, paced like a slow link so that kills land
in every phase (:class:`PacedArtifactService`), and a broker client that publishes the
desired state and clears what it retained (:class:`RetainedPublisher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import paho.mqtt.client as paho
from onnx import TensorProto, helper, numpy_helper
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.client import LocalApiError, LocalClient
from edge_agent.state import StateFile
from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc, common_pb2, desired_pb2

__all__ = ["Harness", "Outcome", "PacedArtifactService", "RetainedPublisher", "Run", "run_harness", "summary"]

DEVICE = "k9-dev"
HIDDEN = 60_000  # ~1.4 MB of weights: a download that takes a while on the paced link


def big_model(scale: float) -> bytes:
    """x [N, 4] -> relu(x @ W1) @ W2 -> y [N, 2], with enough weights to be worth a download."""
    rng = np.random.default_rng(int(scale * 1000))
    w1 = (rng.standard_normal((4, HIDDEN)) * scale).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, 2)) / HIDDEN).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["y"]),
        ],
        "k9",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class PacedArtifactService(artifact_pb2_grpc.ArtifactServiceServicer):
    """The hub's ArtifactService for the harness: artifacts from memory, one chunk per ``chunk_delay_s``."""

    def __init__(self, *, chunk: int, chunk_delay_s: float) -> None:
        self.blobs: dict[str, bytes] = {}
        self.chunk = chunk
        self.chunk_delay_s = chunk_delay_s

    def add(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        self.blobs[key] = data
        return key

    async def Stat(  # noqa: N802  (the names are the RPCs')
        self, request: artifact_pb2.StatRequest, context: Any
    ) -> artifact_pb2.ArtifactInfo:
        data = self.blobs.get(request.sha256)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no artifact {request.sha256}")
            raise AssertionError("abort returns only by raising")
        return artifact_pb2.ArtifactInfo(sha256=request.sha256, length=len(data))

    async def FetchMetadata(  # noqa: N802
        self, request: artifact_pb2.MetadataRequest, context: Any
    ) -> AsyncIterator[artifact_pb2.ArtifactChunk]:
        # The harness runs the agent with unsigned updates: there is no repository metadata.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no signed repository in the kill -9 harness")
        yield artifact_pb2.ArtifactChunk()  # unreachable; makes this an async generator like Fetch

    async def Fetch(  # noqa: N802
        self, request: artifact_pb2.FetchRequest, context: Any
    ) -> AsyncIterator[artifact_pb2.ArtifactChunk]:
        data = self.blobs.get(request.sha256)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no artifact {request.sha256}")
            return
        if request.offset > len(data):
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} > {len(data)}")
        pos = request.offset
        while pos < len(data):
            piece = data[pos : pos + self.chunk]
            yield artifact_pb2.ArtifactChunk(offset=pos, data=piece, total_length=len(data))
            pos += len(piece)
            await asyncio.sleep(self.chunk_delay_s)  # the link's pace, not a wait for an event


class RetainedPublisher:
    """One MQTT connection that publishes at QoS 1 and clears every topic it retained on close."""

    def __init__(self, host: str, port: int) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"k9-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        connected = threading.Event()
        self.client.on_connect = lambda *_a: connected.set()
        self._retained: set[str] = set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not connected.wait(10):
            self.client.loop_stop()
            raise RuntimeError(f"cannot connect to the MQTT broker at {host}:{port}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        if not info.is_published():
            raise RuntimeError(f"the broker did not acknowledge a publish on {topic} within 10 s")
        if retain and payload:
            self._retained.add(topic)

    def close(self) -> None:
        for topic in sorted(self._retained):
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        self.client.disconnect()
        self.client.loop_stop()


async def start_artifact_server(service: PacedArtifactService) -> tuple[grpc.aio.Server, str]:
    """Serve ``service`` on a free loopback port; returns (server, "127.0.0.1:port")."""
    server = grpc.aio.server()
    artifact_pb2_grpc.add_ArtifactServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


class ArtifactServerThread:
    """The artifact service on its own event loop in a daemon thread."""

    def __init__(self, service: PacedArtifactService) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._service = service
        self.endpoint = ""
        self._thread = threading.Thread(target=self._run, name="artifact-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the artifact server did not start within 20 s")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server, self.endpoint = await start_artifact_server(self._service)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Run:
    delay_s: float
    phase: str  # what the state file said when the agent was killed
    restarted_with: str  # version that answered right after the restart
    restart_s: float  # from the restart to the first answer
    completed_s: float  # from the restart to the new version committed


@dataclass
class Outcome:
    runs: list[Run] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def phases(self) -> Counter[str]:
        return Counter(r.phase for r in self.runs)


class Harness:
    def __init__(
        self,
        root: Path,
        broker: tuple[str, int],
        fleet: str,
        *,
        models: int = 3,
        chunk_delay_s: float = 0.02,
        trial_s: float = 0.3,
    ) -> None:
        self.root = root
        self.broker = broker
        self.fleet = fleet
        self.topics = DeviceTopics(fleet, DEVICE)
        self.refs: list[common_pb2.ModelRef] = []
        self.service = PacedArtifactService(chunk=64 * 1024, chunk_delay_s=chunk_delay_s)
        for i in range(models):
            data = big_model(1.0 + i)
            self.service.add(data)
            self.refs.append(
                common_pb2.ModelRef(
                    name="k9",
                    version=str(i + 1),
                    format="onnx",
                    sha256=hashlib.sha256(data).hexdigest(),
                    length=len(data),
                )
            )
        self.trial_s = trial_s
        self.state_dir = root / "state"
        self.socket = root / "agent.sock"
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Harness]:
        server = ArtifactServerThread(self.service)
        probe = RetainedPublisher(*self.broker)
        self.probe = probe
        self._write_config(server.endpoint)
        try:
            yield self
        finally:
            self.kill()
            probe.publish(self.topics.desired, b"", retain=True)
            probe.publish(self.topics.status, b"", retain=True)
            probe.close()
            server.stop()

    def _write_config(self, endpoint: str) -> None:
        host, port = self.broker
        self.config = self.root / "agent.toml"
        self.config.write_text(
            f'device_id = "{DEVICE}"\nfleet = "{self.fleet}"\nstate_dir = "{self.state_dir}"\n'
            f'[mqtt]\nhost = "{host}"\nport = {port}\n'
            f'[hub]\ngrpc_endpoint = "{endpoint}"\n'
            f'[local_api]\nsocket = "{self.socket}"\n'
            "[telemetry]\ninterval_s = 60\n"
            "[backoff]\ninitial_s = 0.05\nmax_s = 0.5\n"
            f"[trial]\nwindow_requests = 0\nwindow_s = {self.trial_s}\n"
            "[trust]\nrequire_signed = false\n",
            encoding="utf-8",
        )

    # -- the agent process -----------------------------------------------------------------------

    def start(self) -> None:
        log = (self.root / "agent.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "--config", str(self.config), "--log-level", "WARNING"],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def answering(self, timeout: float = 30.0) -> str | None:
        """sha256 of the model the local API answers with, once it answers (None: no model)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the agent exited with {self.proc.returncode}; see {self.root / 'agent.log'}"
                )
            try:
                with LocalClient(f"unix:{self.socket}", timeout_s=2) as client:
                    return client.info().model_sha256
            except LocalApiError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the agent did not answer within {timeout} s") from None
            time.sleep(0.02)  # polling another process's socket until it listens

    def committed(self, ref: common_pb2.ModelRef, timeout: float = 30.0) -> None:
        """Wait until the state file says ``ref`` is committed and nothing is in progress."""
        deadline = time.monotonic() + timeout
        while True:
            saved = StateFile(self.state_dir / "state.json").peek()
            if saved is not None and saved.active == ref and saved.update is None and saved.trial is None:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{ref.version} was not committed within {timeout} s; state: {saved}")
            time.sleep(0.02)  # polling another process's state file

    def publish(self, ref: common_pb2.ModelRef) -> None:
        self.generation += 1
        desired = desired_pb2.DesiredState(
            device_id=DEVICE, fleet=self.fleet, generation=self.generation, model=ref
        )
        self.probe.publish(self.topics.desired, desired.SerializeToString(), retain=True)

    def phase(self) -> str:
        try:
            saved = StateFile(self.state_dir / "state.json").peek()
        except ValueError as e:  # a torn file would be a bug: the write is atomic
            return f"unreadable: {e}"
        if saved is None or saved.update is None:
            return "idle"
        return saved.update.state

    def verified(self, sha256: str) -> bool:
        path = self.state_dir / "artifacts" / "sha256" / sha256
        return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256

    # -- runs ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Start the agent and commit the first version."""
        self.start()
        self.answering()
        self.publish(self.refs[0])
        self.committed(self.refs[0])

    def one_run(self, rng: random.Random, max_delay_s: float) -> Run:
        current = self.refs[(self.generation - 1) % len(self.refs)]
        target = self.refs[self.generation % len(self.refs)]
        self.publish(target)
        delay = rng.uniform(0.0, max_delay_s)
        time.sleep(delay)  # the random instant of the kill, not a wait for anything
        self.kill()
        phase = self.phase()
        restarted = time.monotonic()
        self.start()
        sha = self.answering()
        answered = time.monotonic() - restarted
        # The committed model, or (once the trial resumed, which can be within milliseconds) the new one.
        if sha is None or sha not in (current.sha256, target.sha256):
            raise AssertionError(f"after a kill in {phase} the agent answered with {sha}")
        if not self.verified(sha):
            raise AssertionError(f"after a kill in {phase} the artifact of {sha} does not verify")
        self.committed(target)
        version = next(r.version for r in self.refs if r.sha256 == sha)
        return Run(delay, phase, version, answered, time.monotonic() - restarted)


def run_harness(
    root: Path, broker: tuple[str, int], fleet: str, *, runs: int, seed: int = 0, max_delay_s: float = 1.0
) -> Outcome:
    """``runs`` kill -9 runs; the first failure stops it (kept in ``failures``)."""
    rng = random.Random(seed)
    outcome = Outcome()
    harness = Harness(root, broker, fleet)
    with harness.running():
        harness.prepare()
        for i in range(runs):
            try:
                outcome.runs.append(harness.one_run(rng, max_delay_s))
            except AssertionError as e:
                outcome.failures.append(f"run {i + 1}: {e}")
                break
    return outcome


def summary(outcome: Outcome) -> dict[str, object]:
    runs = outcome.runs
    return {
        "runs": len(runs),
        "failures": outcome.failures,
        "phases_at_kill": dict(sorted(outcome.phases.items())),
        "restart_to_answer_s_max": round(max((r.restart_s for r in runs), default=0.0), 3),
        "restart_to_commit_s_max": round(max((r.completed_s for r in runs), default=0.0), 3),
    }
