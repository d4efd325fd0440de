"""(b) of ``bench/rollout.py``: a staged rollout promoted to 100%, and a gate's reaction to a bad version.

Both go through the hub's HTTP API (``HubClient.create_rollout``, ``rollout``); whether a device
serves a version is read from its retained status on the broker, so watching costs the hub nothing.
The API is read for the rollout's transitions once every device serves, outside the CPU window.

1. **promotion**: a new version in stages of 10, 50 and 100 percent of the fleet, bake 0, no
   max_rate, the default gates. Reported: from creation and from the last promotion (the
   ``promoted`` transition that made the last stage current, at the hub's clock) until every
   device serves it; the hub's CPU from creation until then, per device updated, and net of the
   idle rate measured just before (the fleet serving the previous version and reporting
   telemetry); every transition.
2. **gate reaction**: a bad version (weights zeroed: it answers one class whatever the input) on
   a canary cohort of the devices with a local API, then 100%, ``on_failure: pause``. The bench
   sends each canary device requests while it has the bad version on trial, so it rolls it back.
   Reported from the hub's database (read-only; the hub keeps writing it): the first
   ``rolled_back`` event's ``received_at`` to the ``paused`` transition's ``at``, and the devices
   offered the version after that instant (there must be none), checked again after a few ticks.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
import psutil
from sqlmodel import col, func, select

from cloud.client.hub import HubClient
from cloud.db import create_db_engine, read_session_factory, read_transaction
from cloud.demo.rollback import make_constant_model
from cloud.models import DeviceEvent, RolloutDevice, RolloutTransition
from edgefleet_proto.v1 import common_pb2, inference_pb2, inference_pb2_grpc

__all__ = ["CpuMark", "measure_rollout"]

# Requests per canary device at most: a device judges after min_requests (20), every few requests.
MAX_REQUESTS = 400
# After the pause, how long the bench keeps checking that nobody else is offered the version.
HOLD_S = 6.0


class Hub(Protocol):
    def cpu_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class CpuMark:
    """CPU seconds so far of the simulated fleet's process and of the whole machine (busy, all)."""

    fleet_s: float
    busy_s: float
    total_s: float

    @staticmethod
    def now(fleet: psutil.Process) -> CpuMark:
        t = fleet.cpu_times()
        m = psutil.cpu_times()
        total = sum(m)
        return CpuMark(float(t.user + t.system), total - m.idle - getattr(m, "iowait", 0.0), total)

    def since(self, start: CpuMark) -> dict[str, float]:
        """What the window cost the fleet, and how busy the machine's cores were (100% = all of them)."""
        total = max(self.total_s - start.total_s, 1e-9)
        return {
            "fleet_cpu_s": round(self.fleet_s - start.fleet_s, 2),
            "machine_busy_pct": round(100 * (self.busy_s - start.busy_s) / total, 1),
        }


class Watch(Protocol):
    """The devices' retained statuses (``bench/rollout.py``'s StatusWatch)."""

    cond: threading.Condition
    active: dict[str, str]
    trial: dict[str, str]
    served: dict[str, set[str]]
    first_serving: dict[str, float]

    def expect(self, sha256: str) -> None: ...
    def wait(self, what: str, count: Callable[[], bool], timeout: float) -> None: ...


class StagedError(RuntimeError):
    """The rollout did not do what the measurement needs; the message says what."""


