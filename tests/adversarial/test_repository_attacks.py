"""Attacks on the repository metadata and the artifacts, table-driven, over the simulator.

Every refused case asserts (``World.assert_refused``) that nothing was installed, that the
previous verified model is still recorded and byte-for-byte intact, that v2 never reached
the store, and that the reason names the check that failed. The root-rotation matrix also
holds the rotations that must succeed, which install v2.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Snapshot, Targets

from cloud.tuf.keys import generate_signer
from edge_agent.trust.transport import METADATA_URL
from edgefleet_proto.v1 import common_pb2
from tests.adversarial.conftest import V2, V2_PATH, World, sha
from tests.adversarial.simulator import SPEC_VERSION, meta, sign


def keys(n: int) -> list[CryptoSigner]:
    return [generate_signer() for _ in range(n)]


def new_root(w: World, signers: list[CryptoSigner], threshold: int, *, sign_with: list[CryptoSigner]) -> None:
    root = w.sim.next_root()
    w.sim.set_keys("root", signers, threshold, root=root)
    w.sim.publish_root(sign_with)


def trust_current(w: World) -> None:
    """The device refreshes now, so that what the repository serves is what it trusts."""
    w.device.channel.refresh()


# --- the root rotation matrix ------------------------------------------------------------------


def r_1of1_ok(w: World) -> None:
    old, new = w.sim.signers["root"], keys(1)
    new_root(w, new, 1, sign_with=old + new)


def r_1of1_only_new(w: World) -> None:
    new_root(w, keys(1), 1, sign_with=[])
    w.sim.publish_root(w.sim.signers["root"])  # signed by the new key alone


def r_1of1_only_old(w: World) -> None:
    old = w.sim.signers["root"]
    new_root(w, keys(1), 1, sign_with=old)


def _to_3_of_5(w: World) -> list[CryptoSigner]:
    five = keys(5)
    new_root(w, five, 3, sign_with=w.sim.signers["root"] + five)
    trust_current(w)
    return five


def r_3of5_ok(w: World) -> None:
    five = _to_3_of_5(w)
    five2 = keys(5)
    new_root(w, five2, 3, sign_with=five[:3] + five2[:3])


def r_3of5_two_old(w: World) -> None:
    five = _to_3_of_5(w)
    five2 = keys(5)
    new_root(w, five2, 3, sign_with=five[:2] + five2[:3])


def r_3of5_two_new(w: World) -> None:
    five = _to_3_of_5(w)
    five2 = keys(5)
    new_root(w, five2, 3, sign_with=five[:3] + five2[:2])


def r_threshold_up_ok(w: World) -> None:
    three = keys(3)
    new_root(w, three, 3, sign_with=w.sim.signers["root"] + three)


def r_threshold_up_short(w: World) -> None:
    three = keys(3)
    new_root(w, three, 3, sign_with=w.sim.signers["root"] + three[:2])


def _to_3_of_3(w: World) -> list[CryptoSigner]:
    three = keys(3)
    new_root(w, three, 3, sign_with=w.sim.signers["root"] + three)
    trust_current(w)
    return three


def r_threshold_down_ok(w: World) -> None:
    three = _to_3_of_3(w)
    one = keys(1)
    new_root(w, one, 1, sign_with=three + one)


def r_threshold_down_short(w: World) -> None:
    three = _to_3_of_3(w)
    one = keys(1)
    new_root(w, one, 1, sign_with=three[:2] + one)


def r_unsigned_intermediate(w: World) -> None:
    new = keys(1)
    new_root(w, new, 1, sign_with=[])  # v2: no signatures at all
    newer = keys(1)
    new_root(w, newer, 1, sign_with=new + newer)  # v3: properly signed by v2's keys


def r_non_consecutive(w: World) -> None:
    old, new = w.sim.signers["root"], keys(1)
    root = w.sim.next_root()
    root.version += 1  # v3 ...
    w.sim.set_keys("root", new, 1, root=root)
    w.sim.publish_root(old + new, version=2)  # ... served as 2.root.json


ROOT_MATRIX: list[tuple[str, Callable[[World], None], bool, tuple[str, ...]]] = [
    ("1-of-1 rotation signed by old and new key", r_1of1_ok, True, ()),
    ("1-of-1 rotation signed by the new key only", r_1of1_only_new, False, ("metadata_signature", "root")),
    ("1-of-1 rotation signed by the old key only", r_1of1_only_old, False, ("metadata_signature", "root")),
    ("3-of-5 rotation signed by 3 old and 3 new keys", r_3of5_ok, True, ()),
    ("3-of-5 rotation signed by only 2 old keys", r_3of5_two_old, False, ("metadata_signature",)),
    ("3-of-5 rotation signed by only 2 new keys", r_3of5_two_new, False, ("metadata_signature",)),
    ("threshold up 1 -> 3 with all signatures", r_threshold_up_ok, True, ()),
    ("threshold up 1 -> 3 with 2 new signatures", r_threshold_up_short, False, ("metadata_signature",)),
    ("threshold down 3 -> 1 with 3 old signatures", r_threshold_down_ok, True, ()),
    ("threshold down 3 -> 1 with 2 old signatures", r_threshold_down_short, False, ("metadata_signature",)),
    ("unsigned intermediate root", r_unsigned_intermediate, False, ("metadata_signature",)),
    ("non-consecutive root version", r_non_consecutive, False, ("metadata_rollback", "root version 2")),
]


@pytest.mark.parametrize(
    ("stage", "installs", "expected"), [c[1:] for c in ROOT_MATRIX], ids=[c[0] for c in ROOT_MATRIX]
)
def test_root_rotation_matrix(
    world: World, stage: Callable[[World], None], installs: bool, expected: tuple[str, ...]
) -> None:
    before = world.device.repository.trusted_root().version
    stage(world)
    outcome = world.apply(world.offer())
    if installs:
        assert outcome.installed, outcome
        assert world.device.active is not None and world.device.active["sha256"] == sha(V2)
        assert world.device.repository.trusted_root().version == world.sim.root.version
    else:
        world.assert_refused(outcome, *expected)
        assert world.device.repository.trusted_root().version <= max(before, world.sim.root.version - 1)


# --- freeze, rollback, mix-and-match, fast-forward -------------------------------------------------


def freeze_root(w: World) -> None:
    w.sim.now += timedelta(days=366)
    w.sim.publish()  # online roles fresh; root not re-signed by its custodians


def freeze_timestamp(w: World) -> None:
    w.sim.now += timedelta(days=2)


def freeze_snapshot(w: World) -> None:
    w.sim.now += timedelta(days=8)
    w.sim.publish(targets=False, snapshot=False)


def freeze_targets(w: World) -> None:
    w.sim.now += timedelta(days=31)
    w.sim.publish(targets=False)


def rollback_timestamp(w: World) -> None:
    old = w.sim.files["timestamp.json"]
    w.sim.publish()
    trust_current(w)
    w.sim.files["timestamp.json"] = old


def rollback_snapshot(w: World) -> None:
    old_snapshot = f"{w.sim.snapshot_version}.snapshot.json"
    w.sim.publish()
    trust_current(w)
    w.sim.timestamp_for(old_snapshot)


def rollback_targets(w: World) -> None:
    old_targets = w.sim.targets.version
    w.sim.publish()
    trust_current(w)
    t_data = w.sim.files[f"{old_targets}.targets.json"]
    w.sim.snapshot_version += 1
    snap = Snapshot(
        w.sim.snapshot_version,
        SPEC_VERSION,
        w.sim.now + timedelta(days=7),
        {"targets.json": meta(old_targets, t_data)},
    )
    name = f"{w.sim.snapshot_version}.snapshot.json"
    w.sim.files[name] = sign(Metadata(snap), w.sim.signers["snapshot"])
    w.sim.timestamp_for(name)


def mix_targets(w: World) -> None:
    """Snapshot pins targets v(n); the served v(n) is another, validly signed targets."""
    name = f"{w.sim.targets.version}.targets.json"
    w.sim.resign(name, lambda t: t.targets.pop(V2_PATH))


def mix_snapshot(w: World) -> None:
    """Timestamp pins snapshot v(n); the served v(n) is another, validly signed snapshot."""
    name = f"{w.sim.snapshot_version}.snapshot.json"
    w.sim.resign(name, lambda s: setattr(s, "expires", s.expires - timedelta(hours=1)))


def fast_forward(w: World) -> None:
    """Whoever holds the timestamp key signs version 10000: the hub's next timestamps look like rollbacks."""
    w.sim.timestamp_for(f"{w.sim.snapshot_version}.snapshot.json", version=10_000)
    trust_current(w)
    w.sim.timestamp_version = 5  # the hub carries on from its own count
    w.sim.publish()


