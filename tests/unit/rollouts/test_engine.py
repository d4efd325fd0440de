"""The rollout engine's tick on a real SQLite file, with the clock frozen and moved by each test.

Devices report through the hub's ingest (statuses, events, telemetry), the operator acts through
the rollout service, and what devices are told arrives in an in-memory publisher (the broker's
retained store): the only stand-in here.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from cloud.errors import ConflictError
from cloud.models import Rollout
from cloud.rollouts import engine, service
from cloud.rollouts.plan import PlanError
from tests.unit.rollouts.world import NEW, OLD, SIX, World


def _all(bake: str = "0s", **stage: object) -> dict[str, object]:
    return {"name": "all", "percent": 100, "bake": bake, **stage}


def test_a_stage_is_offered_at_most_max_rate_a_minute(world: World) -> None:
    r = world.create({"stages": [_all(bake="1h", max_rate=2)]})
    world.tick()
    assert len(world.offered(r.id)) == 2
    assert world.state(r.id) == "running"
    world.clock.advance(59)
    world.tick()
    assert len(world.offered(r.id)) == 2, "the third device waits for the minute to pass"
    assert world.rollout(r.id).next_action_at == world.clock.now + timedelta(seconds=1)
    world.clock.advance(1)
    world.tick()
    assert len(world.offered(r.id)) == 4
    world.clock.advance(60)
    world.tick()
    offered = world.offered(r.id)
    assert sorted(offered) == SIX
    assert world.state(r.id) == "baking"
    # Each device was told to run the target, a generation above the one it had, and its
    # previous version is kept to give back.
    for d, row in offered.items():
        assert world.desired_version(d) == NEW
        assert world.generation(d) == 2
        assert row.previous["version"] == OLD


def test_a_tick_twice_at_the_same_instant_does_nothing_the_second_time(world: World) -> None:
    r = world.create({"stages": [_all(bake="1h")]})
    assert world.tick() == [r.id]
    published = len(world.publisher.history)
    steps = world.transitions(r.id)
    assert world.tick() == []
    assert len(world.publisher.history) == published
    assert world.transitions(r.id) == steps
    assert world.chain(r.id) == ["draft", "running", "baking"]


def test_bake_then_promote_through_every_stage(canary: World) -> None:
    world = canary
    r = world.create({"stages": [{"name": "canary", "cohort": "canary", "bake": "10m"}, _all(name="rest")]})
    world.tick()
    canary_ids = sorted(world.offered(r.id))
    assert canary_ids == ["d0", "d1"]
    assert world.state(r.id) == "baking"
    world.committed(*canary_ids)
    world.clock.advance(599)
    world.tick()
    assert world.state(r.id) == "baking", "the bake takes ten minutes"
    world.clock.advance(1)
    world.tick()
    rest = sorted(set(world.offered(r.id)) - set(canary_ids))
    world.committed(*rest)
    world.tick()
    assert world.state(r.id) == "completed"
    assert sorted(world.offered(r.id)) == SIX
    assert world.chain(r.id) == [
        "draft", "running", "baking", "promoting", "running", "baking", "promoting", "completed",
    ]  # fmt: skip
    baked = next(t for t in world.transitions(r.id) if t.event == "baked")
    assert baked.actor == "system"
    assert baked.figures["figures"]["updated"] == 2
    assert baked.figures["verdict"] == "pass"


def test_a_failing_gate_aborts_at_once_and_gives_every_offered_device_its_previous_version(
    canary: World,
) -> None:
    world = canary
    r = world.create({"stages": [{"name": "canary", "cohort": "canary", "bake": "1h"}, _all()]})
    world.tick()
    offered = sorted(world.offered(r.id))
    assert offered == ["d0", "d1"]
    world.committed("d0")
    world.rolled_back("d1")
    world.tick()
    assert world.state(r.id) == "rolled_back"
    assert world.chain(r.id) == ["draft", "running", "baking", "aborting", "rolled_back"]
    failed = next(t for t in world.transitions(r.id) if t.event == "gates_failed_abort")
    assert failed.actor == "system"
    assert failed.figures["figures"]["rolled_back"] == 1
    assert any(g["gate"] == "max_rollback_pct" and not g["passed"] for g in failed.figures["gates"])
    assert "rollback" in failed.reason
    for d in offered:
        assert world.desired_version(d) == OLD
        assert world.generation(d) == 3
        assert world.offered(r.id)[d].outcome == "restored"
    assert set(world.offered(r.id)) == {"d0", "d1"}, "the rest of the fleet was never offered it"


def test_a_failing_gate_pauses_when_the_plan_says_so_and_resume_judges_afresh(canary: World) -> None:
    world = canary
    r = world.create(
        {"on_failure": "pause", "stages": [{"name": "canary", "cohort": "canary", "bake": "1h"}]}
    )
    world.tick()
    world.rolled_back("d0")
    world.tick()
    assert world.state(r.id) == "paused"
    assert world.desired_version("d1") == NEW, "a pause keeps what the devices run"
    with world.ctx.sessions() as s:
        service.resume(s, world.fleet, r.id[:6], actor="bob", reason="looked fine", clock=world.clock)
    world.tick()
    assert world.state(r.id) == "paused", "the same failure is judged again at once"
    resume = next(t for t in world.transitions(r.id) if t.event == "resume")
    assert (resume.actor, resume.reason) == ("bob", "looked fine")
    assert world.chain(r.id)[-4:] == ["baking", "paused", "running", "paused"]


def test_a_device_that_joins_the_cohort_later_is_offered_by_a_later_tick(world: World) -> None:
    world.devices(["d0", "d1"], labels={"ring": "canary"})
    world.cohort("canary", selector="ring=canary")
    r = world.create({"stages": [{"name": "canary", "cohort": "canary", "bake": "1h", "min_devices": 2}]})
    world.tick()
    assert sorted(world.offered(r.id)) == ["d0", "d1"]
    assert world.state(r.id) == "baking"
    world.devices(["late"], labels={"ring": "canary"})
    world.tick()
    assert sorted(world.offered(r.id)) == ["d0", "d1", "late"]
    assert world.offered(r.id)["late"].stage == 0
    assert world.desired_version("late") == NEW


def test_no_device_is_offered_while_the_maintenance_window_is_closed(world: World) -> None:
    # The clock starts at 03:04:05 UTC; the window opens at 02:00 for an hour.
    window = {"cron": "0 2 * * *", "duration": "1h"}
    r = world.create({"maintenance_window": window, "stages": [_all(bake="1h")]})
    world.tick()
    assert world.offered(r.id) == {}
    assert world.state(r.id) == "running"
    opens = world.rollout(r.id).next_action_at
    assert opens is not None and (opens.hour, opens.minute) == (2, 0) and opens > world.clock.now
    world.clock.now = opens
    world.tick()
    assert sorted(world.offered(r.id)) == SIX


def test_a_stage_that_needs_approval_waits_for_an_operator(world: World) -> None:
    r = world.create({"stages": [_all(approval=True, bake="1m"), {"name": "again", "percent": 100}]})
    world.tick()
    world.committed(*SIX)
    world.clock.advance(60)
    world.tick()
    assert world.state(r.id) == "waiting_approval"
    world.clock.advance(3600)
    world.tick()
    assert world.state(r.id) == "waiting_approval"
    with world.ctx.sessions() as s:
        service.approve(s, world.fleet, r.id, actor="carol", clock=world.clock)
    world.tick()
    assert world.chain(r.id)[-3:] == ["promoting", "running", "baking"]
    approve = next(t for t in world.transitions(r.id) if t.event == "approve")
    assert approve.actor == "carol"


def test_an_operator_abort_gives_the_previous_version_back(world: World) -> None:
    r = world.create({"stages": [_all(bake="1h")]})
    world.tick()
    assert all(world.desired_version(d) == NEW for d in SIX)
    with world.ctx.sessions() as s:
        service.abort(s, world.fleet, r.id, actor="dave", reason="wrong build", clock=world.clock)
    world.tick()
    assert world.state(r.id) == "rolled_back"
    assert all(world.desired_version(d) == OLD for d in SIX)
    assert {row.outcome for row in world.offered(r.id).values()} == {"restored"}


def test_a_device_that_rolled_the_target_back_is_never_offered_it_again(world: World) -> None:
    world.rolled_back("d3")  # an earlier assignment of version 2, judged bad by d3
    r = world.create({"stages": [_all(bake="1h")]})
    world.tick()
    assert sorted(world.offered(r.id)) == [d for d in SIX if d != "d3"]


def test_offline_devices_wait_and_are_offered_when_they_come_back(world: World) -> None:
    world.devices(["d5"], online=False)
    r = world.create({"stages": [_all(bake="1h")]})
    world.tick()
    assert "d5" not in world.offered(r.id)
    assert world.state(r.id) == "baking", "an offline device does not hold the stage up"
    world.devices(["d5"])
    world.tick()
    assert "d5" in world.offered(r.id)


def test_one_active_rollout_per_device_unless_superseded(canary: World) -> None:
    world = canary
    first = world.create({"stages": [{"name": "c", "cohort": "canary", "bake": "1h"}]})
    world.tick()
    with pytest.raises(ConflictError, match=r"held by an active model rollout.*d0, d1"):
        world.create({"stages": [_all()]})
    with world.ctx.sessions() as s:
        assert len(s.exec(select(Rollout)).all()) == 1, "a refused rollout stores nothing"
    second = world.create({"stages": [_all(bake="1h")]}, actor="erin", supersede=True)
    assert world.state(first.id) == "superseded"
    assert world.rollout(first.id).superseded_by == second.id
    assert world.transitions(first.id)[-1].actor == "erin"
    world.tick()
    assert sorted(world.offered(second.id)) == SIX


def test_a_plan_naming_what_the_hub_does_not_have_is_refused(world: World) -> None:
    with pytest.raises(PlanError) as e:
        world.create(
            {"target": {"model": "digits", "version": "9"}, "stages": [{"name": "c", "cohort": "nope"}]}
        )
    assert e.value.problems == [
        "target.version: expected a registered version of model digits, got '9'",
        "stages[0].cohort: expected a cohort of fleet unit, got 'nope'",
    ]


def test_the_rate_window_spreads_fractional_rates() -> None:
    assert engine.rate_window(2) == (2, timedelta(seconds=60))
    assert engine.rate_window(0.5) == (1, timedelta(seconds=120))
    assert engine.rate_window(2.5) == (2, timedelta(seconds=48))


def test_the_offline_gate_counts_a_device_only_after_the_grace_period(world: World) -> None:
    # A broker restart publishes every device's last will at once; they reconnect within seconds.
    r = world.create({"stages": [_all(bake="1h")], "gates": {"offline_grace": "2m"}})
    world.tick()
    assert sorted(world.offered(r.id)) == SIX
    world.devices(SIX, online=False)
    world.tick()
    world.clock.advance(119)
    world.tick()
    assert world.state(r.id) == "baking", "offline for less than the grace period: not counted yet"
    world.devices(SIX)
    world.clock.advance(60)
    world.tick()
    assert world.state(r.id) == "baking", "back online: the broker restart cost nothing"
    world.devices(["d0", "d1", "d2"], online=False)
    world.clock.advance(120)
    world.tick()
    assert world.state(r.id) == "rolled_back"
    failed = [t for t in world.transitions(r.id) if t.to_state == "aborting"]
    assert len(failed) == 1
    assert "offline 50% (3 of 6 offered devices)" in failed[0].reason
