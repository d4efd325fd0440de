"""Ingest of sketch windows and of telemetry resource usage; a database that is away is no device's fault."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from cloud.db import SessionFactory, create_db_engine, session_factory
from cloud.models import Device, TelemetryWindow
from cloud.services.ingest import InboundMessage, Ingestor, StoreUnavailableError
from cloud.telemetry.tables import SketchRecord
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import sketch_pb2
from tests.unit.cloud.helpers import T0, FrozenClock
from tests.unit.cloud.sketch_builders import (
    sketch_batch,
    sketch_window,
    telemetry_batch,
    telemetry_window,
)

FLEET = "unit"


def _msg(device: str, channel: str, payload: bytes) -> InboundMessage:
    return InboundMessage(f"ef/v1/{FLEET}/dev/{device}/{channel}", payload)


@pytest.fixture
def ingestor(sessions: SessionFactory, clock: FrozenClock) -> Ingestor:
    return Ingestor(sessions, FleetTopics(FLEET), clock=clock)


def test_sketch_windows_are_stored_once_as_sent(ingestor: Ingestor, sessions: SessionFactory) -> None:
    first, second = sketch_window(1, [0.1, 0.2, 0.3], predicted=[0, 1, 1]), sketch_window(2, [0.5])
    batch = sketch_batch("d1", first, second).SerializeToString()
    ingestor.ingest([_msg("d1", "sketch", batch)])
    # QoS 1 redelivery, in a batch of its own and twice within one.
    ingestor.ingest([_msg("d1", "sketch", batch), _msg("d1", "sketch", batch)])

    with sessions() as s:
        rows = s.exec(select(SketchRecord).order_by(SketchRecord.seq)).all()  # type: ignore[arg-type]
        device = s.get(Device, "d1")
    assert [(r.device_id, r.seq, r.samples, r.model_name, r.model_version) for r in rows] == [
        ("d1", 1, 3, "tiny", "1"),
        ("d1", 2, 1, "tiny", "1"),
    ]
    assert sketch_pb2.SketchWindow.FromString(rows[0].payload) == first
    assert rows[0].window_end.timestamp() * 1000 == first.window_end_ms
    assert rows[0].received_at == T0
    assert device is not None and device.last_seen == T0  # a sketch is news from the device
    snap = ingestor.stats.snapshot()
    assert (snap["sketch_windows"], snap["duplicates"]) == (2, 4)


def test_a_sketch_for_another_device_is_rejected_and_a_broken_one_counted(
    ingestor: Ingestor, sessions: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    backwards = sketch_window(3, [0.1])
    backwards.window_end_ms = backwards.window_start_ms - 1
    ingestor.ingest(
        [
            _msg("d1", "sketch", sketch_batch("d2", sketch_window(1, [0.1])).SerializeToString()),
            _msg("d1", "sketch", b"\xff\xfe not protobuf"),
            _msg("d1", "sketch", sketch_batch("d1", backwards).SerializeToString()),
            _msg("d1", "sketch", sketch_batch("d1", sketch_window(4, [0.4])).SerializeToString()),
        ]
    )
    with sessions() as s:
        assert [r.seq for r in s.exec(select(SketchRecord)).all()] == [4]
    snap = ingestor.stats.snapshot()
    assert (snap["rejected"], snap["malformed"], snap["sketch_windows"]) == (1, 2, 1)
    assert "names device 'd2' but was published on the topic of 'd1'" in caplog.text
    assert "ends (" in caplog.text and "before it starts" in caplog.text


def test_telemetry_resource_usage_is_stored_and_absent_usage_stays_null(
    ingestor: Ingestor, sessions: SessionFactory
) -> None:
    batch = telemetry_batch(
        "d1", telemetry_window(1, cpu_percent=12.5, rss_bytes=50_000_000), telemetry_window(2)
    )
    ingestor.ingest([_msg("d1", "telemetry", batch.SerializeToString())])
    with sessions() as s:
        rows = s.exec(select(TelemetryWindow).order_by(TelemetryWindow.seq)).all()  # type: ignore[arg-type]
    assert [(r.cpu_percent, r.rss_bytes, r.peak_rss_bytes) for r in rows] == [
        (12.5, 50_000_000, 100_000_000),
        (None, None, None),
    ]


def test_a_database_that_is_away_raises_so_that_nothing_is_acknowledged(
    tmp_path: Path, clock: FrozenClock
) -> None:
    # A SQLite file in a folder that does not exist cannot be opened: the database is away.
    engine = create_db_engine(f"sqlite:///{tmp_path / 'missing' / 'hub.db'}")
    ingestor = Ingestor(session_factory(engine), FleetTopics(FLEET), clock=clock)
    batch = sketch_batch("d1", sketch_window(1, [0.1])).SerializeToString()
    with pytest.raises(
        StoreUnavailableError, match="the database did not take a sketch message of device d1"
    ):
        ingestor.ingest([_msg("d1", "sketch", batch)])
    assert ingestor.stats.snapshot()["failed"] == 0  # not counted as lost: it is to be offered again
    engine.dispose()
