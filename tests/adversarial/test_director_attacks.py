"""Attacks on the desired state: forged, replayed, expired or misdirected instructions.

Whoever holds the broker can publish anything on a device's desired topic; only what a
threshold of director keys (named in the trusted root) signed for this device, now,
with a counter not below the last accepted one, is acted on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from cloud.tuf.keys import generate_signer
from edgefleet_proto.v1 import desired_pb2
from tests.adversarial.conftest import V2_PATH, World
from tests.adversarial.harness import DEVICE, FLEET


def replayed(w: World) -> bytes:
    old = w.offer()  # signed earlier and captured by whoever holds the broker
    assert w.apply(w.offer(V2_PATH)).installed  # a newer instruction has been applied since
    return old


def expired(w: World) -> bytes:
    payload = w.offer(expires_in=timedelta(hours=1))
    w.sim.now += timedelta(hours=2)
    w.sim.publish()  # the repository itself is fresh: only the instruction is stale
    return payload


def other_device(w: World) -> bytes:
    return w.sim.desired("dev-2", FLEET, generation=5, model_path=V2_PATH)


def other_fleet(w: World) -> bytes:
    return w.sim.desired(DEVICE, "fleet-b", generation=5, model_path=V2_PATH)


def unsigned(w: World) -> bytes:
    return w.offer(sign_with=[])


def unknown_key(w: World) -> bytes:
    return w.offer(sign_with=[generate_signer()])


def tampered(w: World) -> bytes:
    envelope = desired_pb2.SignedDesiredState.FromString(w.offer())
    desired = desired_pb2.DesiredState.FromString(envelope.payload)
    desired.generation += 100
    envelope.payload = desired.SerializeToString()
    return envelope.SerializeToString()


def counter_reuse(w: World) -> bytes:
    w.apply(w.offer())  # counter n accepted (and v2 installed)
    return w.offer("models/m/1/v1.onnx", counter=w.sim.counters[DEVICE])


def not_a_protobuf(w: World) -> bytes:
    return b"\xff\xfe not a protobuf at all"


def bare_desired_state(w: World) -> bytes:
    """The pre-signing wire form: a DesiredState without an envelope."""
    return desired_pb2.DesiredState(device_id=DEVICE, fleet=FLEET, generation=50).SerializeToString()


def oversized(w: World) -> bytes:
    return w.offer(artifact_endpoint="x" * 40_000)


def expired_director_key(w: World) -> bytes:
    """Signed by a director key that was rotated out: the device's root no longer names it."""
    old = w.sim.director
    w.sim.rotate("director")
    w.device.channel.refresh()
    return w.offer(sign_with=old)


DIRECTOR_ATTACKS: list[tuple[str, Callable[[World], bytes], tuple[str, ...], bool]] = [
    ("replayed older instruction", replayed, ("replayed", "below the last accepted"), True),
    ("expired instruction", expired, ("expired",), False),
    ("instruction for another device", other_device, ("other_device", "'dev-2'"), False),
    ("instruction for another fleet", other_fleet, ("other_device", "'fleet-b'"), False),
    ("unsigned instruction", unsigned, ("unsigned",), False),
    ("signed by a key the root does not name", unknown_key, ("unknown_director_key",), False),
    ("payload changed after signing", tampered, ("bad_signature",), False),
    ("counter reused with other content", counter_reuse, ("replayed", "reuses counter"), True),
    ("not a protobuf", not_a_protobuf, ("unsigned",), False),
    ("bare desired state without signatures", bare_desired_state, ("unsigned",), False),
    ("oversized instruction", oversized, ("at most",), False),
    ("signed by a rotated-out director key", expired_director_key, ("unknown_director_key",), False),
]


@pytest.mark.parametrize(
    ("stage", "expected", "v2_applied"),
    [c[1:] for c in DIRECTOR_ATTACKS],
    ids=[c[0] for c in DIRECTOR_ATTACKS],
)
def test_director_attacks(
    world: World, stage: Callable[[World], bytes], expected: tuple[str, ...], v2_applied: bool
) -> None:
    payload = stage(world)
    before = world.device.active
    mark = world.device.channel.mark
    outcome = world.apply(payload)
    assert not outcome.installed
    text = f"{outcome.code}: {outcome.reason}"
    for fragment in expected:
        assert fragment in text, text
    assert world.device.active == before, "the active model changed"
    assert world.device.active_intact()
    assert world.device.channel.mark == mark, "a refused instruction moved the counter"
    if not v2_applied:
        world.assert_refused(outcome, *expected)


def test_a_director_key_rotation_reaches_the_device_through_root(world: World) -> None:
    """Control: after a director key rotation, instructions signed by the new key install."""
    world.sim.rotate("director")
    outcome = world.apply(world.offer())
    assert outcome.code == "unknown_director_key"  # the cached root does not know the new key yet
    world.device.channel.refresh()  # what the agent does on that refusal
    assert world.apply(world.offer()).installed


def test_the_counter_survives_a_restart(world: World) -> None:
    old = world.offer()
    assert world.apply(world.offer()).installed
    from edge_agent.trust.state import TrustStateFile

    reloaded = TrustStateFile(world.device.trust_dir / "state.json").load()
    assert reloaded == world.device.channel.mark
    world.device.channel._mark = None  # a restarted agent reads the file again
    assert world.apply(old).code == "replayed"
