"""The drift_score and accuracy_drop gates: judged on crafted figures, and fed from a stage's sketches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from cloud.drift import gates as drift_gates
from cloud.drift.baseline import BaselineSource
from cloud.drift.gates import ACCURACY_DROP, DRIFT_SCORE, MIN_LABELS
from cloud.models import Rollout
from cloud.rollouts.figures import stage_figures
from cloud.rollouts.gates import GateResult, StageFigures, judge_all
from cloud.rollouts.plan import Gates
from cloud.telemetry.tables import SketchRecord
from tests.unit.cloud.sketches import add_bundle, labels, normal, profile, window
from tests.unit.rollouts.world import MODEL, NEW, OLD, World

OFF = {key: None for key in Gates.model_fields if key not in ("min_reporting", "offline_grace")}


def only(key: str, threshold: float) -> Gates:
    return Gates.model_validate({**OFF, "min_reporting": 0, key: threshold})


def judged(key: str, extra: dict[str, float], threshold: float) -> GateResult:
    [result] = judge_all(StageFigures(devices=2, reporting=2, extra=extra), only(key, threshold)).results
    assert result.gate == key
    return result


# --- judged on crafted figures --------------------------------------------------------------------


def test_the_plan_accepts_both_gates_and_leaves_them_off_by_default() -> None:
    gates = Gates.model_validate({DRIFT_SCORE: 1.5, ACCURACY_DROP: 2})
    assert (gates.threshold(DRIFT_SCORE), gates.threshold(ACCURACY_DROP)) == (1.5, 2.0)
    assert Gates().threshold(DRIFT_SCORE) is None
    assert DRIFT_SCORE not in [
        r.gate for r in judge_all(StageFigures(extra={DRIFT_SCORE: 9.0}), Gates()).results
    ]


def test_drift_score_passes_at_its_threshold_and_fails_above_it() -> None:
    at = {DRIFT_SCORE: 1.0, "drift_samples": 4000, "drift_score:f0": 1.0, "drift_score:f1": 0.2}
    ok = judged(DRIFT_SCORE, at, 1.0)
    assert (ok.passed, ok.value) == (True, 1.0)
    assert (
        ok.detail == "drift score 1 (4000 predictions sketched, worst feature 'f0') is within the threshold 1"
    )
    bad = judged(DRIFT_SCORE, {**at, DRIFT_SCORE: 1.7, "drift_score:f0": 1.7}, 1.0)
    assert not bad.passed
    assert (
        bad.detail
        == "drift score 1.7 (4000 predictions sketched, worst feature 'f0') is above the threshold 1"
    )


def test_drift_score_without_sketches_or_profile_is_not_judged() -> None:
    none = judged(DRIFT_SCORE, {}, 1e-9)
    assert (none.judged, none.passed) == (False, True)
    assert none.detail == "drift score not judged: no sketch of the target from the stage's devices yet"
    no_profile = judged(DRIFT_SCORE, {"drift_samples": 30}, 1e-9)
    assert not no_profile.judged
    assert no_profile.detail == (
        "drift score not judged: no baseline profile of the target to compare 30 sketched predictions with"
    )


def test_accuracy_drop_passes_at_its_threshold_and_fails_above_it() -> None:
    figures = {
        "accuracy_labelled": 400,
        "accuracy_target": 88.0,
        "accuracy_reference": 90.0,
        "accuracy_reference_labelled": 1000,
        ACCURACY_DROP: 2.0,
    }
    ok = judged(ACCURACY_DROP, figures, 2.0)
    assert ok.passed
    assert ok.detail == (
        "accuracy drop 2 points (88% on 400 labels, 90% 1000 labels before) is within the threshold 2 points"
    )
    worse = {**figures, "accuracy_target": 85.0, ACCURACY_DROP: 5.0, "accuracy_reference_labelled": 0}
    bad = judged(ACCURACY_DROP, worse, 2.0)
    assert not bad.passed
    assert bad.detail == (
        "accuracy drop 5 points (85% on 400 labels, 90% held out in the bundle) "
        "is above the threshold 2 points"
    )


def test_accuracy_drop_needs_enough_labels_and_a_reference() -> None:
    few = judged(ACCURACY_DROP, {"accuracy_labelled": MIN_LABELS - 1, ACCURACY_DROP: 50.0}, 1.0)
    assert (few.judged, few.passed) == (False, True)
    needed = f"{MIN_LABELS - 1} labelled predictions on the target, {MIN_LABELS} needed"
    assert few.detail == f"accuracy drop not judged: {needed}"
    alone = judged(ACCURACY_DROP, {"accuracy_labelled": 1000, "accuracy_target": 50.0}, 1.0)
    assert not alone.judged
    assert "no labelled accuracy of the previous version and no held-out accuracy" in alone.detail


# --- fed from the stage's sketch windows ----------------------------------------------------------

N = 5000


@pytest.fixture
def drifting(canary: World) -> Iterator[World]:
    """The canary world with a bundle profile for the target and the gates pointed at its store."""
    data = profile(
        model=MODEL,
        version=NEW,
        features={"f0": normal(100, N), "f1": normal(101, N)},
        class_distribution=[0.5, 0.5],
        class_names=["a", "b"],
    )
    with canary.ctx.sessions() as s:
        add_bundle(s, canary.ctx.store, data, metrics={"fp32_test_accuracy": 0.95})
    drift_gates.configure(BaselineSource(canary.ctx.sessions, canary.ctx.store), alpha=0.01)
    yield canary
    drift_gates.configure(None)
    drift_gates.forget()


def start(world: World, gates: dict[str, object]) -> Rollout:
    stages = [{"name": "canary", "cohort": "canary", "bake": "1h"}]
    r = world.create({"stages": stages, "gates": gates, "on_failure": "pause"})
    world.tick()
    assert sorted(world.offered(r.id)) == ["d0", "d1"]
    world.committed("d0", "d1")
    return r


def send(
    world: World,
    device: str,
    version: str,
    at: datetime,
    *,
    shift: float = 0.0,
    cells: dict[str, dict[tuple[int, int], int]] | None = None,
    seq: int,
) -> None:
    """A sketch window the device sent, stored as ingest stores it."""
    found = [labels(v, c) for v, c in (cells or {}).items()]
    w = window(
        model=MODEL,
        version=version,
        features={"f0": normal(seq, N, shift), "f1": normal(seq + 1000, N)},
        class_counts=[N // 2, N - N // 2],
        label_counts=found,
        seq=seq,
    )
    with world.ctx.sessions() as s:
        s.add(
            SketchRecord(
                device_id=device,
                seq=seq,
                window_start=at - timedelta(minutes=1),
                window_end=at,
                model_name=MODEL,
                model_version=version,
                samples=w.samples,
                payload=w.SerializeToString(),
                received_at=at,
            )
        )
        s.commit()


def figures(world: World, rollout_id: str) -> StageFigures:
    with world.ctx.sessions() as s:
        return stage_figures(s, world.rollout(rollout_id), 0, now=world.clock())


def right(share: float, n: int) -> dict[tuple[int, int], int]:
    """Confusion cells of n labels of class 0, ``share`` of them right."""
    good = round(share * n)
    return {(0, 0): good, (0, 1): n - good}


def test_a_shifted_feature_on_the_stage_fails_drift_score_and_pauses(drifting: World) -> None:
    world = drifting
    r = start(world, {DRIFT_SCORE: 1.0})
    offered = world.clock()
    world.clock.advance(60)
    send(world, "d0", NEW, world.clock(), shift=0.5, seq=1)
    send(world, "d1", NEW, world.clock(), shift=0.5, seq=2)
    # Not the stage's: another device on the target, and a window from before the offer.
    send(world, "d4", NEW, world.clock(), shift=-3.0, seq=3)
    send(world, "d0", NEW, offered - timedelta(minutes=5), shift=-3.0, seq=4)
    extra = figures(world, r.id).extra
    assert extra["drift_samples"] == 2 * N
    assert extra[DRIFT_SCORE] == extra["drift_score:f0"] > 1.0
    assert extra["drift_score:f1"] < 1.0
    world.tick()
    assert world.state(r.id) == "paused"
    last = world.transitions(r.id)[-1]
    assert "drift score" in last.reason and "worst feature 'f0'" in last.reason
    assert last.figures["figures"][DRIFT_SCORE] == extra[DRIFT_SCORE]


def test_the_same_distribution_passes_and_new_windows_are_added(drifting: World) -> None:
    world = drifting
    r = start(world, {DRIFT_SCORE: 1.0})
    world.clock.advance(60)
    send(world, "d0", NEW, world.clock(), seq=1)
    first = figures(world, r.id).extra
    assert first["drift_samples"] == N and first[DRIFT_SCORE] < 1.0
    send(world, "d1", NEW, world.clock(), shift=1.0, seq=2)
    second = figures(world, r.id).extra
    assert second["drift_samples"] == 2 * N
    assert second[DRIFT_SCORE] > 1.0


def test_accuracy_drop_against_the_previous_version_on_the_same_devices(drifting: World) -> None:
    world = drifting
    r = start(world, {ACCURACY_DROP: 5.0})
    world.clock.advance(60)
    now = world.clock()
    send(world, "d0", OLD, now - timedelta(hours=2), cells={OLD: right(0.9, 300)}, seq=1)
    send(world, "d0", NEW, now, cells={NEW: right(0.8, 150)}, seq=2)
    send(world, "d1", NEW, now, cells={NEW: right(0.8, 150)}, seq=3)
    # Labels of another device, and from before the lookback, do not count.
    send(world, "d4", NEW, now, cells={NEW: right(0.0, 1000)}, seq=4)
    send(world, "d1", OLD, now - timedelta(days=3), cells={OLD: right(0.0, 1000)}, seq=5)
    extra = figures(world, r.id).extra
    assert extra["accuracy_labelled"] == 300
    assert extra["accuracy_target"] == pytest.approx(80.0)
    assert extra["accuracy_reference"] == pytest.approx(90.0)
    assert extra["accuracy_reference_labelled"] == 300
    assert extra[ACCURACY_DROP] == pytest.approx(10.0)
    assert DRIFT_SCORE not in extra, "a gate the plan leaves off costs nothing"
    world.tick()
    assert world.state(r.id) == "paused"
    assert "accuracy drop 10 points" in world.transitions(r.id)[-1].reason


def test_accuracy_drop_falls_back_to_the_bundle_and_waits_for_labels(drifting: World) -> None:
    world = drifting
    r = start(world, {ACCURACY_DROP: 6.0})
    world.clock.advance(60)
    send(world, "d0", NEW, world.clock(), cells={NEW: right(0.9, MIN_LABELS - 1)}, seq=1)
    few = figures(world, r.id)
    verdict = judge_all(few, Gates.model_validate({ACCURACY_DROP: 5.0}))
    assert [g.judged for g in verdict.results if g.gate == ACCURACY_DROP] == [False]
    send(world, "d1", NEW, world.clock(), cells={NEW: right(0.9, 101)}, seq=2)
    extra = figures(world, r.id).extra
    assert extra["accuracy_labelled"] == MIN_LABELS + 100
    assert extra["accuracy_reference"] == pytest.approx(95.0)
    assert extra["accuracy_reference_labelled"] == 0
    assert extra[ACCURACY_DROP] == pytest.approx(95.0 - extra["accuracy_target"])
    world.tick()
    assert world.state(r.id) == "baking"


def test_without_the_gates_in_the_plan_no_sketch_is_read(drifting: World) -> None:
    world = drifting
    r = start(world, {})
    world.clock.advance(60)
    send(world, "d0", NEW, world.clock(), shift=2.0, seq=1)
    assert figures(world, r.id).extra == {}


def test_without_a_baseline_source_drift_is_not_judged(drifting: World) -> None:
    drift_gates.configure(None)
    world = drifting
    r = start(world, {DRIFT_SCORE: 1.0})
    world.clock.advance(60)
    send(world, "d0", NEW, world.clock(), shift=2.0, seq=1)
    extra = figures(world, r.id).extra
    assert extra == {"drift_samples": N}
    world.tick()
    assert world.state(r.id) == "baking"


def test_configure_refuses_a_bad_alpha() -> None:
    with pytest.raises(ValueError, match=r"alpha: expected a significance level in \(0, 1\), got 0"):
        drift_gates.configure(None, alpha=0)
