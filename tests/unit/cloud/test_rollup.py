"""Cohort rollups: rebuilt whole from raw rows, per fleet and cohort, late rows included, set-based."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]
from sqlalchemy import Engine, event
from sqlmodel import select

from cloud.db import SessionFactory
from cloud.services import cohorts
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.telemetry.rollup import SETTLE_S, RollupKey, bucket_start, rebuild
from cloud.telemetry.tables import FLEET_SCOPE, CohortRollup, SketchRecord
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import sketch_pb2
from tests.unit.cloud.helpers import T0, FrozenClock, status
from tests.unit.cloud.sketch_builders import (
    sketch_batch,
    sketch_window,
    telemetry_batch,
    telemetry_window,
)

FLEET = "unit"
BUCKET_S = 300
B0 = bucket_start(T0, BUCKET_S)  # T0 is 245 s into its bucket: windows ending T0+10..T0+50 fall in B0
B1 = B0 + timedelta(seconds=BUCKET_S)
NEXT = 100  # offset that puts a window's end in B1


class Fleet:
    """Devices publishing through the real Ingestor, on a frozen clock."""

    def __init__(self, sessions: SessionFactory, clock: FrozenClock) -> None:
        self.sessions = sessions
        self.clock = clock
        self.ingestor = Ingestor(sessions, FleetTopics(FLEET), clock=clock)

    def send(self, device: str, channel: str, payload: bytes) -> None:
        self.ingestor.ingest([InboundMessage(f"ef/v1/{FLEET}/dev/{device}/{channel}", payload)])

    def join(self, device: str, site: str) -> None:
        self.send(device, "status", status(device, labels={"site": site}).SerializeToString())

    def report(
        self, device: str, seq: int, values: list[float], *, offset_s: int = 0, **telemetry: Any
    ) -> None:
        window = telemetry_window(seq, offset_s=offset_s, **telemetry)
        self.send(device, "telemetry", telemetry_batch(device, window).SerializeToString())
        sketch = sketch_window(seq, values, offset_s=offset_s, predicted=[seq % 3] * len(values))
        self.send(device, "sketch", sketch_batch(device, sketch).SerializeToString())

    def rebuild(self, now: datetime | None = None, **kwargs: Any) -> list[RollupKey]:
        return rebuild(self.sessions, fleet=FLEET, bucket_s=BUCKET_S, now=now or self.clock(), **kwargs)

    def rollups(self) -> dict[tuple[int, datetime], CohortRollup]:
        with self.sessions() as s:
            return {(r.cohort_id, r.bucket_start): r for r in s.exec(select(CohortRollup)).all()}


@pytest.fixture
def fleet(sessions: SessionFactory, clock: FrozenClock) -> Fleet:
    return Fleet(sessions, clock)


def _cohort(sessions: SessionFactory, name: str, selector: str) -> int:
    with sessions() as s:
        cohort_id = cohorts.create_cohort(s, fleet=FLEET, name=name, selector=selector).id
    assert cohort_id is not None
    return cohort_id


def _counts(rollup: CohortRollup) -> dict[str, int]:
    window = sketch_pb2.SketchWindow.FromString(rollup.sketch)
    return {f.name: kll_floats_sketch.deserialize(f.kll_floats).n for f in window.features}


def test_a_bucket_sums_its_windows_per_fleet_and_cohort(
    fleet: Fleet, sessions: SessionFactory, clock: FrozenClock
) -> None:
    for device, site in (("d1", "a"), ("d2", "b"), ("d3", "a")):
        fleet.join(device, site)
    site_a, site_b = _cohort(sessions, "site-a", "site=a"), _cohort(sessions, "site-b", "site=b")
    fleet.report("d1", 1, [0.1, 0.2], requests=10, p95_ms=2.0, cpu_percent=10.0, rss_bytes=100)
    fleet.report("d1", 2, [0.3], requests=0, errors=0, p95_ms=0.0)
    fleet.report("d2", 1, [0.5, 0.6, 0.7], requests=30, p95_ms=6.0, errors=3, cpu_percent=30.0, rss_bytes=300)
    fleet.report("d3", 1, [0.9], offset_s=NEXT, requests=5, p95_ms=1.0)
    clock.advance(NEXT + 10)  # B1's window has ended

    keys = fleet.rebuild()

    assert sorted(keys) == sorted(
        [
            RollupKey(FLEET_SCOPE, "tiny", "1", B0),
            RollupKey(site_a, "tiny", "1", B0),
            RollupKey(site_b, "tiny", "1", B0),
            RollupKey(FLEET_SCOPE, "tiny", "1", B1),
            RollupKey(site_a, "tiny", "1", B1),
        ]
    )
    rollups = fleet.rollups()
    whole = rollups[(FLEET_SCOPE, B0)]
    assert (whole.devices, whole.windows, whole.requests, whole.errors, whole.samples) == (2, 3, 40, 4, 6)
    assert whole.p95_ms == pytest.approx((10 * 2.0 + 30 * 6.0) / 40)  # weighted by requests
    assert whole.cpu_percent == pytest.approx(20.0)  # over the windows that reported it
    assert whole.rss_bytes == 300
    assert (whole.bucket_s, whole.model_name, whole.model_version) == (BUCKET_S, "tiny", "1")
    assert _counts(whole) == {"mean": 6, "std": 6}
    merged = sketch_pb2.SketchWindow.FromString(whole.sketch)
    assert list(merged.class_counts) == [0, 5, 1]  # seq 1 predicts class 1, seq 2 class 2
    a0 = rollups[(site_a, B0)]
    assert (a0.devices, a0.windows, a0.requests, a0.samples, a0.p95_ms) == (1, 2, 10, 3, 2.0)
    b0 = rollups[(site_b, B0)]
    assert (b0.devices, b0.requests, b0.samples) == (1, 30, 3)
    a1 = rollups[(site_a, B1)]
    assert (a1.devices, a1.windows, a1.cpu_percent, a1.rss_bytes) == (1, 1, None, None)


def test_only_buckets_with_new_rows_are_rebuilt_and_late_rows_join_their_bucket(
    fleet: Fleet, clock: FrozenClock
) -> None:
    fleet.join("d1", "a")
    fleet.report("d1", 1, [0.1])
    fleet.report("d1", 2, [0.1], offset_s=NEXT)
    settled = clock.advance(SETTLE_S + 1)
    assert len(fleet.rebuild()) == 2
    first = fleet.rollups()
    clock.advance(30)
    assert fleet.rebuild() == []  # nothing arrived since

    # A window of B0 that comes late (an agent that was offline flushing its queue).
    clock.advance(30)
    fleet.report("d1", 3, [0.2, 0.3])
    assert fleet.rebuild() == [RollupKey(FLEET_SCOPE, "tiny", "1", B0)]
    rollups = fleet.rollups()
    assert (rollups[(FLEET_SCOPE, B0)].windows, rollups[(FLEET_SCOPE, B0)].samples) == (2, 3)
    assert _counts(rollups[(FLEET_SCOPE, B0)]) == {"mean": 3, "std": 3}
    assert rollups[(FLEET_SCOPE, B1)].updated_at == settled == first[(FLEET_SCOPE, B1)].updated_at


def test_rebuilding_again_writes_the_same_rollups(fleet: Fleet, clock: FrozenClock) -> None:
    fleet.join("d1", "a")
    fleet.report("d1", 1, [0.1, 0.5], cpu_percent=3.0, rss_bytes=7)
    assert fleet.rebuild() == [RollupKey(FLEET_SCOPE, "tiny", "1", B0)]
    first = {key: _content(r) for key, r in fleet.rollups().items()}
    clock.advance(5)  # still within the look-back: the bucket is rebuilt again
    assert fleet.rebuild() == [RollupKey(FLEET_SCOPE, "tiny", "1", B0)]
    assert {key: _content(r) for key, r in fleet.rollups().items()} == first


def _content(rollup: CohortRollup) -> dict[str, Any]:
    return rollup.model_dump(exclude={"id", "updated_at"})


def test_membership_is_read_at_rebuild_and_a_cohort_that_lost_the_bucket_loses_its_rollup(
    fleet: Fleet, sessions: SessionFactory, clock: FrozenClock
) -> None:
    fleet.join("d1", "a")
    fleet.join("d2", "b")
    site_a, site_b = _cohort(sessions, "site-a", "site=a"), _cohort(sessions, "site-b", "site=b")
    fleet.report("d1", 1, [0.1])
    fleet.report("d2", 1, [0.2])
    fleet.rebuild()
    assert {cohort for cohort, _ in fleet.rollups()} == {FLEET_SCOPE, site_a, site_b}

    clock.advance(SETTLE_S + 60)
    fleet.join("d2", "a")  # moved to site a
    fleet.report("d2", 2, [0.3])
    keys = fleet.rebuild()

    assert sorted(keys) == sorted(
        [RollupKey(FLEET_SCOPE, "tiny", "1", B0), RollupKey(site_a, "tiny", "1", B0)]
    )
    rollups = fleet.rollups()
    assert (site_b, B0) not in rollups  # its only member now belongs elsewhere
    assert (rollups[(site_a, B0)].devices, rollups[(site_a, B0)].windows) == (2, 3)


def test_an_explicit_since_rebuilds_everything_received_after_it(fleet: Fleet, clock: FrozenClock) -> None:
    fleet.join("d1", "a")
    fleet.report("d1", 1, [0.1])
    fleet.report("d1", 2, [0.1], offset_s=NEXT)
    clock.advance(SETTLE_S + 60)
    fleet.rebuild()
    assert fleet.rebuild() == []
    assert len(fleet.rebuild(since=T0 - timedelta(seconds=1))) == 2


def test_buckets_past_the_raw_retention_or_in_the_future_are_left_alone(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "cloud.telemetry.rollup")
    fleet.join("d1", "a")
    fleet.report("d1", 1, [0.1], offset_s=-2 * 86_400)  # two days late
    fleet.report("d1", 2, [0.1], offset_s=3_600)  # an hour ahead of the hub's clock
    fleet.report("d1", 3, [0.1])
    keys = fleet.rebuild(raw_retention_s=86_400)
    assert keys == [RollupKey(FLEET_SCOPE, "tiny", "1", B0)]
    assert "2 bucket(s) of fleet 'unit' outside [now - raw retention, now] not rebuilt" in caplog.text


def test_a_sketch_that_cannot_be_merged_is_left_out_and_said(
    fleet: Fleet, sessions: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fleet.join("d1", "a")
    fleet.join("d2", "a")
    fleet.report("d1", 1, [0.1, 0.2])
    fleet.report("d2", 1, [0.3])
    with sessions() as s:
        row = s.exec(select(SketchRecord).where(SketchRecord.device_id == "d2")).one()
        row.payload = b"\xff not a sketch window"
        s.add(row)
        s.commit()
    fleet.rebuild()
    whole = fleet.rollups()[(FLEET_SCOPE, B0)]
    assert (whole.devices, whole.windows, whole.samples) == (2, 2, 2)  # d2's telemetry still counts
    assert "left out 1 sketch window(s)" in caplog.text and "device d2 window 1" in caplog.text


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


@pytest.mark.parametrize("devices", [4, 40])
def test_the_statements_of_a_rebuild_do_not_grow_with_the_devices(
    fleet: Fleet, sessions: SessionFactory, clock: FrozenClock, statements: list[str], devices: int
) -> None:
    for index in range(devices):
        fleet.join(f"d{index:03d}", "ab"[index % 2])
        fleet.report(f"d{index:03d}", 1, [index / devices])
        fleet.report(f"d{index:03d}", 2, [index / devices], offset_s=NEXT)
    _cohort(sessions, "site-a", "site=a")
    _cohort(sessions, "site-b", "site=b")
    clock.advance(NEXT + 10)
    statements.clear()

    keys = fleet.rebuild()

    assert len(keys) == 6  # 2 buckets x (fleet + 2 cohorts)
    # Reading: watermark, dirty buckets, cohorts, one membership query per cohort; per bucket: two
    # reads, one delete, one upsert (pragmas and savepoints aside).
    data = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "INSERT", "DELETE", "UPDATE"))]
    assert len(data) == 3 + 2 + 2 * 4
