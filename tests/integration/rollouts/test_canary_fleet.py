"""A bad version stops at its canary: 50 real agents (``edge_agent simulate`` as a child process) on
the real broker, a hub with its rollout engine, and a version whose weights are zeroed (always
answers 3). The canary devices take traffic, judge it on trial and roll it back on the divergence
gate; the hub's gates see the rollbacks, abort the rollout at once and give the offered devices
their previous version back. The rest of the fleet is never offered it."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from sqlmodel import col, func, select

from cloud.demo.rollback import make_constant_model
from cloud.demo.run import FleetProcess, predict_via_local_api, start_fleet
from cloud.demo.signing import provision_root
from cloud.hub import Hub
from cloud.models import Device, DeviceEvent, DeviceState, Rollout, RolloutDevice, RolloutTransition
from cloud.rollouts import service
from cloud.rollouts.plan import RolloutPlan
from cloud.services import assignments, cohorts, registry
from cloud.settings import Settings
from cloud.transport.broker import BrokerHandle
from cloud.transport.retained import clear_fleet_retained
from edge_agent.sim import device_ids
from tests.integration.cloud.mqtt_probe import wait_for

pytestmark = pytest.mark.integration

DEVICES = 50
CANARY = 5  # ring=canary: the first 10% of the devices, the ones with a local API (they take traffic)
MODEL, GOOD, BAD = "digits", "1.0.0", "1.0.0-bad"
FEATURES, CLASSES = 64, 10
TRIAL_WINDOW_S = 15
MAX_REQUESTS = 300  # per device: the trial judges after min_requests (20), every 8th request
TIMEOUT_S = 120


def _classifier(path: Path) -> None:
    """A linear classifier x[batch, 64] -> logits[batch, 10] whose answers spread over the classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(FEATURES, CLASSES)).astype(np.float32), "W"),
            numpy_helper.from_array(np.zeros(CLASSES, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def hub(short_tmp: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=short_tmp / "hub",
        fleet=fleet_name,
        mqtt_host=host,
        mqtt_port=port,
        api_port=0,
        grpc_port=0,
        rollout_tick_s=0.5,
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


@pytest.fixture
def fleet(hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path) -> Iterator[FleetProcess]:
    assert hub.context is not None and hub.context.signing is not None
    root = provision_root(hub.context.signing.repo.root_bytes(), short_tmp)
    proc = start_fleet(
        devices=DEVICES,
        fleet=fleet_name,
        broker=BrokerHandle(mqtt_broker[0], mqtt_broker[1], "5", embedded=False),
        grpc_endpoint=hub.grpc_endpoint,
        state_root=short_tmp / "fleet",
        local_api_devices=CANARY,
        telemetry_interval=1.0,
        timeout=TIMEOUT_S,
        extra_args=[
            "--label-mix", "ring=canary:10,ring=main:90",
            "--trial-window", str(TRIAL_WINDOW_S),
            "--trust-root", str(root),
            "--trust-http-url", f"{hub.api_url}/tuf",
        ],
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.stop()
        clear_fleet_retained(mqtt_broker[0], mqtt_broker[1], fleet_name)


def _events(hub: Hub, kind: str, version: str) -> set[str]:
    assert hub.context is not None
    with hub.context.sessions() as s:
        query = select(DeviceEvent.device_id).where(
            DeviceEvent.kind == kind, DeviceEvent.model_version == version
        )
        return set(s.exec(query).all())


def _drive_traffic(socket_path: str, stop: threading.Event) -> list[str]:
    """Requests until the device answers with the good version again after the bad one, or until
    ``stop`` (the rollout is aborting: what follows is the restore, which the test checks by status)."""
    rng = np.random.default_rng(11)
    versions: list[str] = []
    for _ in range(MAX_REQUESTS):
        if stop.is_set():
            break
        try:
            _, version = predict_via_local_api(socket_path, rng.normal(size=(1, FEATURES)).astype(np.float32))
        except grpc.RpcError:
            continue
        versions.append(version)
        if version == GOOD and BAD in versions:
            break
    return versions


def test_a_bad_version_stops_at_its_canary_and_the_canary_gets_its_previous_version_back(
    hub: Hub, fleet: FleetProcess, short_tmp: Path
) -> None:
    ctx = hub.context
    assert ctx is not None
    fleet_name = ctx.settings.fleet
    every = device_ids(DEVICES)
    canary = sorted(fleet.sockets)
    assert len(canary) == CANARY

    def count(*where: object) -> int:
        with ctx.sessions() as s:
            return int(s.exec(select(func.count()).select_from(Device).where(*where)).one())  # type: ignore[arg-type]

    wait_for(lambda: count(Device.state == DeviceState.ONLINE) == DEVICES, timeout=TIMEOUT_S)

    # Before the rollout every device runs and committed the good version.
    good_path, bad_path = short_tmp / "good.onnx", short_tmp / "bad.onnx"
    _classifier(good_path)
    with ctx.sessions() as s:
        good = registry.register_model(s, ctx.store, MODEL, GOOD, io.BytesIO(good_path.read_bytes()))
        # A retrain gone bad: the good graph with its weights zeroed, judged against the good answers.
        make_constant_model(good.inputs, good.outputs, bad_path, like=good_path)
        registry.register_model(s, ctx.store, MODEL, BAD, io.BytesIO(bad_path.read_bytes()))
        assignments.assign(
            s, ctx.publisher, MODEL, GOOD, device_ids=every, fleet=fleet_name,
            artifact_endpoint=ctx.artifact_endpoint, signing=ctx.signing,
        )  # fmt: skip
    wait_for(lambda: _events(hub, "committed", GOOD) == set(every), timeout=TIMEOUT_S)

    with ctx.sessions() as s:
        cohorts.create_cohort(s, fleet=fleet_name, name="canary", selector="ring=canary")
        assert (
            sorted(s.exec(cohorts.member_ids_query(fleet_name, cohorts.get_cohort(s, fleet_name, "canary"))))
            == canary
        )
        plan = RolloutPlan.model_validate(
            {
                "name": "bad-canary",
                "target": {"model": MODEL, "version": BAD},
                "stages": [
                    {"name": "canary", "cohort": "canary", "bake": "10m"},
                    {"name": "everyone", "percent": 100, "bake": "10m"},
                ],
            }
        )
        rollout_id = service.create_rollout(s, fleet=fleet_name, plan=plan, actor="test").id
    ctx.kick_rollouts()

    def state() -> str:
        with ctx.sessions() as s:
            row = s.get(Rollout, rollout_id)
            assert row is not None
            return row.state

    wait_for(lambda: _events(hub, "trial_started", BAD) >= set(canary), timeout=TIMEOUT_S)
    stop = threading.Event()
    with ThreadPoolExecutor(CANARY) as pool:
        traffic = {d: pool.submit(_drive_traffic, fleet.sockets[d], stop) for d in canary}
        try:
            wait_for(lambda: state() in ("aborting", "rolled_back"), timeout=TIMEOUT_S)
        finally:
            stop.set()
        answered = {d: f.result() for d, f in traffic.items()}
    assert any(BAD in versions for versions in answered.values()), answered
    wait_for(lambda: state() == "rolled_back", timeout=TIMEOUT_S)
    # Every offered device serves the good version again, told so by the hub (or on its own first).
    wait_for(
        lambda: count(col(Device.id).in_(canary), Device.active_model_version == GOOD) == CANARY, TIMEOUT_S
    )

    with ctx.sessions() as s:
        offered = {
            r.device_id: r
            for r in s.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id))
        }
        steps = list(
            s.exec(
                select(RolloutTransition)
                .where(RolloutTransition.rollout_id == rollout_id)
                .order_by(col(RolloutTransition.seq))
            )
        )
        told_bad = set(
            s.exec(
                select(DeviceEvent.device_id).where(
                    DeviceEvent.model_version == BAD,
                    col(DeviceEvent.kind).in_(["desired_received", "trial_started"]),
                )
            )
        )
    fraction = len(offered) / DEVICES
    print(f"\ndevices ever offered {MODEL}:{BAD}: {len(offered)} of {DEVICES} ({fraction:.0%})")
    assert fraction < 0.15
    assert sorted(offered) == canary
    assert told_bad <= set(canary), "no device outside the canary ever heard of the bad version"
    assert {r.outcome for r in offered.values()} == {"restored"}
    assert {r.previous["version"] for r in offered.values()} == {GOOD}
    assert [t.to_state for t in steps] == ["running", "baking", "aborting", "rolled_back"]
    failed = steps[2]
    assert failed.event == "gates_failed_abort" and failed.actor == "system"
    assert failed.figures["figures"]["rolled_back"] >= 1
    assert "max_rollback_pct" in [g["gate"] for g in failed.figures["gates"] if not g["passed"]]
