"""One device cannot sway a cohort's gate decision: its figures are combined per device, trimmed and
capped (cloud.rollouts.robust), while a regression across the cohort still fails the gate.

The figures are read from the test's SQLite database by the engine's own query (``stage_figures``),
after the devices' reports went through the hub's ingest, as in production.
"""

from __future__ import annotations

import math

import pytest

from cloud.models import Rollout
from cloud.rollouts.figures import stage_figures
from cloud.rollouts.gates import StageFigures, Verdict, judge_all
from cloud.rollouts.plan import Gates
from cloud.rollouts.robust import DeviceFigures, robust_error_rate, robust_mean, robust_p95
from tests.unit.rollouts.world import NEW, OLD, SIX, World

HONEST, LIAR = SIX[:-1], SIX[-1]
GATES = Gates()  # the defaults: error rate 0.05, p95 ratio 2x, rollbacks 5%


def staged(world: World, baseline_ms: float = 10.0) -> Rollout:
    """Every device ran the old version at ``baseline_ms``; the target is offered to all six."""
    for d in SIX:
        world.telemetry(d, OLD, requests=1000, errors=0, p95_ms=baseline_ms)
    world.clock.advance(60)
    rollout = world.create({"stages": [{"name": "all", "percent": 100, "bake": "1h"}]})
    world.tick()
    assert world.state(rollout.id) == "baking"
    world.clock.advance(60)
    return rollout


def judged(world: World, rollout: Rollout) -> tuple[StageFigures, Verdict]:
    with world.ctx.sessions() as s:
        row = s.get(Rollout, rollout.id)
        assert row is not None
        figures = stage_figures(s, row, 0, now=world.clock())
    return figures, judge_all(figures, GATES)


def failed_gates(verdict: Verdict) -> set[str]:
    return {r.gate for r in verdict.failed}


# (what the lying device reports on the target, what the pooled figures would have said)
LIES_AGAINST_A_HEALTHY_COHORT = {
    "every request an error": {"requests": 1000, "errors": 1000, "p95_ms": 10.0},
    "a million errors": {"requests": 1_000_000, "errors": 1_000_000, "p95_ms": 10.0},
    "extreme latency with huge volume": {"requests": 1_000_000, "errors": 0, "p95_ms": 100_000.0},
    "more errors than requests": {"requests": 10, "errors": 10**12, "p95_ms": 10.0},
}


@pytest.mark.parametrize("lie", LIES_AGAINST_A_HEALTHY_COHORT.values(), ids=LIES_AGAINST_A_HEALTHY_COHORT)
def test_one_device_cannot_fail_a_healthy_cohort(world: World, lie: dict[str, float]) -> None:
    rollout = staged(world)
    for d in HONEST:
        world.telemetry(d, NEW, requests=1000, errors=10, p95_ms=11.0)
    world.telemetry(LIAR, NEW, requests=int(lie["requests"]), errors=int(lie["errors"]), p95_ms=lie["p95_ms"])
    figures, verdict = judged(world, rollout)
    assert verdict.outcome == "pass", verdict.detail
    assert figures.error_rate == pytest.approx(0.01)
    assert figures.p95_ms == pytest.approx(11.0)
    # What pooling every report (weighted by requests) would have said: the lie alone fails the stage.
    pooled_rate = min(figures.errors / figures.requests, 1.0)
    pooled_p95 = (5 * 1000 * 11.0 + lie["requests"] * lie["p95_ms"]) / figures.requests
    assert pooled_rate > GATES.max_error_rate or pooled_p95 / 10.0 > GATES.max_latency_ratio  # type: ignore[operator]


LIES_FOR_A_REGRESSED_COHORT = {
    "zero errors with huge volume": {"requests": 10**12, "errors": 0, "p95_ms": 30.0},
    "tiny latency with huge volume": {"requests": 10**12, "errors": 200 * 10**9, "p95_ms": 0.001},
}


