"""The rollup and retention unit tests again, on SQLite and on the real PostgreSQL (set-based SQL
that differs per dialect: bucket arithmetic, upserts, chunked deletes)."""

from __future__ import annotations

import pytest

from cloud.db import SessionFactory
from tests.unit.cloud import test_retention as retention
from tests.unit.cloud import test_rollup as rollup
from tests.unit.cloud.helpers import FrozenClock

pytestmark = pytest.mark.integration


def test_a_bucket_sums_its_windows_per_fleet_and_cohort(sessions: SessionFactory, clock: FrozenClock) -> None:
    rollup.test_a_bucket_sums_its_windows_per_fleet_and_cohort(rollup.Fleet(sessions, clock), sessions, clock)


def test_late_rows_join_their_bucket(sessions: SessionFactory, clock: FrozenClock) -> None:
    rollup.test_only_buckets_with_new_rows_are_rebuilt_and_late_rows_join_their_bucket(
        rollup.Fleet(sessions, clock), clock
    )


def test_membership_is_read_at_rebuild(sessions: SessionFactory, clock: FrozenClock) -> None:
    rollup.test_membership_is_read_at_rebuild_and_a_cohort_that_lost_the_bucket_loses_its_rollup(
        rollup.Fleet(sessions, clock), sessions, clock
    )


def test_rebuilding_again_writes_the_same_rollups(sessions: SessionFactory, clock: FrozenClock) -> None:
    rollup.test_rebuilding_again_writes_the_same_rollups(rollup.Fleet(sessions, clock), clock)


@pytest.mark.parametrize("chunk", [1, 5_000])
def test_retention_deletes_what_is_past_it(sessions: SessionFactory, clock: FrozenClock, chunk: int) -> None:
    retention.test_chunks_of_any_size_delete_the_same_rows(sessions, clock, chunk)
