"""Builders shared by the hub's unit and integration tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import onnx
from onnx import TensorProto, helper

from edgefleet_proto.v1 import common_pb2, device_pb2, event_pb2, telemetry_pb2

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class FrozenClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def tiny_onnx(scale: float = 1.0) -> bytes:
    """y = x @ W with x: float32[batch, 4] -> y: float32[batch, 2]; ``scale`` changes the bytes."""
    weights = helper.make_tensor("W", TensorProto.FLOAT, [4, 2], [scale * i for i in range(8)])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def model_ref(name: str, version: str, sha256: str) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=name, version=version, format="onnx", sha256=sha256, length=1)


def status(
    device_id: str,
    *,
    fleet: str = "",
    online: bool = True,
    labels: dict[str, str] | None = None,
    active: common_pb2.ModelRef | None = None,
    applied_generation: int = 0,
    sent_at_ms: int = 0,
    health: str = "serving",
) -> device_pb2.DeviceStatus:
    msg = device_pb2.DeviceStatus(
        device_id=device_id,
        fleet=fleet,
        state=device_pb2.DEVICE_STATE_ONLINE if online else device_pb2.DEVICE_STATE_OFFLINE,
        agent_version="1.2.3",
        labels=labels or {},
        applied_generation=applied_generation,
        sent_at_ms=sent_at_ms,
        health=health,
        capabilities=device_pb2.Capabilities(
            runtimes=["onnxruntime/1.32"], cpu_arch="aarch64", cpu_count=4, mem_total_bytes=2**33
        ),
    )
    if active is not None:
        msg.slots.add(name="active", model=active)
    return msg


def telemetry(device_id: str, *seqs: int, requests: int = 10) -> telemetry_pb2.TelemetryBatch:
    batch = telemetry_pb2.TelemetryBatch(device_id=device_id)
    for seq in seqs:
        batch.windows.add(
            seq=seq,
            window_start_ms=1_000 * seq,
            window_end_ms=1_000 * seq + 1_000,
            model_name="tiny",
            model_version="1",
            requests=requests,
            errors=1,
            latency=telemetry_pb2.LatencySummary(p50_ms=1.5, p95_ms=3.0, p99_ms=4.0, mean_ms=2.0, max_ms=9.0),
        )
    return batch


def event(device_id: str, seq: int, kind: int = event_pb2.EVENT_KIND_ACTIVATED) -> event_pb2.Event:
    return event_pb2.Event(
        device_id=device_id,
        seq=seq,
        ts_ms=1_000 * seq,
        kind=kind,  # type: ignore[arg-type]
        reason=f"event {seq}",
        details={"k": "v"},
        generation=1,
    )
