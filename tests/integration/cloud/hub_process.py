"""A real ``fleet hub`` process for the tests that measure or configure a whole hub: start, push, fetch."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from cloud.transport.grpc_server import MAX_CHUNK
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc
from tests._services.process import free_port, log_tail

START_TIMEOUT_S = 90.0
# The largest chunk a client may ask for: the hub's worst case (the agent asks for 256 KiB).
FETCH_CHUNK = MAX_CHUNK


@dataclass
class HubProcess:
    process: subprocess.Popen[bytes]
    api_url: str
    grpc_target: str
    token: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def status_kib(self, field: str) -> int:
        """A ``/proc/<pid>/status`` figure in KiB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"/proc/{self.pid}/status has no {field}")

    def reset_peak(self) -> None:
        """Start VmHWM again from the current RSS (clear_refs 5), so the peak measures what follows."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def push(self, path: Path, name: str, version: str) -> httpx.Response:
        with path.open("rb") as f, httpx.Client(timeout=300) as client:
            return client.post(
                f"{self.api_url}/api/v1/models",
                headers={"Authorization": f"Bearer {self.token}"},
                data={"name": name, "version": version},
                files={"file": (path.name, f, "application/octet-stream")},
            )

    def fetch_sha256(self, sha256: str) -> str:
        """Download an artifact over gRPC, hashing it as it comes; its sha256."""
        digest = hashlib.sha256()
        with grpc.insecure_channel(
            self.grpc_target, options=[("grpc.max_receive_message_length", 4 * FETCH_CHUNK)]
        ) as channel:
            stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
            for chunk in stub.Fetch(artifact_pb2.FetchRequest(sha256=sha256, chunk_size=FETCH_CHUNK)):
                digest.update(chunk.data)
        return digest.hexdigest()

    def fetch_concurrently(self, sha256: str, clients: int) -> list[str]:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            return list(pool.map(self.fetch_sha256, [sha256] * clients))


def _wait_healthy(process: subprocess.Popen[bytes], api_url: str, log: Path) -> None:
    # Polled: a starting process offers nothing to wait on but its port answering.
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the hub exited with {process.returncode}:\n{log_tail(log, 40)}")
        try:
            if httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the hub did not answer /healthz within {START_TIMEOUT_S} s:\n{log_tail(log, 40)}")


class _PortTakenError(AssertionError):
    """The free port picked for the hub was taken by another process before the hub bound it."""


def _start(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    api_port, grpc_port = free_port(), free_port()
    env = {**env, "EDGEFLEET_API_PORT": str(api_port), "EDGEFLEET_GRPC_PORT": str(grpc_port)}
    log = data_dir.parent / f"{data_dir.name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloud.cli", "hub"], env=env, stdout=out, stderr=out
        )
    api_url = f"http://127.0.0.1:{api_port}"
    try:
        _wait_healthy(process, api_url, log)
    except AssertionError as e:
        _stop(process)
        if "is in use" in str(e):
            raise _PortTakenError(str(e)) from e
        raise
    return process, api_url, f"127.0.0.1:{grpc_port}", log


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


@contextmanager
def running_hub(
    data_dir: Path, mqtt_broker: tuple[str, int], fleet: str, extra_env: Mapping[str, str] | None = None
) -> Iterator[HubProcess]:
    """A hub process on SQLite in ``data_dir``, with the test run's broker; stopped on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(
        EDGEFLEET_DATA_DIR=str(data_dir),
        EDGEFLEET_FLEET=fleet,
        EDGEFLEET_MQTT_HOST=mqtt_broker[0],
        EDGEFLEET_MQTT_PORT=str(mqtt_broker[1]),
        **(extra_env or {}),
    )
    # Other test runs on the machine pick free ports too: a port taken between the pick and the
    # hub's bind is tried again with new ones.
    for attempt in range(3):
        try:
            process, api_url, grpc_target, log = _start(data_dir, env)
            break
        except _PortTakenError:
            if attempt == 2:
                raise
    try:
        token = (data_dir / "admin.token").read_text().strip()
        yield HubProcess(process, api_url, grpc_target, token, log)
    finally:
        _stop(process)
