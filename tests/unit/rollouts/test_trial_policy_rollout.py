"""A rollout's trial policy reaches the devices it offers the version to: the stage's, else the plan's."""

from __future__ import annotations

from cloud.services.director import open_envelope
from edgefleet_proto.v1 import common_pb2, desired_pb2
from tests.unit.rollouts.world import World


def _policy(world: World, device_id: str) -> common_pb2.TrialPolicy:
    payload = world.publisher.retained[device_id]
    state = (
        open_envelope(payload)
        if world.ctx.signing is not None
        else desired_pb2.DesiredState.FromString(payload)
    )
    return state.trial_policy


def test_each_stage_offers_with_its_policy_or_the_plans(canary: World) -> None:
    world = canary
    r = world.create(
        {
            "stages": [
                {"name": "canary", "cohort": "canary", "bake": "0s", "trial_policy": {"mode": "shadow"}},
                {"name": "rest", "percent": 100, "bake": "0s"},
            ],
            "trial_policy": {"latency": {"budget_ms": 250}},
        }
    )
    world.tick()
    canary_ids = sorted(world.offered(r.id))
    assert canary_ids == ["d0", "d1"]
    for d in canary_ids:
        policy = _policy(world, d)
        assert (policy.source, policy.mode, policy.HasField("latency")) == ("rollout", "shadow", False)
    world.committed(*canary_ids)
    world.tick()
    rest = sorted(set(world.offered(r.id)) - set(canary_ids))
    assert rest
    for d in rest:
        policy = _policy(world, d)
        assert (policy.source, policy.latency.budget_ms, policy.HasField("mode")) == ("rollout", 250.0, False)
