"""Claiming queued training runs: one run at a time per fleet, one replica per run, expired claims.

The class is reused by the integration suite on PostgreSQL (tests/integration/cloud/test_training_db.py).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from cloud.artifacts import ArtifactStore
from cloud.db import SessionFactory
from cloud.errors import ConflictError
from cloud.training.continuous import service
from cloud.training.continuous.pipeline import run_pending
from cloud.training.continuous.service import TrainingRunRecord
from cloud.training.continuous.tables import TrainingRun
from tests.unit.cloud.ct_helpers import FLEET, register
from tests.unit.cloud.helpers import T0, tiny_onnx


def _queue(sessions: SessionFactory, model: str, *, minutes: int = 0, fleet: str = FLEET) -> str:
    with sessions() as s:
        run = service.queue_run(
            s, fleet=fleet, model_name=model, trigger="manual", detail={"summary": "test"}, actor="test",
            now=T0 + timedelta(minutes=minutes),
        )  # fmt: skip
        assert run is not None
        s.commit()
        return run.id


def _row(sessions: SessionFactory, run_id: str) -> TrainingRun:
    with sessions() as s:
        row = s.get(TrainingRun, run_id)
        assert row is not None
        return row


class TestClaims:
    def test_the_oldest_queued_run_is_claimed_and_one_runs_at_a_time_per_fleet(
        self, sessions: SessionFactory
    ) -> None:
        later = _queue(sessions, "b", minutes=1)
        first = _queue(sessions, "a")
        elsewhere = _queue(sessions, "a", fleet="other")
        claimed = run_pending(sessions, fleet=FLEET, now=T0, owner="hub-a", lease_s=60)
        assert claimed is not None
        assert (claimed.id, claimed.state, claimed.owner, claimed.started_at) == (
            first,
            "running",
            "hub-a",
            T0,
        )
        assert claimed.lease_until == T0 + timedelta(seconds=60)
        assert run_pending(sessions, fleet=FLEET, now=T0, owner="hub-b") is None  # the fleet's one is running
        # Another fleet's queue is its own.
        other = run_pending(sessions, fleet="other", now=T0, owner="hub-b")
        assert other is not None and other.id == elsewhere
        assert _row(sessions, later).state == "queued"

    def test_replicas_racing_claim_a_run_once(self, sessions: SessionFactory) -> None:
        _queue(sessions, "a")
        _queue(sessions, "b")
        start = threading.Barrier(4)
        got: list[TrainingRunRecord | None] = []
        errors: list[BaseException] = []

        def claim(owner: str) -> None:
            try:
                start.wait()
                got.append(run_pending(sessions, fleet=FLEET, now=T0, owner=owner))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=claim, args=(f"hub-{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len([g for g in got if g is not None]) == 1

    def test_a_claim_that_ran_out_fails_the_run_with_the_reason_and_frees_the_fleet(
        self, sessions: SessionFactory
    ) -> None:
        stale = _queue(sessions, "a")
        waiting = _queue(sessions, "b", minutes=1)
        assert run_pending(sessions, fleet=FLEET, now=T0, owner="hub-a", lease_s=60) is not None
        assert run_pending(sessions, fleet=FLEET, now=T0 + timedelta(seconds=59), owner="hub-b") is None
        claimed = run_pending(sessions, fleet=FLEET, now=T0 + timedelta(seconds=61), owner="hub-b")
        assert claimed is not None and claimed.id == waiting
        failed = _row(sessions, stale)
        assert failed.state == "failed"
        assert failed.error == (
            "the hub replica hub-a running it stopped answering: no progress since its claim ran out at "
            f"{T0 + timedelta(seconds=60):%Y-%m-%d %H:%M:%S} UTC"
        )

    def test_a_second_run_of_a_model_is_refused_while_one_waits(
        self, sessions: SessionFactory, store: ArtifactStore
    ) -> None:
        first = _queue(sessions, "tiny")
        with sessions() as s:
            assert service.queue_run(
                s, fleet=FLEET, model_name="tiny", trigger="drift", detail={}, actor="system", now=T0
            ) is None  # fmt: skip
            s.rollback()
            register(s, store, tiny_onnx(), name="tiny", clock=lambda: T0)
            with pytest.raises(ConflictError, match=f"model tiny already has a training run queued: {first}"):
                service.start_manual(s, FLEET, "tiny", actor="ops")

    def test_a_queued_run_can_be_cancelled(self, sessions: SessionFactory) -> None:
        run_id = _queue(sessions, "a")
        with sessions() as s:
            row = service.reject(s, FLEET, run_id[:8], actor="ops", reason="not now")
        assert (row.state, row.transitions[-1]["reason"], row.transitions[-1]["actor"]) == (
            "rejected",
            "not now",
            "ops",
        )
        assert run_pending(sessions, fleet=FLEET, now=T0, owner="hub-a") is None
        assert _queue(sessions, "a", minutes=1)  # the model may be queued again
