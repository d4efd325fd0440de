"""The observe cycle end to end on SQLite and the real PostgreSQL: device messages through ingest,
rollups per cohort, drift scores against the bundle's profile, an alert for the shifted cohort only,
and the retraining run it queues."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlmodel import select

from cloud.alerts.rules import apply_rules
from cloud.alerts.spec import parse_rules
from cloud.context import HubContext
from cloud.models import Cohort, DesiredState, Device, ModelVersion
from cloud.observe import ObserveCycle
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.training.continuous.tables import TrainingRun
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import sketch_pb2, telemetry_pb2
from tests.unit.cloud.helpers import FrozenClock
from tests.unit.cloud.sketches import add_bundle, normal, profile, window

pytestmark = pytest.mark.integration

MODEL, VERSION = "digits", "1.0.0"
CALM = [f"calm-{i}" for i in range(3)]
SHIFTED = [f"moved-{i}" for i in range(3)]
PER_WINDOW = 400
RULES = """
rules:
  - name: drift
    metric: drift_score
    comparison: ">"
    threshold: 1
    for: 0s
    scope: cohorts
"""


def _messages(topics: FleetTopics, device: str, seq: int, end_ms: int, shift: float) -> list[InboundMessage]:
    seed = hash((device, seq)) % 2**31
    sketch = window(
        model=MODEL,
        version=VERSION,
        features={"f0": normal(seed, PER_WINDOW, shift), "f1": normal(seed + 1, PER_WINDOW)},
        class_counts=[PER_WINDOW // 2, PER_WINDOW // 2],
        confidence=np.linspace(0.5, 1.0, 50),
        seq=seq,
        start_ms=end_ms - 1_000,
        end_ms=end_ms,
    )
    tele = telemetry_pb2.TelemetryBatch(device_id=device)
    tele.windows.add(
        seq=seq,
        window_start_ms=end_ms - 1_000,
        window_end_ms=end_ms,
        model_name=MODEL,
        model_version=VERSION,
        requests=PER_WINDOW,
        errors=0,
    )
    sketches = sketch_pb2.SketchBatch(device_id=device, windows=[sketch])
    dev = topics.device(device)
    return [
        InboundMessage(dev.telemetry, tele.SerializeToString()),
        InboundMessage(dev.sketch, sketches.SerializeToString()),
    ]


@pytest.fixture
def fleet(ctx: HubContext, clock: FrozenClock) -> FleetTopics:
    """Six devices serving one version, in two cohorts; the version's bundle has a baseline profile."""
    fleet = ctx.settings.fleet
    with ctx.sessions() as s:
        baseline = profile(
            model=MODEL,
            version=VERSION,
            features={"f0": normal(1, 20_000), "f1": normal(2, 20_000)},
            class_distribution=[0.5, 0.5],
            class_names=["a", "b"],
        )
        add_bundle(s, ctx.store, baseline)
        version = s.exec(select(ModelVersion).where(ModelVersion.name == MODEL)).one()
        assert version.id is not None
        for device in CALM + SHIFTED:
            s.add(Device(id=device, fleet=fleet))
        s.flush()
        for device in CALM + SHIFTED:
            s.add(
                DesiredState(device_id=device, model_version_id=version.id, generation=1, issued_at=clock())
            )
        s.add(Cohort(fleet=fleet, name="calm", devices=CALM))
        s.add(Cohort(fleet=fleet, name="moved", devices=SHIFTED))
        s.commit()
        apply_rules(s, fleet=fleet, specs=parse_rules(RULES))
    return FleetTopics(fleet, ctx.settings.topic_prefix)


def test_a_shifted_cohort_fires_its_alert_and_queues_retraining(
    ctx: HubContext, clock: FrozenClock, fleet: FleetTopics
) -> None:
    ingest = Ingestor(ctx.sessions, fleet, clock=clock)
    start_ms = int(clock().timestamp() * 1000)
    for seq in range(1, 6):
        end_ms = start_ms + seq * 1_000
        for device in CALM + SHIFTED:
            ingest.ingest(_messages(fleet, device, seq, end_ms, 1.0 if device in SHIFTED else 0.0))
    # Redelivered by the broker (QoS 1): stored once.
    ingest.ingest(_messages(fleet, CALM[0], 1, start_ms + 1_000, 0.0))

    cycle = ObserveCycle(ctx)
    started: list[object] = []
    # The worker trains in a child process; that is tested with the pipeline, not here.
    cycle.worker.start_pending = lambda now=None: started.append(now)  # type: ignore[method-assign]
    report = cycle.run_once(now=clock.advance(60))

    assert report.failed == []
    assert report.rollups >= 3  # the fleet scope and both cohorts
    assert report.scores > 0
    firing = [c for c in report.alert_changes if c.state == "firing"]
    assert [c.cohort for c in firing] == ["moved"]
    with ctx.sessions() as s:
        runs = s.exec(select(TrainingRun)).all()
    assert [(r.model_name, r.trigger) for r in runs] == [(MODEL, "drift")]
    assert started, "the cycle asks the worker to start the queued run"

    # Nothing new arrived: a second cycle rebuilds nothing and moves no alert.
    again = cycle.run_once(now=clock.advance(30))
    assert again.failed == [] and again.alert_changes == []


def test_a_failing_step_does_not_stop_the_others(
    ctx: HubContext, clock: FrozenClock, fleet: FleetTopics
) -> None:
    cycle = ObserveCycle(ctx)
    cycle.worker.start_pending = lambda now=None: (_ for _ in ()).throw(RuntimeError("worker broke"))  # type: ignore[method-assign]
    report = cycle.run_once(now=clock.advance(timedelta(seconds=5).total_seconds()))
    assert report.failed == ["training"]
    assert cycle.cycles == 1