def fast_forward_then_rotate(w: World) -> None:
    fast_forward(w)
    w.sim.rotate("timestamp")  # recovery: the timestamp key is replaced through root


METADATA_ATTACKS: list[tuple[str, Callable[[World], None], bool, tuple[str, ...]]] = [
    ("expired root (freeze)", freeze_root, False, ("metadata_expired", "root")),
    ("expired timestamp (freeze)", freeze_timestamp, False, ("metadata_expired", "timestamp")),
    ("expired snapshot (freeze)", freeze_snapshot, False, ("metadata_expired", "snapshot")),
    ("expired targets (freeze)", freeze_targets, False, ("metadata_expired", "targets")),
    ("timestamp version rolled back", rollback_timestamp, False, ("metadata_rollback", "timestamp")),
    ("snapshot version rolled back", rollback_snapshot, False, ("metadata_rollback", "snapshot")),
    ("targets version rolled back", rollback_targets, False, ("metadata_rollback", "targets")),
    ("snapshot and targets disagree (mix-and-match)", mix_targets, False, ("metadata", "targets")),
    ("timestamp and snapshot disagree (mix-and-match)", mix_snapshot, False, ("metadata", "snapshot")),
    (
        "fast-forwarded timestamp blocks later updates",
        fast_forward,
        False,
        ("metadata_rollback", "timestamp"),
    ),
    ("recovery after the timestamp key is rotated", fast_forward_then_rotate, True, ()),
]


