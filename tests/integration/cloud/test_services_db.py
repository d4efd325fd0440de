"""The service tests of the unit suite, on SQLite and on the real PostgreSQL (see conftest.db_url)."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import select

from cloud.db import SessionFactory
from cloud.models import DesiredState
from cloud.services import assignments
from cloud.services.publisher import RecordingPublisher
from edgefleet_proto.v1 import desired_pb2
from tests.unit.cloud.test_assignments import TestAssignments
from tests.unit.cloud.test_ingest import TestIngest
from tests.unit.cloud.test_registry import TestRegistry
from tests.unit.cloud.test_tokens import TestTokens

__all__ = ["TestAssignments", "TestIngest", "TestRegistry", "TestTokens"]

pytestmark = pytest.mark.integration


class TestConcurrentAssignments(TestAssignments):
    """Generations stay unique when assignments race (row locks on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""

    def test_parallel_assignments_never_reuse_a_generation(
        self, sessions: SessionFactory, publisher: RecordingPublisher
    ) -> None:
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def run() -> None:
            try:
                start.wait()
                for _ in range(5):
                    with sessions() as s:
                        assignments.assign(
                            s,
                            publisher,
                            "digits",
                            "1",
                            device_ids=["d1"],
                            fleet="unit",
                            artifact_endpoint="x:1",
                        )
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with sessions() as s:
            row = s.exec(select(DesiredState).where(DesiredState.device_id == "d1")).one()
        assert row.generation == 20
        published = [
            desired_pb2.DesiredState.FromString(p).generation for d, p in publisher.history if d == "d1"
        ]
        assert sorted(published) == list(range(1, 21))