@pytest.mark.parametrize("lie", LIES_FOR_A_REGRESSED_COHORT.values(), ids=LIES_FOR_A_REGRESSED_COHORT)
def test_one_device_cannot_pass_a_regressed_cohort(world: World, lie: dict[str, float]) -> None:
    rollout = staged(world)
    for d in HONEST:  # the target is worse everywhere: 20% errors, 3x the latency
        world.telemetry(d, NEW, requests=1000, errors=200, p95_ms=30.0)
    world.telemetry(LIAR, NEW, requests=int(lie["requests"]), errors=int(lie["errors"]), p95_ms=lie["p95_ms"])
    figures, verdict = judged(world, rollout)
    assert verdict.outcome == "fail"
    assert failed_gates(verdict) == {"max_error_rate", "max_latency_ratio"}
    assert figures.error_rate == pytest.approx(0.2)
    assert figures.p95_ms == pytest.approx(30.0)
    # What pooling every report (weighted by requests) would have said: the lie alone passes the stage.
    pooled_rate = figures.errors / figures.requests
    pooled_p95 = (5 * 1000 * 30.0 + lie["requests"] * lie["p95_ms"]) / figures.requests
    assert pooled_rate <= GATES.max_error_rate or pooled_p95 / 10.0 <= GATES.max_latency_ratio  # type: ignore[operator]


def test_one_device_cannot_hide_a_latency_regression_behind_its_baseline(world: World) -> None:
    """A huge previous-version latency from one device would shrink a pooled ratio below the threshold."""
    for d in HONEST:
        world.telemetry(d, OLD, requests=1000, errors=0, p95_ms=10.0)
    world.telemetry(LIAR, OLD, requests=10**12, errors=0, p95_ms=10_000.0)
    world.clock.advance(60)
    rollout = world.create({"stages": [{"name": "all", "percent": 100, "bake": "1h"}]})
    world.tick()
    world.clock.advance(60)
    for d in SIX:
        world.telemetry(d, NEW, requests=1000, errors=0, p95_ms=30.0)
    figures, verdict = judged(world, rollout)
    assert figures.baseline_p95_ms == pytest.approx(10.0)
    assert failed_gates(verdict) == {"max_latency_ratio"}


def test_a_regression_across_the_cohort_fails_the_gate(world: World) -> None:
    rollout = staged(world)
    for i, d in enumerate(SIX):  # uneven traffic and rates, every one of them worse than the threshold
        world.telemetry(d, NEW, requests=100 * (i + 1), errors=8 * (i + 1), p95_ms=25.0 + i)
    figures, verdict = judged(world, rollout)
    assert figures.error_rate == pytest.approx(0.08)
    assert failed_gates(verdict) == {"max_error_rate", "max_latency_ratio"}


def test_rollbacks_count_devices_not_events(world: World) -> None:
    rollout = staged(world)
    for d in HONEST:
        world.committed(d)
    for _ in range(50):  # one device repeating its rollback event
        world.rolled_back(LIAR)
    figures, verdict = judged(world, rollout)
    assert (figures.rolled_back, figures.updated, figures.reporting) == (1, 5, 6)
    detail = next(r.detail for r in verdict.results if r.gate == "max_rollback_pct")
    assert "1 of 6 reporting devices" in detail


# --- the combination itself ------------------------------------------------------------------


def test_robust_mean_trims_each_end_and_caps_weights() -> None:
    assert robust_mean([]) is None
    assert robust_mean([(0.5, 10.0)]) == 0.5
    assert robust_mean([(0.0, 1e9), (1.0, 10.0)]) == pytest.approx(0.5)  # two devices: equal weights
    # The extremes go, and the busiest remaining device counts no more than the median one.
    samples = [(9.0, 1.0), (1.0, 100.0), (2.0, 1e9), (3.0, 100.0), (-5.0, 1.0)]
    assert robust_mean(samples) == pytest.approx(2.0)
    assert robust_mean([(math.nan, 1.0), (math.inf, 1.0), (2.0, 0.0), (4.0, 3.0)]) == 4.0


@pytest.mark.parametrize("n", [3, 5, 10, 31])
@pytest.mark.parametrize("lie", [-1e9, 0.0, 1e9])
@pytest.mark.parametrize("weight", [1.0, 1e12])
def test_one_value_cannot_leave_the_range_of_the_others(n: int, lie: float, weight: float) -> None:
    honest = [(1.0 + i / n, 100.0 + i) for i in range(n - 1)]
    value = robust_mean([*honest, (lie, weight)])
    assert value is not None
    assert min(v for v, _ in honest) <= value <= max(v for v, _ in honest)


def test_device_rates_ignore_devices_without_requests_and_clamp_lies() -> None:
    devices = [
        DeviceFigures("a", 0, 5, None),
        DeviceFigures("b", 100, 1, 10.0),
        DeviceFigures("c", 100, 10**6, 12.0),
    ]
    assert devices[2].error_rate == 1.0
    assert robust_error_rate(devices) == pytest.approx((0.01 + 1.0) / 2)
    assert robust_p95(devices) == pytest.approx(11.0)
    assert robust_error_rate([DeviceFigures("a", 0, 0, None)]) is None