def _utc(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _as_utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _wall(monotonic: float) -> datetime:
    """A ``time.monotonic()`` instant on the wall clock (the hub's clock is UTC wall time)."""
    return datetime.fromtimestamp(time.time() - (time.monotonic() - monotonic), UTC)


def _poll_rollout(
    client: HubClient, rollout_id: str, done: Callable[[dict[str, Any]], bool], what: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        view = client.rollout(rollout_id)
        if done(view):
            return view
        if time.monotonic() >= deadline:
            raise StagedError(
                f"rollout {view['name']} is {view['state']} at stage {view['stage'] + 1} "
                f"({view['next_action']}) after {timeout:g} s; expected {what}"
            )
        pause.wait(0.25)  # a pause between polls of the hub's API (outside any CPU window)


def _wait_committed(watch: Watch, devices: Sequence[str], timeout: float) -> None:
    """Until none of ``devices`` has a version on trial (a trial under way would meet the next one)."""
    watch.wait(
        f"{len(devices)} devices to end their trials",
        lambda: all(not watch.trial.get(d) for d in devices),
        timeout,
    )


def _transitions(view: Mapping[str, Any], created_wall: datetime) -> list[dict[str, Any]]:
    return [
        {
            "t_s": round((_utc(t["at"]) - created_wall).total_seconds(), 2),
            "from": t["from_state"],
            "to": t["to_state"],
            "event": t["event"],
            "stage": t["stage"],
        }
        for t in view["transitions"]
    ]


def _promotion(
    client: HubClient,
    hub: Hub,
    watch: Watch,
    ids: Sequence[str],
    push: Callable[[str, int], dict[str, Any]],
    *,
    fleet: psutil.Process,
    idle_s: float,
    timeout: float,
) -> dict[str, Any]:
    n = len(ids)
    _wait_committed(watch, ids, timeout)
    model = push("2", 2)
    # The hub's cost of a fleet that serves and reports telemetry, with no update under way.
    cpu0, t0 = hub.cpu_s(), time.monotonic()
    threading.Event().wait(idle_s)  # a measuring window, not a wait for an event
    idle_cpu_per_s = (hub.cpu_s() - cpu0) / (time.monotonic() - t0)
    plan = {
        "name": "bench-staged",
        "target": {"kind": "model", "model": model["name"], "version": model["version"]},
        "stages": [
            {"name": "tenth", "percent": 10, "bake": 0},
            {"name": "half", "percent": 50, "bake": 0},
            {"name": "all", "percent": 100, "bake": 0},
        ],
        "on_failure": "pause",
    }
    watch.expect(model["sha256"])
    cpu0, mark0, t0 = hub.cpu_s(), CpuMark.now(fleet), time.monotonic()
    created = client.create_rollout(json.dumps(plan), content_type="application/json")
    created_s = time.monotonic() - t0
    watch.wait(f"{n} devices to serve {model['version']}", lambda: len(watch.first_serving) >= n, timeout)
    cpu1, mark1, t1 = hub.cpu_s(), CpuMark.now(fleet), time.monotonic()
    view = _poll_rollout(client, created["id"], lambda v: v["state"] == "completed", "completed", timeout)
    created_wall = _utc(view["created_at"])
    promoted = [t for t in view["transitions"] if t["event"] == "promoted"]
    if not promoted:
        raise StagedError(f"rollout {created['id']} completed without a promotion: {view['transitions']}")
    last_promoted = _utc(promoted[-1]["at"])
    all_serving = _wall(t1)
    times = sorted(t - t0 for t in watch.first_serving.values())
    return {
        "devices": n,
        "model": model["name"],
        "version": model["version"],
        "create_request_s": round(created_s, 3),
        "all_serving_after_creation_s": round(t1 - t0, 2),
        "all_serving_after_promotion_s": round((all_serving - last_promoted).total_seconds(), 2),
        "last_promotion_after_creation_s": round((last_promoted - created_wall).total_seconds(), 2),
        "median_serving_s": round(times[n // 2], 2),
        "hub_cpu_s": round(cpu1 - cpu0, 2),
        "hub_cpu_ms_per_device": round((cpu1 - cpu0) * 1000 / n, 2),
        "hub_cpu_ms_per_device_net_of_idle": round((cpu1 - cpu0 - idle_cpu_per_s * (t1 - t0)) * 1000 / n, 2),
        "hub_idle_cpu_pct_serving": round(idle_cpu_per_s * 100, 2),
        **mark1.since(mark0),
        "transitions": _transitions(view, created_wall),
    }


class _Traffic:
    """Requests to each canary device's local API while it has ``bad_sha`` on trial, until it rolls back."""

    def __init__(self, watch: Watch, sockets: Mapping[str, str], bad_sha: str, bad_version: str) -> None:
        self.watch, self.bad_sha, self.bad_version = watch, bad_sha, bad_version
        self.sent: dict[str, int] = {}
        self.failed = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._drive, args=(d, s), name=f"traffic-{d}", daemon=True)
            for d, s in sockets.items()
        ]
        for thread in self._threads:
            thread.start()

    def _drive(self, device_id: str, socket_path: str) -> None:
        rng = np.random.default_rng(int(hashlib.sha256(device_id.encode()).hexdigest()[:8], 16))
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            with self.watch.cond:
                self.watch.cond.wait_for(
                    lambda: self.stop.is_set() or self.watch.active.get(device_id) == self.bad_sha
                )
            seen_bad = False
            for _ in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                x = rng.standard_normal((1, 64), dtype=np.float32)
                tensor = common_pb2.Tensor(dtype="float32", shape=[1, 64], data=x.tobytes())
                try:
                    reply = stub.Predict(inference_pb2.PredictRequest(inputs={"": tensor}), timeout=10)
                except grpc.RpcError:
                    with self._lock:
                        self.failed += 1
                    continue
                with self._lock:
                    self.sent[device_id] = self.sent.get(device_id, 0) + 1
                seen_bad = seen_bad or reply.model.version == self.bad_version
                if seen_bad and reply.model.version != self.bad_version:
                    return  # rolled back: the previous version answers again

    def close(self) -> None:
        self.stop.set()
        with self.watch.cond:
            self.watch.cond.notify_all()
        for thread in self._threads:
            thread.join(15)


def _database_facts(database_url: str, rollout_id: str, version: str) -> dict[str, Any]:
    engine = create_db_engine(database_url)
    try:
        with read_transaction(read_session_factory(engine)) as session:
            first_rollback = session.exec(
                select(func.min(DeviceEvent.received_at)).where(
                    DeviceEvent.kind == "rolled_back", DeviceEvent.model_version == version
                )
            ).one()
            paused = session.exec(
                select(RolloutTransition.at, RolloutTransition.event, RolloutTransition.reason)
                .where(RolloutTransition.rollout_id == rollout_id, RolloutTransition.to_state == "paused")
                .order_by(col(RolloutTransition.seq))
            ).first()
            offered = list(
                session.exec(
                    select(RolloutDevice.device_id, RolloutDevice.offered_at).where(
                        RolloutDevice.rollout_id == rollout_id, col(RolloutDevice.offered_at).is_not(None)
                    )
                ).all()
            )
    finally:
        engine.dispose()
    if first_rollback is None or paused is None:
        raise StagedError(f"no rolled_back event ({first_rollback}) or no pause ({paused}) was stored")
    paused_at, rolled_at = _as_utc(paused.at), _as_utc(first_rollback)
    late = sorted(d for d, at in offered if at is not None and _as_utc(at) > paused_at)
    return {
        "first_rollback_received_at": rolled_at.isoformat(),
        "paused_at": paused_at.isoformat(),
        "pause_event": paused.event,
        "pause_reason": paused.reason,
        "gate_reaction_s": round((paused_at - rolled_at).total_seconds(), 3),
        "offered": len(offered),
        "offered_after_pause": late,
    }


def _gate_reaction(
    client: HubClient,
    watch: Watch,
    ids: Sequence[str],
    sockets: Mapping[str, str],
    push_bad: Callable[[str], dict[str, Any]],
    *,
    database_url: str,
    timeout: float,
) -> dict[str, Any]:
    canary = sorted(d for d in sockets if d in set(ids))
    if not canary:
        raise StagedError("no device has a local API to take traffic: expected --local-api-devices >= 1")
    _wait_committed(watch, canary, timeout)
    bad = push_bad("2-bad")
    client.create_cohort("bench-canary", devices=canary, description="devices that take traffic")
    plan = {
        "name": "bench-bad",
        "target": {"kind": "model", "model": bad["name"], "version": bad["version"]},
        "stages": [
            {"name": "canary", "cohort": "bench-canary", "bake": 60},
            {"name": "all", "percent": 100, "bake": 0},
        ],
        "on_failure": "pause",
    }
    watch.expect(bad["sha256"])
    traffic = _Traffic(watch, {d: sockets[d] for d in canary}, bad["sha256"], bad["version"])
    try:
        created = client.create_rollout(json.dumps(plan), content_type="application/json")
        view = _poll_rollout(
            client, created["id"], lambda v: v["state"] in ("paused", "aborting"), "paused", timeout
        )
        # Ticks go on while it is paused: give them time to offer someone, which they must not.
        threading.Event().wait(HOLD_S)
    finally:
        traffic.close()
    facts = _database_facts(database_url, created["id"], bad["version"])
    outside = sorted(watch.served.get(bad["sha256"], set()) - set(canary))
    client.rollout_action(created["id"], "abort", reason="the bench is done with the bad version")
    return {
        "canary_devices": len(canary),
        "version": bad["version"],
        "requests_sent": sum(traffic.sent.values()),
        "failed_requests": traffic.failed,
        **facts,
        "served_outside_canary": outside,
        "state_after": view["state"],
    }


def measure_rollout(
    client: HubClient,
    hub: Hub,
    watch: Watch,
    ids: Sequence[str],
    *,
    sockets: Mapping[str, str],
    push: Callable[[str, int], dict[str, Any]],
    workdir: Path,
    database_url: str,
    fleet: psutil.Process,
    idle_s: float,
    timeout: float,
) -> dict[str, Any]:
    """(b): the promotion run, then the gate-reaction run; see the module's docstring.

    ``push(version, seed)`` registers a new model version and returns name, version and sha256.
    """
    promotion = _promotion(client, hub, watch, ids, push, fleet=fleet, idle_s=idle_s, timeout=timeout)

    def push_bad(version: str) -> dict[str, Any]:
        name = promotion["model"]
        good = next(m for m in client.list_models(name) if m["version"] == promotion["version"])
        path = workdir / f"{name}-{version}.onnx"
        # The good graph with its weights zeroed (bench/rollout.py writes each version to v{version}.onnx):
        # a retrain gone bad, which each device judges against the good version's answers.
        good_path = workdir / f"v{promotion['version']}.onnx"
        make_constant_model(
            good["inputs"], good["outputs"], path, like=good_path if good_path.is_file() else None
        )
        client.push_model(path, name=name, version=version)
        return {"name": name, "version": version, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    gate = _gate_reaction(client, watch, ids, sockets, push_bad, database_url=database_url, timeout=timeout)
    return {
        "promotion": promotion,
        "gate": gate,
        "hub_cpu_ms_per_device": promotion["hub_cpu_ms_per_device"],
        "all_serving_after_promotion_s": promotion["all_serving_after_promotion_s"],
        "gate_reaction_s": gate["gate_reaction_s"],
        "offered_after_pause": len(gate["offered_after_pause"]),
    }
