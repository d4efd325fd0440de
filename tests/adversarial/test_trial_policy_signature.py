"""The trial policy rides inside the signed desired state: loosening it on the way is a forgery.

Whoever holds the broker could otherwise wave a bad version through its trial (a huge latency
budget, no divergence gate); the director's signature covers the policy like every other field.
"""

from __future__ import annotations

from edgefleet_proto.v1 import desired_pb2
from model_tools.trial_policy import parse_trial_policy
from tests.adversarial.conftest import World

STRICT = parse_trial_policy({"latency": {"budget_ms": 250}, "divergence": {"reference": "profile"}})


def test_a_signed_policy_is_accepted_and_a_loosened_one_is_refused(world: World) -> None:
    signed = world.offer(trial_policy=STRICT.to_proto("assignment"))
    envelope = desired_pb2.SignedDesiredState.FromString(signed)
    desired = desired_pb2.DesiredState.FromString(envelope.payload)
    assert desired.trial_policy.latency.budget_ms == 250

    desired.trial_policy.latency.budget_ms = 1e9
    desired.trial_policy.divergence.reference = "none"
    envelope.payload = desired.SerializeToString()
    outcome = world.apply(envelope.SerializeToString())
    world.assert_refused(outcome, "bad_signature")

    assert world.apply(signed).installed
