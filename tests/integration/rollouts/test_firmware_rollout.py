"""A firmware image rolled out by the same engine as model versions, on the signed channel.

Real SQLite and PostgreSQL (``db_url``), the hub's TUF repository and director, the sample firmware
bundles; devices are played by status and event messages through the hub's real ingest, and what
the engine publishes is read back from the director's signed envelopes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.db import create_all, create_db_engine
from cloud.rollouts import engine, service
from cloud.rollouts.plan import RolloutPlan
from cloud.services import assignments, cohorts, firmware, registry
from cloud.services.director import Director, open_envelope
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from cloud.services.signing import Signing
from cloud.settings import Settings
from cloud.tuf import TufSettings, ensure_initialized, open_repository
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import desired_pb2, event_pb2
from firmware_images.samples import SAMPLE_DIR
from tests.unit.cloud.helpers import FrozenClock, status, tiny_onnx

pytestmark = pytest.mark.integration

FLEET = "fw-fleet"
DEVICES = [f"b{i}" for i in range(5)]
CANARY = ["b0", "b1"]


class FirmwareWorld:
    def __init__(self, ctx: HubContext, clock: FrozenClock, publisher: RecordingPublisher) -> None:
        self.ctx, self.clock, self.publisher = ctx, clock, publisher
        self.ingestor = Ingestor(ctx.sessions, FleetTopics(FLEET), clock=clock)
        self.seq = 0

    def ingest(self, kind: str, device_id: str, payload: bytes) -> None:
        self.ingestor.ingest([InboundMessage(f"ef/v1/{FLEET}/dev/{device_id}/{kind}", payload)])

    def boards(self, ids: list[str], *, firmware_version: str = "1.0.0") -> None:
        for d in ids:
            msg = status(d, fleet=FLEET)
            msg.hardware_id = "sim-board"
            msg.firmware_version = firmware_version
            self.ingest("status", d, msg.SerializeToString())

    def firmware_event(self, device_id: str, kind: int) -> None:
        self.seq += 1
        msg = event_pb2.Event(device_id=device_id, seq=self.seq, ts_ms=self.seq, kind=kind, reason="slot")  # type: ignore[arg-type]
        self.ingest("events", device_id, msg.SerializeToString())

    def desired(self, device_id: str) -> desired_pb2.DesiredState:
        return open_envelope(self.publisher.retained[device_id])

    def tick(self) -> None:
        engine.tick(self.ctx, self.clock())

    def state(self, rollout_id: str) -> str:
        with self.ctx.sessions() as s:
            return service.get_rollout(s, FLEET, rollout_id).state


@pytest.fixture
def fw(db_url: str, tmp_path: Path) -> Iterator[FirmwareWorld]:
    clock = FrozenClock()
    settings = Settings(data_dir=tmp_path / "hub", database_url=db_url, fleet=FLEET)
    db = create_db_engine(db_url)
    create_all(db)
    publisher = RecordingPublisher()
    store = ArtifactStore(tmp_path / "artifacts")
    ctx = HubContext(
        settings=settings, engine=db, store=store, publisher=publisher, artifact_endpoint="hub:1", clock=clock
    )
    repo = open_repository(settings, ctx.sessions, tuf=TufSettings(), clock=clock)
    assert ensure_initialized(repo)
    ctx.signing = Signing(repo, Director(repo, clock=clock), ctx.sessions, publisher)
    w = FirmwareWorld(ctx, clock, publisher)
    with ctx.sessions() as s:
        registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx()), clock=clock)
        for version in ("1.0.0", "1.1.0"):
            info = store.put_bytes((SAMPLE_DIR / f"edgefleet-fw-sim-board-{version}.efw").read_bytes())
            firmware.register_bundle(s, store, ctx.signing, info, clock=clock)
    w.boards(DEVICES)
    with ctx.sessions() as s:
        assignments.assign(
            s,
            publisher,
            "digits",
            "1",
            device_ids=DEVICES,
            fleet=FLEET,
            artifact_endpoint="hub:1",
            clock=clock,
            signing=ctx.signing,
        )
        cohorts.create_cohort(s, fleet=FLEET, name="canary", devices=CANARY, clock=clock)
    try:
        yield w
    finally:
        SQLModel.metadata.drop_all(db)
        db.dispose()


def _create(w: FirmwareWorld, **gates: float) -> str:
    plan = RolloutPlan.model_validate(
        {
            "name": "fw-1.1.0",
            "target": {"kind": "firmware", "name": "edgefleet-fw", "version": "1.1.0"},
            "stages": [
                {"name": "canary", "cohort": "canary", "bake": 0},
                {"name": "rest", "percent": 100, "bake": 0},
            ],
            "gates": {"min_reporting": 2, **gates},
            "on_failure": "abort",
        }
    )
    with w.ctx.sessions() as s:
        return service.create_rollout(s, fleet=FLEET, plan=plan, actor="op", clock=w.clock).id


def test_a_firmware_rollout_goes_stage_by_stage_and_keeps_each_device_model(fw: FirmwareWorld) -> None:
    model_before = {d: fw.desired(d).model.SerializeToString() for d in DEVICES}
    rollout_id = _create(fw)
    fw.tick()
    offered = [d for d in DEVICES if fw.desired(d).firmware.version == "1.1.0"]
    assert offered == CANARY
    # The firmware part changed; the model part of each desired state did not.
    assert all(fw.desired(d).model.SerializeToString() == model_before[d] for d in DEVICES)
    assert all(fw.desired(d).firmware.hardware_id == "sim-board" for d in CANARY)

    for d in CANARY:
        fw.firmware_event(d, event_pb2.EVENT_KIND_FIRMWARE_COMMITTED)
    fw.tick()
    fw.tick()
    assert all(fw.desired(d).firmware.version == "1.1.0" for d in DEVICES)
    for d in DEVICES[2:]:
        fw.firmware_event(d, event_pb2.EVENT_KIND_FIRMWARE_COMMITTED)
    fw.tick()
    assert fw.state(rollout_id) == "completed"


def test_a_firmware_image_that_boots_badly_on_the_canary_is_stopped_there(fw: FirmwareWorld) -> None:
    rollout_id = _create(fw, max_rollback_pct=0)
    fw.tick()
    for d in CANARY:
        fw.firmware_event(d, event_pb2.EVENT_KIND_FIRMWARE_ROLLED_BACK)
    fw.tick()
    assert fw.state(rollout_id) == "rolled_back"
    # Nobody past the canary was ever offered the image; the canary is told its old image again.
    rest = [d for d in DEVICES if d not in CANARY]
    assert all(not fw.desired(d).HasField("firmware") for d in rest)
    assert all(fw.desired(d).firmware.version == "1.0.0" for d in CANARY)
