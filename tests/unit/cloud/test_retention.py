"""Retention: raw rows by window end, rollups and cohort metrics by bucket, in chunks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import col, select

from cloud.db import SessionFactory
from cloud.drift.tables import CohortMetric
from cloud.models import TelemetryWindow
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.telemetry.retention import expire
from cloud.telemetry.tables import CohortRollup, SketchRecord
from edgefleet_proto.topics import FleetTopics
from tests.unit.cloud.helpers import T0, FrozenClock
from tests.unit.cloud.sketch_builders import sketch_batch, sketch_window, telemetry_batch, telemetry_window

FLEET = "unit"
DAY = 86_400


def _seed(sessions: SessionFactory, clock: FrozenClock) -> None:
    """Windows ending 10, 5, 3 and 1 days before T0; rollups and metrics 500, 300 and 10 days before."""
    ingestor = Ingestor(sessions, FleetTopics(FLEET), clock=clock)
    for seq, days in enumerate((10, 5, 3, 1), start=1):
        offset = -days * DAY
        for channel, batch in (
            ("telemetry", telemetry_batch("d1", telemetry_window(seq, offset_s=offset))),
            ("sketch", sketch_batch("d1", sketch_window(seq, [0.1], offset_s=offset))),
        ):
            ingestor.ingest([InboundMessage(f"ef/v1/{FLEET}/dev/d1/{channel}", batch.SerializeToString())])
    with sessions() as s:
        for days in (500, 300, 10):
            start = T0 - timedelta(days=days)
            s.add(CohortRollup(fleet=FLEET, bucket_start=start, updated_at=T0))
            s.add(
                CohortMetric(fleet=FLEET, bucket_start=start, metric="drift_score", value=0.5, computed_at=T0)
            )
        s.commit()


def test_rows_past_their_retention_go_and_the_rest_stay(sessions: SessionFactory, clock: FrozenClock) -> None:
    _seed(sessions, clock)

    deleted = expire(sessions, now=T0, raw_retention_s=4 * DAY, rollup_retention_days=400, chunk=1)

    assert deleted == {"telemetry_window": 2, "sketch_record": 2, "cohort_rollup": 1, "cohort_metric": 1}
    with sessions() as s:
        assert sorted(w.seq for w in s.exec(select(TelemetryWindow)).all()) == [3, 4]
        assert sorted(r.seq for r in s.exec(select(SketchRecord)).all()) == [3, 4]
        kept = s.exec(select(CohortRollup.bucket_start).order_by(col(CohortRollup.bucket_start))).all()
        assert kept == [T0 - timedelta(days=300), T0 - timedelta(days=10)]
        assert len(s.exec(select(CohortMetric)).all()) == 2
    # Idempotent: a second run (or another replica) finds nothing left to delete.
    again = expire(sessions, now=T0, raw_retention_s=4 * DAY, rollup_retention_days=400)
    assert again == {"telemetry_window": 0, "sketch_record": 0, "cohort_rollup": 0, "cohort_metric": 0}


@pytest.mark.parametrize("chunk", [1, 3, 5_000])
def test_chunks_of_any_size_delete_the_same_rows(
    sessions: SessionFactory, clock: FrozenClock, chunk: int
) -> None:
    _seed(sessions, clock)
    deleted = expire(sessions, now=T0, raw_retention_s=DAY // 2, rollup_retention_days=5, chunk=chunk)
    assert deleted == {"telemetry_window": 4, "sketch_record": 4, "cohort_rollup": 3, "cohort_metric": 3}


def test_bad_arguments_say_what_was_expected(sessions: SessionFactory) -> None:
    with pytest.raises(
        ValueError, match="expected positive retentions and chunk size, got raw_retention_s=0"
    ):
        expire(sessions, now=T0, raw_retention_s=0, rollup_retention_days=1)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        expire(sessions, now=T0.replace(tzinfo=None), raw_retention_s=1, rollup_retention_days=1)
