"""The rollout engine on SQLite and on the real PostgreSQL: the unit suite's scenarios, ticks racing
from several threads as replicas would, figures aggregated in SQL, and the scheduler's job store."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from cloud.context import HubContext
from cloud.db import transaction
from cloud.models import Rollout
from cloud.rollouts import engine, service
from cloud.rollouts.figures import stage_figures
from cloud.rollouts.scheduler import RolloutScheduler
from tests.integration.cloud.mqtt_probe import wait_for
from tests.unit.rollouts import test_engine as unit
from tests.unit.rollouts.world import NEW, OLD, SIX, World

pytestmark = pytest.mark.integration

# Every scenario of the unit suite, on both databases (db_url is parametrized in conftest).
test_rate_limit = unit.test_a_stage_is_offered_at_most_max_rate_a_minute
test_double_tick = unit.test_a_tick_twice_at_the_same_instant_does_nothing_the_second_time
test_promote = unit.test_bake_then_promote_through_every_stage
test_gate_abort = unit.test_a_failing_gate_aborts_at_once_and_gives_every_offered_device_its_previous_version
test_gate_pause = unit.test_a_failing_gate_pauses_when_the_plan_says_so_and_resume_judges_afresh
test_late_joiner = unit.test_a_device_that_joins_the_cohort_later_is_offered_by_a_later_tick
test_window = unit.test_no_device_is_offered_while_the_maintenance_window_is_closed
test_approval = unit.test_a_stage_that_needs_approval_waits_for_an_operator
test_abort = unit.test_an_operator_abort_gives_the_previous_version_back
test_refused = unit.test_a_device_that_rolled_the_target_back_is_never_offered_it_again
test_offline = unit.test_offline_devices_wait_and_are_offered_when_they_come_back
test_conflict = unit.test_one_active_rollout_per_device_unless_superseded
test_plan_refused = unit.test_a_plan_naming_what_the_hub_does_not_have_is_refused


def test_replicas_ticking_at_once_offer_each_device_once(world: World) -> None:
    r = world.create({"stages": [{"name": "all", "percent": 100, "bake": "1h"}]})
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def replica(n: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                engine.tick(world.ctx, world.clock(), owner=f"replica-{n}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(world.offered(r.id)) == SIX
    assert world.chain(r.id) == ["draft", "running", "baking"]
    assert [t.seq for t in world.transitions(r.id)] == [1, 2]
    # Offered once each: one generation above the assignment of the old version, published once.
    assert {d: world.generation(d) for d in SIX} == dict.fromkeys(SIX, 2)
    published = Counter(d for d, _ in world.publisher.history)
    assert published == dict.fromkeys(SIX, 2)  # the old version's assignment, then the target
    with world.ctx.sessions() as s:
        row = s.get(Rollout, r.id)
        assert row is not None and row.lease_owner == "" and row.lease_until is None


def test_the_latency_gate_compares_with_the_previous_version_on_the_same_devices(canary: World) -> None:
    world = canary
    for d in ("d0", "d1"):
        world.telemetry(d, OLD, requests=100, errors=0, p95_ms=10.0)
    world.clock.advance(60)
    r = world.create({"stages": [{"name": "canary", "cohort": "canary", "bake": "1h"}]})
    world.tick()
    assert world.state(r.id) == "baking"
    world.clock.advance(60)
    # Both devices slower: a regression of the cohort, not one device's report.
    world.telemetry("d0", NEW, requests=300, errors=3, p95_ms=30.0)
    world.telemetry("d1", NEW, requests=100, errors=1, p95_ms=26.0)
    with world.ctx.sessions() as s:
        row = s.get(Rollout, r.id)
        assert row is not None
        figures = stage_figures(s, row, 0, now=world.clock())
    assert (figures.devices, figures.reporting, figures.requests, figures.errors) == (2, 2, 400, 4)
    # Per device, then combined with no device weighing more than the median one: (30 + 26) / 2.
    assert figures.p95_ms == pytest.approx(28.0)
    assert figures.baseline_p95_ms == pytest.approx(10.0)
    world.tick()
    assert world.state(r.id) == "rolled_back"
    failed = next(t for t in world.transitions(r.id) if t.event == "gates_failed_abort")
    assert [g["gate"] for g in failed.figures["gates"] if not g["passed"]] == ["max_latency_ratio"]


def test_the_scheduler_ticks_from_its_job_store_and_at_once_when_kicked(
    ctx: HubContext, world: World
) -> None:
    # The interval is an hour: only the first run and the kicks can advance anything.
    scheduler = RolloutScheduler(ctx, interval_s=3600, owner="scheduler-test")
    first = world.create({"stages": [{"name": "all", "percent": 100, "bake": "1h"}]})
    scheduler.start()
    try:
        wait_for(lambda: world.state(first.id) == "baking", timeout=30)
        with transaction(ctx.sessions) as s:
            service.abort(s, ctx.settings.fleet, first.id, actor="op", clock=world.clock)
        scheduler.kick()
        wait_for(lambda: world.state(first.id) == "rolled_back", timeout=30)
        # Published after the decision's commit (sealing comes in between): wait for the broker's copy.
        wait_for(lambda: all(world.desired_version(d) == OLD for d in SIX), timeout=30)
    finally:
        scheduler.stop()