@pytest.mark.parametrize(
    ("stage", "installs", "expected"), [c[1:] for c in METADATA_ATTACKS], ids=[c[0] for c in METADATA_ATTACKS]
)
def test_metadata_attacks(
    world: World, stage: Callable[[World], None], installs: bool, expected: tuple[str, ...]
) -> None:
    stage(world)
    outcome = world.apply(world.offer())
    if installs:
        assert outcome.installed, outcome
    else:
        world.assert_refused(outcome, *expected)


# --- endless data past every size cap --------------------------------------------------------------


def endless(
    name: Callable[[World], str], *, publish: bool = True, rotate: bool = False
) -> Callable[[World], None]:
    def stage(w: World) -> None:
        if rotate:
            r_1of1_ok(w)
        elif publish:
            w.sim.publish()
        w.sim.endless.add(METADATA_URL + name(w))

    return stage


ENDLESS: list[tuple[str, Callable[[World], None], tuple[str, ...]]] = [
    ("endless timestamp", endless(lambda w: "timestamp.json"), ("metadata_too_large",)),
    (
        "snapshot past its pinned length",
        endless(lambda w: f"{w.sim.snapshot_version}.snapshot.json"),
        ("metadata_too_large",),
    ),
    (
        "targets past its pinned length",
        endless(lambda w: f"{w.sim.targets.version}.targets.json"),
        ("metadata_too_large",),
    ),
    (
        "endless new root",
        endless(lambda w: f"{w.sim.root.version}.root.json", rotate=True),
        ("metadata_too_large",),
    ),
]


@pytest.mark.parametrize(("stage", "expected"), [c[1:] for c in ENDLESS], ids=[c[0] for c in ENDLESS])
def test_endless_metadata_is_cut_at_its_cap(
    world: World, stage: Callable[[World], None], expected: tuple[str, ...]
) -> None:
    stage(world)
    world.assert_refused(world.apply(world.offer()), *expected)


# --- the artifact's bytes -------------------------------------------------------------------------


def swap(data: bytes) -> Callable[[World], None]:
    def stage(w: World) -> None:
        w.sim.swap_artifacts[sha(V2)] = data

    return stage


def stall(w: World) -> None:
    w.sim.stall_artifacts.add(sha(V2))


