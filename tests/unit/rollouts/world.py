"""A small fleet in a real database for rollout engine tests: devices, a model with two versions,
cohorts, and the events and telemetry devices would send, all stored through the hub's services.

Nothing here is a fake of the database: ``sessions`` is the test's SQLite file (or PostgreSQL in
the integration suite). The clock is frozen and moved by the test.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlmodel import col, select

from cloud.context import HubContext
from cloud.models import DesiredState, Rollout, RolloutDevice, RolloutTransition
from cloud.rollouts import engine, service
from cloud.rollouts.plan import RolloutPlan
from cloud.services import assignments, cohorts, registry
from cloud.services.director import open_envelope
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2, telemetry_pb2
from tests.unit.cloud.helpers import FrozenClock, status, tiny_onnx

MODEL = "digits"
OLD, NEW = "1", "2"
SIX = [f"d{i}" for i in range(6)]


class World:
    """The hub's context plus helpers that act as devices and as an operator."""

    def __init__(self, ctx: HubContext, clock: FrozenClock, publisher: RecordingPublisher) -> None:
        self.ctx = ctx
        self.clock = clock
        self.publisher = publisher
        self.fleet = ctx.settings.fleet
        self.ingestor = Ingestor(ctx.sessions, FleetTopics(self.fleet), clock=clock)
        self._seq: dict[str, int] = {}

    # --- the fleet ---------------------------------------------------------------------------

    def models(self) -> None:
        with self.ctx.sessions() as s:
            registry.register_model(s, self.ctx.store, MODEL, OLD, io.BytesIO(tiny_onnx(1.0)))
            registry.register_model(s, self.ctx.store, MODEL, NEW, io.BytesIO(tiny_onnx(2.0)))

    def devices(
        self, ids: Sequence[str], *, labels: dict[str, str] | None = None, online: bool = True
    ) -> None:
        self._ingest(
            [
                (f"ef/v1/{self.fleet}/dev/{d}/status", status(d, labels=labels or {}, online=online))
                for d in ids
            ]
        )

    def assign_old(self, ids: Sequence[str]) -> None:
        """What the devices run before the rollout: an assignment of version 1."""
        with self.ctx.sessions() as s:
            assignments.assign(
                s,
                self.publisher,
                MODEL,
                OLD,
                device_ids=list(ids),
                fleet=self.fleet,
                artifact_endpoint=self.ctx.artifact_endpoint,
                clock=self.clock,
            )

    def cohort(self, name: str, *, selector: str | None = None, devices: Sequence[str] | None = None) -> None:
        with self.ctx.sessions() as s:
            cohorts.create_cohort(
                s, fleet=self.fleet, name=name, selector=selector, devices=devices, clock=self.clock
            )

    # --- devices reporting -------------------------------------------------------------------

    def _ingest(self, items: Sequence[tuple[str, Any]]) -> None:
        self.ingestor.ingest([InboundMessage(topic, msg.SerializeToString()) for topic, msg in items])

    def _next_seq(self, device_id: str) -> int:
        self._seq[device_id] = self._seq.get(device_id, 0) + 1
        return self._seq[device_id]

    def event(self, device_id: str, kind: int, version: str = NEW, *, refused: bool = True) -> None:
        seq = self._next_seq(device_id)
        details = {"refused": "true" if refused else "false", "gate": "divergence"}
        msg = event_pb2.Event(
            device_id=device_id,
            seq=seq,
            ts_ms=seq * 1000,
            kind=kind,  # type: ignore[arg-type]
            reason="judged on trial",
            model=common_pb2.ModelRef(name=MODEL, version=version),
            details=details if kind == event_pb2.EVENT_KIND_ROLLED_BACK else {},
            generation=1,
        )
        self._ingest([(f"ef/v1/{self.fleet}/dev/{device_id}/events", msg)])

    def committed(self, *ids: str) -> None:
        for d in ids:
            self.event(d, event_pb2.EVENT_KIND_COMMITTED)

    def rolled_back(self, *ids: str) -> None:
        for d in ids:
            self.event(d, event_pb2.EVENT_KIND_ROLLED_BACK)

    def telemetry(self, device_id: str, version: str, *, requests: int, errors: int, p95_ms: float) -> None:
        seq = self._next_seq(device_id)
        start = int(self.clock().timestamp() * 1000)
        batch = telemetry_pb2.TelemetryBatch(device_id=device_id)
        batch.windows.add(
            seq=seq,
            window_start_ms=start,
            window_end_ms=start + 1000,
            model_name=MODEL,
            model_version=version,
            requests=requests,
            errors=errors,
            latency=telemetry_pb2.LatencySummary(p50_ms=p95_ms / 2, p95_ms=p95_ms, p99_ms=p95_ms),
        )
        self._ingest([(f"ef/v1/{self.fleet}/dev/{device_id}/telemetry", batch)])

    # --- the operator and the engine ---------------------------------------------------------

    def create(self, plan: dict[str, Any], *, actor: str = "alice", supersede: bool = False) -> Rollout:
        full = {"name": "r", "target": {"model": MODEL, "version": NEW}, **plan}
        with self.ctx.sessions() as s:
            return service.create_rollout(
                s,
                fleet=self.fleet,
                plan=RolloutPlan.model_validate(full),
                actor=actor,
                supersede=supersede,
                clock=self.clock,
            )

    def tick(self, now: datetime | None = None) -> list[str]:
        return engine.tick(self.ctx, now or self.clock())

    def rollout(self, rollout_id: str) -> Rollout:
        with self.ctx.sessions() as s:
            row = s.get(Rollout, rollout_id)
            assert row is not None
            return row

    def state(self, rollout_id: str) -> str:
        return self.rollout(rollout_id).state

    def offered(self, rollout_id: str) -> dict[str, RolloutDevice]:
        with self.ctx.sessions() as s:
            rows = s.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)).all()
            return {r.device_id: r for r in rows}

    def transitions(self, rollout_id: str) -> list[RolloutTransition]:
        with self.ctx.sessions() as s:
            return list(
                s.exec(
                    select(RolloutTransition)
                    .where(RolloutTransition.rollout_id == rollout_id)
                    .order_by(col(RolloutTransition.seq))
                ).all()
            )

    def chain(self, rollout_id: str) -> list[str]:
        """The states the rollout went through, from draft."""
        steps = self.transitions(rollout_id)
        return ["draft", *(t.to_state for t in steps)]

    def desired_version(self, device_id: str) -> str:
        """The model version the device was last told to run (what the broker holds)."""
        payload = self.publisher.retained[device_id]
        if self.ctx.signing is None:  # no signed channel: the bare DesiredState
            return desired_pb2.DesiredState.FromString(payload).model.version
        return open_envelope(payload).model.version

    def generation(self, device_id: str) -> int:
        with self.ctx.sessions() as s:
            row = s.get(DesiredState, device_id)
            assert row is not None
            return row.generation


@pytest.fixture
def world(ctx: HubContext, clock: FrozenClock, publisher: RecordingPublisher) -> World:
    """Six online devices running version 1 of the model, with version 2 registered."""
    w = World(ctx, clock, publisher)
    w.models()
    w.devices(SIX)
    w.assign_old(SIX)
    return w


@pytest.fixture
def canary(world: World) -> World:
    """The same, with a cohort ``canary`` of d0 and d1."""
    world.cohort("canary", devices=["d0", "d1"])
    return world
