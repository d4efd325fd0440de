"""Gates judged on crafted figures: each passes at its threshold, fails above it, and says why."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cloud.rollouts.gates import (
    BUILTIN_KEYS,
    GateResult,
    StageFigures,
    judge_all,
    register_gate,
    registered,
    unregister_gate,
)
from cloud.rollouts.plan import Gates

ONLY = dict.fromkeys(BUILTIN_KEYS)


def only(key: str, threshold: float, **other: float) -> Gates:
    """The plan's gates with every built-in gate off but ``key``."""
    return Gates.model_validate({**ONLY, key: threshold, "min_reporting": 0, **other})


def result(key: str, figures: StageFigures, threshold: float) -> GateResult:
    verdict = judge_all(figures, only(key, threshold))
    [one] = verdict.results
    assert one.gate == key
    return one


# Per gate: figures at the threshold, figures just above it, and the sentence fragments naming both.
CASES = {
    "max_update_failure_pct": (
        StageFigures(devices=20, reporting=20, failed=2),
        StageFigures(devices=20, reporting=20, failed=3),
        10.0,
        (
            "update failure 10% (2 of 20 reporting devices) is within the threshold 10%",
            "update failure 15% (3 of 20 reporting devices) is above the threshold 10%",
        ),
    ),
    "max_rollback_pct": (
        StageFigures(devices=40, reporting=20, rolled_back=1),
        StageFigures(devices=40, reporting=20, rolled_back=2),
        5.0,
        (
            "rollbacks 5% (1 of 20 reporting devices) is within the threshold 5%",
            "rollbacks 10% (2 of 20 reporting devices) is above the threshold 5%",
        ),
    ),
    "max_error_rate": (
        StageFigures(devices=5, reporting=5, requests=1000, errors=50),
        StageFigures(devices=5, reporting=5, requests=1000, errors=51),
        0.05,
        (
            "error rate 0.05 (50 errors in 1000 requests) is within the threshold 0.05",
            "error rate 0.051 (51 errors in 1000 requests) is above the threshold 0.05",
        ),
    ),
    "max_latency_ratio": (
        StageFigures(devices=5, reporting=5, p95_ms=20.0, baseline_p95_ms=10.0),
        StageFigures(devices=5, reporting=5, p95_ms=20.5, baseline_p95_ms=10.0),
        2.0,
        (
            "p95 latency ratio 2x (20 ms on the target, 10 ms before) is within the threshold 2x",
            "p95 latency ratio 2.05x (20.5 ms on the target, 10 ms before) is above the threshold 2x",
        ),
    ),
    "max_offline_pct": (
        StageFigures(devices=10, reporting=10, offline=2),
        StageFigures(devices=10, reporting=10, offline=3),
        20.0,
        (
            "offline 20% (2 of 10 offered devices) is within the threshold 20%",
            "offline 30% (3 of 10 offered devices) is above the threshold 20%",
        ),
    ),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_each_gate_passes_at_its_threshold_and_fails_above_it(key: str) -> None:
    at, above, threshold, (passing, failing) = CASES[key]
    ok = result(key, at, threshold)
    assert (ok.passed, ok.judged, ok.threshold, ok.detail) == (True, True, threshold, passing)
    bad = result(key, above, threshold)
    assert (bad.passed, bad.detail) == (False, failing)
    assert bad.value is not None and bad.value > threshold
    verdict = judge_all(above, only(key, threshold))
    assert verdict.outcome == "fail"
    assert verdict.failed == [bad]
    assert verdict.detail == failing


NOT_JUDGED = {
    "max_update_failure_pct": (
        StageFigures(devices=10),
        "update failure not judged: no reporting devices yet",
    ),
    "max_rollback_pct": (StageFigures(devices=10), "rollbacks not judged: no reporting devices yet"),
    "max_error_rate": (
        StageFigures(devices=10, reporting=3),
        "error rate not judged: no request served by the target yet",
    ),
    "max_latency_ratio": (
        StageFigures(devices=10, reporting=3, baseline_p95_ms=10.0),
        "p95 latency ratio not judged: no latency reported on the target yet",
    ),
    "max_offline_pct": (StageFigures(), "offline not judged: no offered devices yet"),
}


@pytest.mark.parametrize("key", sorted(NOT_JUDGED))
def test_a_gate_without_figures_is_not_judged_and_does_not_fail(key: str) -> None:
    figures, detail = NOT_JUDGED[key]
    one = result(key, figures, 1e-9)  # even the strictest threshold
    assert (one.value, one.judged, one.passed, one.detail) == (None, False, True, detail)
    assert judge_all(figures, only(key, 1e-9)).outcome == "pass"


def test_latency_without_a_baseline_is_not_judged() -> None:
    one = result("max_latency_ratio", StageFigures(devices=3, reporting=3, p95_ms=900.0), 1.0)
    assert not one.judged
    assert one.detail == "p95 latency ratio not judged: no latency of the previous version to compare"


def test_too_few_reporting_devices_is_insufficient_whatever_the_gates_say() -> None:
    gates = Gates(min_reporting=5)
    figures = StageFigures(devices=20, reporting=4, rolled_back=4)
    verdict = judge_all(figures, gates)
    assert verdict.outcome == "insufficient"
    assert verdict.failed == []
    assert verdict.detail == "4 of the 5 devices needed have reported"
    # The results are still there to show.
    assert {r.gate: r.passed for r in verdict.results}["max_rollback_pct"] is False
    assert judge_all(StageFigures(devices=20, reporting=5, rolled_back=0), gates).outcome == "pass"


def test_a_stage_smaller_than_min_reporting_needs_every_device_only() -> None:
    gates = Gates(min_reporting=5)
    assert judge_all(StageFigures(devices=3, reporting=2), gates).outcome == "insufficient"
    assert judge_all(StageFigures(devices=3, reporting=3, updated=3), gates).outcome == "pass"


def test_devices_gone_dark_fail_the_stage_before_enough_report() -> None:
    gates = Gates(min_reporting=5)
    verdict = judge_all(StageFigures(devices=10, reporting=1, offline=9), gates)
    assert verdict.outcome == "fail"
    assert [r.gate for r in verdict.failed] == ["max_offline_pct"]


def test_all_gates_pass_and_gates_turned_off_are_not_judged() -> None:
    figures = StageFigures(
        devices=10, updated=10, reporting=10, requests=100, errors=1, p95_ms=11.0, baseline_p95_ms=10.0
    )
    verdict = judge_all(figures, Gates())
    assert verdict.outcome == "pass"
    assert [r.gate for r in verdict.results] == list(BUILTIN_KEYS)
    assert verdict.detail == "5 of 5 gates judged, all within their thresholds"
    off = judge_all(figures, Gates(max_latency_ratio=None, max_error_rate=None))
    assert [r.gate for r in off.results] == ["max_update_failure_pct", "max_rollback_pct", "max_offline_pct"]


def test_every_failing_gate_is_listed() -> None:
    figures = StageFigures(devices=10, reporting=10, failed=5, rolled_back=5, requests=10, errors=5)
    verdict = judge_all(figures, Gates())
    assert [r.gate for r in verdict.failed] == [
        "max_update_failure_pct",
        "max_rollback_pct",
        "max_error_rate",
    ]
    assert verdict.detail.count(" is above the threshold ") == 3


@dataclass(frozen=True)
class DriftGate:
    """A custom gate as a drift module would register one: reads its figure from ``extra``."""

    key: str = "max_drift_score"

    def judge(self, figures: StageFigures, threshold: float) -> GateResult:
        score = figures.extra.get(self.key)
        if score is None:
            return GateResult(self.key, None, threshold, True, "drift not judged: no sketch yet")
        word = "within" if score <= threshold else "above"
        return GateResult(
            self.key, score, threshold, score <= threshold, f"drift {score} is {word} {threshold}"
        )


@pytest.fixture
def drift_gate() -> Iterator[DriftGate]:
    gate = DriftGate()
    register_gate(gate.key, gate)
    yield gate
    unregister_gate(gate.key)


def test_a_registered_gate_takes_part_when_the_plan_sets_its_threshold(drift_gate: DriftGate) -> None:
    gates = Gates.model_validate({"max_drift_score": 0.3})
    calm = StageFigures(devices=4, reporting=4, extra={"max_drift_score": 0.1})
    drifting = StageFigures(devices=4, reporting=4, extra={"max_drift_score": 0.6})
    assert judge_all(calm, gates).outcome == "pass"
    verdict = judge_all(drifting, gates)
    assert verdict.outcome == "fail"
    assert [r.gate for r in verdict.failed] == ["max_drift_score"]
    assert verdict.results[-1].detail == "drift 0.6 is above 0.3"
    # A plan that gives it no threshold leaves it out.
    assert "max_drift_score" not in [r.gate for r in judge_all(drifting, Gates()).results]


def test_registering_checks_the_key(drift_gate: DriftGate) -> None:
    assert "max_drift_score" in registered()
    with pytest.raises(ValueError, match="expected a key not registered yet, got 'max_drift_score'"):
        register_gate("max_drift_score", drift_gate)
    with pytest.raises(ValueError, match="expected the gate's own key 'max_drift_score', got 'drift'"):
        register_gate("drift", drift_gate)
    with pytest.raises(ValueError, match="expected a lower-case identifier"):
        register_gate("Max Drift", DriftGate(key="Max Drift"))
    with pytest.raises(ValueError, match="expected a registered \\(not built-in\\) gate"):
        unregister_gate("max_offline_pct")