ARTIFACT_ATTACKS: list[tuple[str, Callable[[World], None], tuple[str, ...]]] = [
    ("same length, other bytes", swap(V2[:-1] + b"X"), ("sha256 mismatch",)),
    ("endless artifact past its pinned length", swap(V2 + b"more" * 10_000), ("more than the pinned",)),
    ("truncated download", swap(V2[: len(V2) // 2]), ("stream ended",)),
    ("stalled download", stall, ("sent nothing",)),
]


@pytest.mark.parametrize(
    ("stage", "expected"), [c[1:] for c in ARTIFACT_ATTACKS], ids=[c[0] for c in ARTIFACT_ATTACKS]
)
def test_artifact_attacks(world: World, stage: Callable[[World], None], expected: tuple[str, ...]) -> None:
    stage(world)
    world.assert_refused(world.apply(world.offer()), *expected)


def test_director_and_repository_disagree_on_the_bytes(world: World) -> None:
    """The director pins v2's bytes under a path the repository lists with other bytes."""
    other = b"another artifact " * 50
    world.sim.add_target("models/m/3/x.onnx", other, {"kind": "model"})
    world.sim.blobs[sha(V2)] = V2
    world.sim.publish()
    forged = world.offer("models/m/3/x.onnx", ref=_ref(V2))
    world.assert_refused(world.apply(forged), "repository_mismatch", "the repository lists")


def test_repository_lists_another_length_for_the_target(world: World) -> None:
    """A targets role that lies about the length: director and repository no longer agree."""
    world.sim.targets.targets[V2_PATH].length += 7
    world.sim.publish()
    payload = world.offer(ref=_ref(V2))
    world.assert_refused(world.apply(payload), "repository_mismatch")


def test_a_target_the_repository_does_not_list(world: World) -> None:
    world.sim.blobs[sha(V2)] = V2
    payload = world.sim.desired(
        "dev-1",
        "fleet-a",
        generation=world.generation + 1,
        model_target="models/m/9/unknown.onnx",
        model=_ref(V2),
    )
    world.assert_refused(world.apply(payload), "repository_mismatch", "does not list")


def _ref(data: bytes) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name="m", version="2", format="onnx", sha256=sha(data), length=len(data))


# --- caches ---------------------------------------------------------------------------------------


def test_a_poisoned_partial_download_is_never_reused(world: World) -> None:
    part = world.device.store.partial_path(sha(V2))
    part.write_bytes(b"poison" * 100)  # a stale partial with the right name and wrong bytes
    payload = world.offer()
    world.assert_refused(world.apply(payload), "sha256 mismatch")
    assert not part.exists(), "the poisoned partial was kept"
    again = world.apply(payload)  # the retained copy comes again: a clean download now installs
    assert again.installed, again


def test_cached_metadata_that_lists_a_removed_target_is_not_trusted(world: World) -> None:
    trust_current(world)  # the device caches targets that list v2
    del world.sim.targets.targets[V2_PATH]
    world.sim.publish()
    payload = world.sim.desired("dev-1", "fleet-a", generation=9, model_target=V2_PATH, model=_ref(V2))
    world.assert_refused(world.apply(payload), "does not list")


def test_a_tampered_metadata_cache_is_refetched(world: World) -> None:
    trust_current(world)
    cached = world.device.repository.metadata_dir / "targets.json"
    md: Metadata[Targets] = Metadata.from_bytes(cached.read_bytes())
    md.signed.targets["models/m/9/evil.onnx"] = md.signed.targets[V2_PATH]
    cached.write_bytes(md.to_bytes())  # signatures no longer match
    world.sim.blobs[sha(V2)] = V2
    outcome = world.apply(
        world.sim.desired(
            "dev-1", "fleet-a", generation=9, model_target="models/m/9/evil.onnx", model=_ref(V2)
        )
    )
    world.assert_refused(outcome, "does not list")


# --- hostile target names ------------------------------------------------------------------------

HOSTILE = [
    ("path traversal", "../../etc/passwd"),
    ("traversal inside a path", "models/../../../root/.ssh/authorized_keys"),
    ("absolute path", "/etc/shadow"),
    ("look-alike unicode", "models/m\u043e/2/v2.onnx"),
    ("control character", "models/m\x00/2/v2.onnx"),
    ("backslashes", "models\\m\\2\\v2.onnx"),
    ("right-to-left override", "models/m/2/\u202egnp.onnx"),
]


@pytest.mark.parametrize("path", [p for _, p in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_hostile_target_names_are_refused(world: World, path: str) -> None:
    world.sim.add_target(path, V2, {"kind": "model"})  # even when the repository lists (and signs) it
    world.sim.publish()
    world.assert_refused(world.apply(world.offer(path)), "hostile_target")


def test_a_valid_target_installs_and_the_fetches_are_recorded(world: World) -> None:
    """Control: the untouched world installs v2, after fetching fresh metadata."""
    outcome = world.apply(world.offer())
    assert outcome.installed, outcome
    assert any(u.endswith("timestamp.json") for u in world.sim.fetches)
    assert world.device.active is not None and world.device.active["sha256"] == sha(V2)
