"""Synthetic traffic of a simulated fleet reaches the hub: real agents on the real broker take a signed
model from a real hub, serve their own requests (half of them on shifted rows), post labels back, and
the hub stores their telemetry windows with requests in them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import col, select

from cloud.hub import Hub
from cloud.models import Device, DeviceState, TelemetryWindow
from cloud.services import assignments, registry
from cloud.settings import Settings
from edge_agent.sim import device_ids, run_fleet
from edge_agent.sim_labels import parse_label_mix
from edge_agent.sim_traffic import TrafficData, TrafficPlan, parse_shift
from edge_agent.trust.config import TrustConfig
from tests.integration.cloud.mqtt_probe import wait_for

pytestmark = pytest.mark.integration

DEVICES = 4  # sim-0001..2: region=north (shifted), sim-0003..4: region=south
MODEL, VERSION = "digits-linear", "1.0.0"
FEATURES, CLASSES = 64, 10
TIMEOUT_S = 60


def _classifier(path: Path) -> None:
    """A linear classifier x[batch, 64] -> logits[batch, 10]."""
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
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def hub(short_tmp: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=short_tmp / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


def test_traffic_windows_of_shifted_and_unshifted_devices_reach_the_hub(
    hub: Hub, mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    ctx = hub.context
    assert ctx is not None and ctx.signing is not None
    every = device_ids(DEVICES)
    north, south = every[:2], every[2:]
    root = short_tmp / "root.json"
    root.write_bytes(ctx.signing.repo.root_bytes())
    rng = np.random.default_rng(3)
    data_path = short_tmp / "rows.npz"
    np.savez(data_path, x=rng.random((200, 8, 8), dtype=np.float32), y=rng.integers(0, CLASSES, 200))
    plan = TrafficPlan(
        rate=20.0,
        data=TrafficData.load(data_path),  # (8, 8) rows: reshaped to the model's [batch, 64]
        shifts=(parse_shift("region=north:0.5"),),
        feedback_rate=0.5,
    )

    def online() -> int:
        with ctx.sessions() as s:
            return len(s.exec(select(Device.id).where(Device.state == DeviceState.ONLINE)).all())

    def assign() -> None:
        model_path = short_tmp / "model.onnx"
        _classifier(model_path)
        with ctx.sessions() as s, model_path.open("rb") as f:
            registry.register_model(s, ctx.store, MODEL, VERSION, f)
            assignments.assign(
                s, ctx.publisher, MODEL, VERSION, device_ids=every, fleet=fleet_name,
                artifact_endpoint=ctx.artifact_endpoint, signing=ctx.signing,
            )  # fmt: skip

    def served() -> set[str]:
        """Devices with a window of requests served by the model (no failures) at the hub."""
        with ctx.sessions() as s:
            query = select(TelemetryWindow.device_id).where(
                col(TelemetryWindow.requests) > 0,
                TelemetryWindow.errors == 0,
                TelemetryWindow.model_version == VERSION,
            )
            return set(s.exec(query).all())

    err = io.StringIO()

    async def scenario() -> None:
        stop = asyncio.Event()
        fleet = asyncio.create_task(
            run_fleet(
                DEVICES,
                short_tmp / "fleet",
                fleet_name,
                mqtt_host=mqtt_broker[0],
                mqtt_port=mqtt_broker[1],
                grpc_endpoint=hub.grpc_endpoint,
                local_api_devices=0,
                label_mix=parse_label_mix("region=north:50,region=south:50"),
                telemetry_interval_s=1.0,
                trust=TrustConfig(root_file=root, http_url=f"{hub.api_url}/tuf"),
                traffic=plan,
                stop_event=stop,
                out=io.StringIO(),  # the ready line is not under test here
                err=err,
            )
        )
        try:
            # Blocking calls go to a thread: the agents share this loop.
            await asyncio.to_thread(wait_for, lambda: online() == DEVICES, TIMEOUT_S)
            await asyncio.to_thread(assign)
            await asyncio.to_thread(wait_for, lambda: served() == set(every), TIMEOUT_S)
        finally:
            stop.set()
            await fleet

    asyncio.run(asyncio.wait_for(scenario(), 3 * TIMEOUT_S))
    got = served()
    assert set(north) <= got and set(south) <= got
    summary = err.getvalue().strip()
    assert summary.startswith("traffic: ") and summary.count("\n") == 0, summary
    sent = int(summary.split("traffic: ", 1)[1].split(" requests sent", 1)[0])
    labelled = int(summary.split("), ", 1)[1].split(" labelled", 1)[0])

    def at_hub() -> int:
        with ctx.sessions() as s:
            return sum(s.exec(select(TelemetryWindow.requests)).all())

    # Every request went out in some window (the agents stop only after the traffic has).
    assert sent > 0
    wait_for(lambda: at_hub() == sent, 10)
    assert 0 < labelled < sent, summary
