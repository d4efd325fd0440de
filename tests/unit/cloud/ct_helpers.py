"""Builders for the continuous-training tests: digits-shaped champions, served devices, labelled files."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sqlmodel import Session, select

from cloud.artifacts import ArtifactStore
from cloud.clock import Clock
from cloud.db import SessionFactory
from cloud.models import DesiredState, Device, ModelVariant, ModelVersion
from cloud.services import registry
from cloud.training.continuous.machine import RunEvent
from cloud.training.continuous.service import queue_run, record_transition

FLEET = "unit"


def linear_onnx(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """logits = x @ weights + bias, x: float32[batch, 64] -> float32[batch, 10]."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def weak_champion() -> bytes:
    """Always answers 0: about a tenth of the digits right, so any trained challenger beats it."""
    bias = np.zeros(10)
    bias[0] = 1.0
    return linear_onnx(np.zeros((64, 10)), bias)


def strong_champion(x: np.ndarray, y: np.ndarray) -> bytes:
    """Least squares on one-hot labels: well above 0.9 on digits, more than a two-epoch MLP reaches."""
    design = np.hstack([x, np.ones((x.shape[0], 1))])
    solution, *_ = np.linalg.lstsq(design, np.eye(10)[y], rcond=None)
    return linear_onnx(solution[:64], solution[64])


def register(
    session: Session,
    store: ArtifactStore,
    onnx_bytes: bytes,
    *,
    name: str = "digits-mlp",
    version: str = "1",
    clock: Clock,
) -> ModelVersion:
    return registry.register_model(session, store, name, version, io.BytesIO(onnx_bytes), clock=clock)


def set_recorded_accuracy(session: Session, version: ModelVersion, accuracy: float) -> None:
    """What a bundle's optimizer would have measured on the held-out split."""
    variant = session.exec(select(ModelVariant).where(ModelVariant.model_version_id == version.id)).one()
    variant.metrics = {"accuracy": accuracy}
    session.add(variant)
    session.commit()


def serve(
    session: Session, version: ModelVersion, devices: list[str], now: datetime, fleet: str = FLEET
) -> None:
    """Devices of ``fleet`` assigned ``version`` (their desired state), as an assignment leaves them."""
    assert version.id is not None
    for generation, device_id in enumerate(devices, start=1):
        if session.get(Device, device_id) is None:
            session.add(Device(id=device_id, fleet=fleet, first_seen=now, last_seen=now))
            session.flush()
        row = session.get(DesiredState, device_id) or DesiredState(
            device_id=device_id, model_version_id=version.id, generation=0, issued_at=now
        )
        row.model_version_id = version.id
        row.generation = generation
        session.add(row)
    session.commit()


def npz_bytes(x: np.ndarray, y: np.ndarray, **extra: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"x": x, "y": y, **extra}
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path.write_bytes(npz_bytes(x, y))
    return path


@dataclass(frozen=True)
class FakeAlertChange:
    """A fake of the alerts engine's change records: only the fields a training trigger reads."""

    rule: str
    metric: str
    state: str
    model_name: str = "digits-mlp"
    model_version: str = "1"
    cohort_id: int = 0
    cohort: str | None = None


def awaiting_run(
    sessions: SessionFactory, *, model: str, challenger: str, now: datetime, fleet: str = FLEET
) -> str:
    """A run whose challenger (registered already) won and waits for an operator, as the worker leaves it."""
    with sessions() as s:
        run = queue_run(
            s,
            fleet=fleet,
            model_name=model,
            trigger="manual",
            detail={"summary": "by hand"},
            actor="ops",
            now=now,
        )
        assert run is not None
        record_transition(s, run, RunEvent.START, actor="system", now=now)
        run.champion_version, run.challenger_version = "1", challenger
        run.champion_metrics, run.challenger_metrics = {"accuracy": 0.9}, {"accuracy": 0.95}
        run.decision, run.decision_reason = (
            "promote",
            "the challenger scores 0.9500 against the champion's 0.9000",
        )
        record_transition(
            s, run, RunEvent.AWAIT_APPROVAL, actor="system", now=now, reason=run.decision_reason
        )
        s.commit()
        return run.id
