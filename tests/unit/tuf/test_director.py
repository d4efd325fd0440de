"""The director signs desired states that the device's own checks accept, with counters that only grow."""

from __future__ import annotations

import hashlib

import pytest

from cloud.errors import NotFoundError
from cloud.models import ModelVersion, SignedDesired
from cloud.services.director import open_envelope
from cloud.services.signing import Signing
from cloud.tuf import TargetSpec
from edge_agent.trust.director import DirectorKeys, DirectorMark, verify_signed_desired
from edgefleet_proto.v1 import common_pb2, desired_pb2
from tests.unit.cloud.helpers import FrozenClock

DATA = b"model bytes" * 10
SHA = hashlib.sha256(DATA).hexdigest()


def desired(generation: int = 1, sha: str = SHA) -> desired_pb2.DesiredState:
    return desired_pb2.DesiredState(
        device_id="d1",
        fleet="f",
        generation=generation,
        model=common_pb2.ModelRef(name="m", version="1", format="onnx", sha256=sha, length=len(DATA)),
    )


def seal(signing: Signing, d: desired_pb2.DesiredState, **kw: bool) -> bytes:
    with signing.sessions() as session:
        out = signing.director.seal(session, d, **kw)
        session.commit()
    return out


def device_check(
    signing: Signing, payload: bytes, clock: FrozenClock, last: DirectorMark | None = None
) -> tuple[desired_pb2.DesiredState, DirectorMark]:
    keys = DirectorKeys.from_root(signing.repo.root().signed)
    return verify_signed_desired(
        payload,
        keys,
        device_id="d1",
        fleet="f",
        last=last or DirectorMark(),
        now_ms=int(clock().timestamp() * 1000),
        max_bytes=16384,
    )


@pytest.fixture(autouse=True)
def registered(signing: Signing) -> None:
    signing.repo.update_targets([TargetSpec("models/m/1/a.onnx", SHA, len(DATA), {"kind": "model"})])


def test_a_sealed_desired_state_passes_the_devices_checks(signing: Signing, clock: FrozenClock) -> None:
    payload = seal(signing, desired())
    verified, mark = device_check(signing, payload, clock)
    assert verified.counter == 1 and mark.counter == 1
    assert verified.model_target == "models/m/1/a.onnx"
    assert verified.expires_at_ms == int((clock() + signing.director.expiry).timestamp() * 1000)


def test_an_unchanged_state_gets_the_same_envelope_and_a_change_a_higher_counter(
    signing: Signing, clock: FrozenClock
) -> None:
    first = seal(signing, desired())
    assert seal(signing, desired()) == first, "republishing signs nothing new"
    second = seal(signing, desired(generation=2))
    assert open_envelope(second).counter == 2
    forced = seal(signing, desired(generation=2), force=True)
    assert open_envelope(forced).counter == 3


def test_resign_renews_envelopes_near_expiry(signing: Signing, clock: FrozenClock) -> None:
    seal(signing, desired())
    with signing.sessions() as session:
        assert signing.director.resign(session) == []
    clock.advance(signing.director.expiry.total_seconds() * 0.6)
    with signing.sessions() as session:
        renewed = signing.director.resign(session)
        session.commit()
    assert [d for d, _ in renewed] == ["d1"]
    verified, _ = device_check(signing, renewed[0][1], clock)
    assert verified.counter == 2 and verified.generation == 1


def test_a_model_the_repository_does_not_list_is_not_signed(signing: Signing) -> None:
    with pytest.raises(NotFoundError, match="not a target of the signed repository"):
        seal(signing, desired(sha="ab" * 32))


def test_a_registered_model_is_added_to_the_repository_before_signing(signing: Signing) -> None:
    other = b"another model" * 3
    sha = hashlib.sha256(other).hexdigest()
    with signing.sessions() as session:
        session.add(ModelVersion(name="m2", version="7", format="onnx", sha256=sha, length=len(other)))
        session.commit()
    d = desired(sha=sha)
    d.model.length = len(other)
    assert open_envelope(seal(signing, d)).model_target == f"models/m2/7/{sha}.onnx"


def test_rotating_the_director_resigns_and_republishes_every_state(
    signing: Signing, clock: FrozenClock
) -> None:
    seal(signing, desired())
    signing.rotations.propose("director")
    payload = signing.publisher.retained["d1"]  # type: ignore[union-attr]
    verified, _ = device_check(signing, payload, clock)
    assert verified.counter == 2


def for_device(device_id: str, generation: int = 1) -> desired_pb2.DesiredState:
    d = desired(generation)
    d.device_id = device_id
    return d


def test_a_batch_is_sealed_like_one_state_at_a_time_with_the_keys_loaded_once(
    signing: Signing, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    already = seal(signing, for_device("d3"))
    loads: list[int] = []
    director_signers = signing.repo.director_signers

    def counted(session: object = None) -> object:
        loads.append(1)
        return director_signers(session)  # type: ignore[arg-type]

    monkeypatch.setattr(signing.repo, "director_signers", counted)
    batch = [for_device("d1"), for_device("d2"), for_device("d1", generation=2), for_device("d3")]
    with signing.sessions() as session:
        envelopes = signing.seal_many(session, batch)
        session.commit()

    assert len(loads) == 1, "the root and the director keys are read once a batch"
    assert envelopes[3] == already, "an unchanged, fresh state keeps its envelope"
    keys = DirectorKeys.from_root(signing.repo.root().signed)
    now_ms = int(clock().timestamp() * 1000)
    seen = []
    for state, payload in zip(batch, envelopes, strict=True):
        verified, _ = verify_signed_desired(
            payload, keys, device_id=state.device_id, fleet="f", last=DirectorMark(), now_ms=now_ms,
            max_bytes=16384,
        )  # fmt: skip
        seen.append((verified.device_id, verified.generation, verified.counter))
    # One device twice in a batch: two counters, in the batch's order.
    assert seen == [("d1", 1, 1), ("d2", 1, 1), ("d1", 2, 2), ("d3", 1, 1)]


def test_a_batch_with_a_model_the_repository_does_not_list_signs_nothing(signing: Signing) -> None:
    with signing.sessions() as session:
        with pytest.raises(NotFoundError, match="not a target of the signed repository"):
            signing.seal_many(session, [for_device("d1"), desired(sha="ab" * 32)])
        session.rollback()
    with signing.sessions() as session:
        assert session.get(SignedDesired, "d1") is None, "no counter was handed out"
