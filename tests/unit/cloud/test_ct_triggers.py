"""Continuous-training triggers against SQLite with a frozen clock: each kind, its threshold, and dedup.

The class is reused by the integration suite on PostgreSQL (tests/integration/cloud/test_training_db.py).
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from cloud.alerts.machine import AlertState
from cloud.alerts.service import AlertChange
from cloud.artifacts import ArtifactStore
from cloud.db import SessionFactory
from cloud.drift.tables import CohortMetric
from cloud.models import Cohort, ModelVersion
from cloud.settings import Settings
from cloud.training.continuous import triggers
from cloud.training.continuous.machine import RunEvent
from cloud.training.continuous.service import lock_run, record_transition
from cloud.training.continuous.tables import LabelledDataset, TrainingRun
from tests.unit.cloud.ct_helpers import (
    FLEET,
    FakeAlertChange,
    register,
    serve,
    set_recorded_accuracy,
    weak_champion,
)
from tests.unit.cloud.helpers import T0, FrozenClock


def _settings(settings: Settings, **ct: Any) -> Settings:
    return settings.model_copy(update=ct)


def _metric(
    fleet: str, metric: str, value: float, *, at: datetime, n: int = 0, cohort_id: int = 0, version: str = "1"
) -> CohortMetric:
    return CohortMetric(
        fleet=fleet, cohort_id=cohort_id, model_name="digits-mlp", model_version=version, bucket_start=at,
        metric=metric, value=value, n=n,
    )  # fmt: skip


def _finish(sessions: SessionFactory, run_id: str, at: datetime) -> None:
    """The run ends (the champion stays): the model may be queued again."""
    with sessions() as s:
        run = lock_run(s, run_id)
        assert run is not None
        record_transition(s, run, RunEvent.START, actor="test", now=at)
        record_transition(s, run, RunEvent.KEEP_CHAMPION, actor="test", now=at)
        s.commit()


class TestTriggers:
    @pytest.fixture
    def champion(self, sessions: SessionFactory, store: ArtifactStore, clock: FrozenClock) -> ModelVersion:
        with sessions() as s:
            version = register(s, store, weak_champion(), clock=clock)
            serve(s, version, ["d1", "d2"], clock())
            return version

    def _runs(self, sessions: SessionFactory) -> list[TrainingRun]:
        with sessions() as s:
            return list(s.exec(select(TrainingRun)).all())

    def test_no_trigger_no_run(
        self, sessions: SessionFactory, settings: Settings, champion: ModelVersion
    ) -> None:
        assert triggers.check(sessions, fleet=FLEET, now=T0, settings=settings) == []
        assert self._runs(sessions) == []

    def test_the_schedule_is_due_once_its_next_fire_time_after_the_last_run_has_come(
        self, sessions: SessionFactory, settings: Settings, champion: ModelVersion
    ) -> None:
        daily = _settings(settings, ct_schedule="0 2 * * *")  # 02:00 UTC; the champion came at 03:04
        assert triggers.check(sessions, fleet=FLEET, now=T0 + timedelta(hours=22), settings=daily) == []
        fire = datetime(2030, 1, 3, 2, 0, tzinfo=UTC)
        (run,) = triggers.check(sessions, fleet=FLEET, now=fire, settings=daily)
        assert (run.trigger, run.model_name, run.state, run.created_by) == (
            "schedule",
            "digits-mlp",
            "queued",
            "system",
        )
        assert run.trigger_detail["fire_time"] == fire.isoformat()
        assert run.trigger_detail["after"] == T0.isoformat()
        _finish(sessions, run.id, fire)
        # Counted from the last run: the next fire is tomorrow, not the one the run was queued at.
        assert triggers.check(sessions, fleet=FLEET, now=fire + timedelta(hours=23), settings=daily) == []
        (again,) = triggers.check(sessions, fleet=FLEET, now=fire + timedelta(days=1), settings=daily)
        assert again.trigger == "schedule"

    def test_a_schedule_that_is_not_crontab_queues_nothing_and_says_so(
        self,
        sessions: SessionFactory,
        settings: Settings,
        champion: ModelVersion,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        broken = _settings(settings, ct_schedule="every night")
        assert triggers.check(sessions, fleet=FLEET, now=T0 + timedelta(days=3), settings=broken) == []
        assert "EDGEFLEET_CT_SCHEDULE 'every night' is not a crontab expression" in caplog.text

    def test_a_firing_drift_alert_queues_a_run_naming_the_alert(
        self, sessions: SessionFactory, settings: Settings, champion: ModelVersion
    ) -> None:
        changes = [
            FakeAlertChange("latency", "p95_ms", "firing"),  # not drift
            FakeAlertChange("drift-eu", "drift_score", "resolved"),  # not a start of firing
            FakeAlertChange("drift-eu", "drift_score", "firing", cohort_id=7, cohort="north"),
        ]
        (run,) = triggers.check(sessions, fleet=FLEET, now=T0, changes=changes, settings=settings)
        assert run.trigger == "drift"
        detail = run.trigger_detail
        assert (detail["rule"], detail["metric"], detail["cohort_id"], detail["model_version"]) == (
            "drift-eu", "drift_score", 7, "1",
        )  # fmt: skip
        assert detail["summary"] == "alert drift-eu fires: drift_score on cohort north"

    def test_an_alert_over_every_model_retrains_each_served_model(
        self, sessions: SessionFactory, store: ArtifactStore, settings: Settings, champion: ModelVersion,
        clock: FrozenClock,
    ) -> None:  # fmt: skip
        with sessions() as s:
            other = register(s, store, weak_champion(), name="digits-cnn", version="7", clock=clock)
            serve(s, other, ["d3"], clock())
        change = FakeAlertChange("drift-all", "drift_psi", "firing", model_name="", model_version="")
        runs = triggers.check(sessions, fleet=FLEET, now=T0, changes=[change], settings=settings)
        assert sorted(r.model_name for r in runs) == ["digits-cnn", "digits-mlp"]

    def test_accuracy_below_the_champions_held_out_accuracy_by_more_than_the_drop(
        self, sessions: SessionFactory, settings: Settings, champion: ModelVersion
    ) -> None:
        with sessions() as s:
            set_recorded_accuracy(s, champion, 0.95)
            s.add(Cohort(fleet=FLEET, name="north"))
            s.commit()
            north = s.exec(select(Cohort.id).where(Cohort.name == "north")).one()
            assert north is not None
            s.add(_metric(FLEET, "accuracy", 0.90, at=T0, n=200))  # 0.05 below: within the drop
            s.add(_metric(FLEET, "accuracy", 0.70, at=T0, n=10, cohort_id=north))  # too few labelled
            s.add(
                _metric(FLEET, "accuracy", 0.70, at=T0, n=200, cohort_id=north, version="0")
            )  # not the champion
            s.commit()
        drop = _settings(settings, ct_accuracy_drop=0.1)
        assert triggers.check(sessions, fleet=FLEET, now=T0, settings=drop) == []
        with sessions() as s:
            s.add(_metric(FLEET, "accuracy", 0.80, at=T0 + timedelta(minutes=5), n=40, cohort_id=north))
            s.commit()
        (run,) = triggers.check(sessions, fleet=FLEET, now=T0 + timedelta(minutes=10), settings=drop)
        detail = run.trigger_detail
        assert run.trigger == "accuracy"
        assert (detail["cohort"], detail["accuracy"], detail["champion_accuracy"], detail["labelled"]) == (
            "cohort north", 0.80, 0.95, 40,
        )  # fmt: skip
        assert "more than 0.1 below the champion's held-out 0.950" in detail["summary"]
        # Off when the setting is 0, whatever the figures.
        _finish(sessions, run.id, T0)
        assert triggers.check(sessions, fleet=FLEET, now=T0 + timedelta(minutes=20), settings=settings) == []

    def test_new_labelled_samples_reported_plus_uploaded_since_the_last_run(
        self, sessions: SessionFactory, settings: Settings, champion: ModelVersion
    ) -> None:
        enough = _settings(settings, ct_labelled_samples=100)
        with sessions() as s:
            s.add(_metric(FLEET, "labelled", 40, at=T0))
            s.add(_metric(FLEET, "labelled", 999, at=T0, cohort_id=3))  # a cohort's rows count again: ignored
            s.add(LabelledDataset(fleet=FLEET, sha256="a" * 64, length=1, samples=30, created_at=T0))
            s.commit()
        assert triggers.check(sessions, fleet=FLEET, now=T0, settings=enough) == []  # 70 < 100
        with sessions() as s:
            s.add(LabelledDataset(fleet=FLEET, sha256="b" * 64, length=1, samples=30, model_name="digits-mlp",
                                  created_at=T0))  # fmt: skip
            s.add(LabelledDataset(fleet=FLEET, sha256="c" * 64, length=1, samples=500, model_name="other",
                                  created_at=T0))  # fmt: skip
            s.add(_metric(FLEET, "labelled", 40, at=T0 + timedelta(minutes=5)))
            s.commit()
        (run,) = triggers.check(sessions, fleet=FLEET, now=T0 + timedelta(minutes=6), settings=enough)
        assert run.trigger == "labelled"
        assert {k: run.trigger_detail[k] for k in ("reported", "uploaded", "total")} == {
            "reported": 80, "uploaded": 60, "total": 140,
        }  # fmt: skip
        later = T0 + timedelta(hours=1)
        _finish(sessions, run.id, later)
        # Counted since the last run: the samples it trained on do not queue another one.
        assert triggers.check(sessions, fleet=FLEET, now=later, settings=enough) == []

    def test_one_run_per_model_while_one_is_queued_or_running_naming_every_trigger_that_fired(
        self, sessions: SessionFactory, settings: Settings, champion: ModelVersion
    ) -> None:
        both = _settings(settings, ct_labelled_samples=10)
        with sessions() as s:
            s.add(_metric(FLEET, "labelled", 50, at=T0))
            s.commit()
        drift = [FakeAlertChange("drift-eu", "drift_score", "firing")]
        (run,) = triggers.check(sessions, fleet=FLEET, now=T0, changes=drift, settings=both)
        assert run.trigger == "drift"
        assert [t["kind"] for t in run.trigger_detail["also"]] == ["labelled"]
        # Twice, or as a second replica would: no second run while the first waits or runs.
        assert triggers.check(sessions, fleet=FLEET, now=T0, changes=drift, settings=both) == []
        with sessions() as s:
            claimed = lock_run(s, run.id)
            assert claimed is not None
            record_transition(s, claimed, RunEvent.START, actor="test", now=T0)
            s.commit()
        assert triggers.check(sessions, fleet=FLEET, now=T0, changes=drift, settings=both) == []
        assert len(self._runs(sessions)) == 1

    def test_replicas_checking_at_once_queue_one_run(
        self, sessions: SessionFactory, settings: Settings, champion: ModelVersion
    ) -> None:
        drift = [FakeAlertChange("drift-eu", "drift_score", "firing")]
        start = threading.Barrier(4)
        queued: list[int] = []
        errors: list[BaseException] = []

        def replica() -> None:
            try:
                start.wait()
                queued.append(
                    len(triggers.check(sessions, fleet=FLEET, now=T0, changes=drift, settings=settings))
                )
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=replica) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(queued) == [0, 0, 0, 1]
        assert len(self._runs(sessions)) == 1


def test_the_alerts_engines_changes_are_what_the_drift_trigger_reads() -> None:
    """The seam with cloud.alerts: its change records satisfy AlertChangeLike (mypy checks this call too)."""
    change = AlertChange(
        alert_id=1, rule="drift-eu", metric="drift_score", severity="warning", cohort_id=3, cohort="eu",
        model_name="digits-mlp", model_version="4", previous=AlertState.PENDING, state=AlertState.FIRING,
        value=1.7, comparison=">", threshold=1.0, at=T0,
    )  # fmt: skip
    (trigger,) = triggers.drift_triggers([change], ["digits-mlp"])
    assert (trigger.model_name, trigger.detail["state"], trigger.detail["cohort"]) == (
        "digits-mlp",
        "firing",
        "eu",
    )
    resolved = AlertChange(**{**asdict(change), "previous": AlertState.FIRING, "state": AlertState.RESOLVED})
    assert triggers.drift_triggers([resolved], ["digits-mlp"]) == []
