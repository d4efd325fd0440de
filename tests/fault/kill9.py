"""The kill -9 harness: the real agent process, killed at random instants during updates.

Each run publishes a new desired state (a retained message on the real broker), waits a
random time, kills the agent with SIGKILL, notes what its state file said at that instant
(downloading, verifying, loading, trial, or done), and starts it again. The restarted agent
must answer on its local API at once with a model whose artifact verifies (sha256): the
committed one, or the new one once its trial has resumed; and it must then finish the update
on its own.

The hub's artifact service is a test double in a thread (tests/unit/agent/artifact_server.py)
that paces its stream like a slow link, so that kills land in every phase. Used by
tests/fault/test_kill9.py (a few runs, in CI) and bench/kill9.py (200 runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edge_agent.client import LocalApiError, LocalClient
from edge_agent.state import StateFile
from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import common_pb2, desired_pb2
from tests.integration.cloud.mqtt_probe import Probe
from tests.unit.agent.artifact_server import DictArtifactService, start_artifact_server

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


class ArtifactServerThread:
    """The artifact service on its own event loop in a daemon thread."""

    def __init__(self, service: DictArtifactService) -> None:
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
        self.service = DictArtifactService(chunk=64 * 1024, chunk_delay_s=chunk_delay_s)
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
        probe = Probe(*self.broker)
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


if __name__ == "__main__":  # a quick manual run, on a broker of its own: python -m tests.fault.kill9 RUNS
    import tempfile

    from tests._services import Mosquitto

    with tempfile.TemporaryDirectory(prefix="k9-", dir="/tmp") as tmp, Mosquitto() as broker:
        address = (broker.host, broker.port)
        result = run_harness(Path(tmp), address, f"k9-{os.getpid()}", runs=int(sys.argv[1]))
        print(json.dumps(summary(result), indent=2))
