"""A 200 MiB model from push to committed: a real hub (SQLite, HTTP, gRPC, signed updates), the real
Mosquitto broker, and one agent in its own process (``edge_agent simulate``) that takes traffic.

v1 is a small MLP; v2 is a 200 MiB model of another architecture (made in the test's folder, never
committed). The device downloads v2 in chunks into its store, verifies it (length, sha256, the signed
repository) without reading it whole, loads it beside v1 for the trial, judges it under the
assignment's policy (a different graph: its own budget, not v1's latency) and commits it. The agent
process's peak resident memory stays below its resident memory before the push plus twice the model:
a trial holds both versions, and a download or a hash that held the file would add a third copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from sqlmodel import col, select

from cloud.demo.run import FleetProcess, predict_via_local_api, start_fleet
from cloud.demo.signing import provision_root
from cloud.hub import Hub
from cloud.models import Device, DeviceEvent, DeviceState
from cloud.settings import Settings
from cloud.transport.broker import BrokerHandle
from cloud.transport.retained import clear_fleet_retained
from edge_agent.sim import device_ids
from tests.integration.cloud.mqtt_probe import wait_for
from tests.large_model import MiB, make_large_onnx

pytestmark = pytest.mark.integration

MODEL = "big-mlp"
TIMEOUT_S = 180
FEATURES = 64


@pytest.fixture
def hub(short_tmp: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=short_tmp / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


@pytest.fixture
def device(
    hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> Iterator[FleetProcess]:
    assert hub.context is not None and hub.context.signing is not None
    root = provision_root(hub.context.signing.repo.root_bytes(), short_tmp)
    proc = start_fleet(
        devices=1,
        fleet=fleet_name,
        broker=BrokerHandle(mqtt_broker[0], mqtt_broker[1], "5", embedded=False),
        grpc_endpoint=hub.grpc_endpoint,
        state_root=short_tmp / "fleet",
        local_api_devices=1,
        telemetry_interval=1.0,
        timeout=TIMEOUT_S,
        extra_args=[
            "--trust-root",
            str(root),
            "--trust-http-url",
            f"{hub.api_url}/tuf",
            "--trial-window",
            "600",
        ],
    )
    try:
        yield proc
    finally:
        proc.stop()
        clear_fleet_retained(mqtt_broker[0], mqtt_broker[1], fleet_name)


def proc_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def event(hub: Hub, kind: str, version: str) -> DeviceEvent | None:
    assert hub.context is not None
    with hub.context.sessions() as s:
        return s.exec(
            select(DeviceEvent).where(DeviceEvent.kind == kind, DeviceEvent.model_version == version)
        ).first()


def outcome(hub: Hub, version: str) -> DeviceEvent | None:
    return event(hub, "committed", version) or event(hub, "rolled_back", version)


def push_and_assign(api: httpx.Client, path: Path, version: str, device: str, policy: dict[str, Any]) -> None:
    with path.open("rb") as f:  # streamed from the file, as `fleet push` does
        r = api.post(
            "/api/v1/models",
            data={"name": MODEL, "version": version},
            files={"file": (path.name, f, "application/octet-stream")},
        )
    assert r.status_code in (200, 201), r.text
    r = api.post(
        "/api/v1/assignments",
        json={"model": MODEL, "version": version, "devices": [device], "trial_policy": policy},
    )
    assert r.status_code == 200, r.text


def traffic(socket_path: str, stop: threading.Event) -> int:
    """Requests until ``stop``: the trial judges live traffic."""
    rng = np.random.default_rng(5)
    sent = 0
    while not stop.is_set():
        try:
            predict_via_local_api(socket_path, rng.normal(size=(1, FEATURES)).astype(np.float32))
            sent += 1
        except grpc.RpcError:
            continue  # between versions, or the model still loading
    return sent


def test_a_200_mib_model_goes_from_push_to_committed_with_bounded_device_memory(
    hub: Hub, device: FleetProcess, short_tmp: Path
) -> None:
    started = time.monotonic()
    ctx = hub.context
    assert ctx is not None
    (device_id,) = device_ids(1)
    small = make_large_onnx(short_tmp / "small.onnx", target_bytes=MiB, layers=1)
    big = make_large_onnx(short_tmp / "big.onnx", target_bytes=200 * MiB, layers=2)
    big_bytes = big.stat().st_size

    def online() -> bool:
        with ctx.sessions() as s:
            row = s.get(Device, device_id)
            return row is not None and row.state == DeviceState.ONLINE

    wait_for(online, timeout=TIMEOUT_S)
    headers = {"Authorization": f"Bearer {hub.admin_token}"}
    with httpx.Client(base_url=hub.api_url, headers=headers, timeout=300) as api:
        # v1: its trial ends on time, with or without traffic.
        push_and_assign(api, small, "1", device_id, {"window_s": 1})
        wait_for(lambda: event(hub, "committed", "1"), timeout=TIMEOUT_S)

        pid = device.proc.pid
        baseline_kib = proc_kib(pid, "VmRSS")
        # The peak from here on: VmHWM restarts from the current RSS.
        Path(f"/proc/{pid}/clear_refs").write_text("5")

        stop = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(traffic, device.sockets[device_id], stop)
            try:
                push_and_assign(api, big, "2", device_id, {"window_requests": 24, "min_requests": 16})
                decided = wait_for(lambda: outcome(hub, "2"), timeout=TIMEOUT_S)
            finally:
                stop.set()
            assert sent.result() > 0
    assert decided.kind == "committed", decided.reason
    peak_kib = proc_kib(pid, "VmHWM")

    trial = event(hub, "trial_started", "2")
    assert trial is not None
    assert trial.details["architecture"] == "changed"
    assert trial.details["policy_source"] == "assignment"
    assert trial.details["latency_ratio"] == 0.0  # never judged against v1's latency
    download = event(hub, "download_completed", "2")
    assert download is not None and download.details["bytes"] == big_bytes

    limit_kib = baseline_kib + 2 * big_bytes // 1024
    print(
        f"\n200 MiB model: push to committed in {time.monotonic() - started:.1f} s (test total); agent RSS "
        f"before {baseline_kib // 1024} MiB, peak {peak_kib // 1024} MiB, limit {limit_kib // 1024} MiB"
    )
    assert peak_kib < limit_kib, (
        f"the agent's peak RSS {peak_kib} KiB is above its RSS before the push ({baseline_kib} KiB) "
        f"plus twice the model ({2 * big_bytes // 1024} KiB)"
    )
    with ctx.sessions() as s:
        versions = s.exec(
            select(DeviceEvent.model_version)
            .where(DeviceEvent.kind == "rolled_back")
            .order_by(col(DeviceEvent.id))
        ).all()
    assert versions == []
