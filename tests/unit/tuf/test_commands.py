"""The hub signs commands that the device's own checks accept, with a seq per device that only grows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloud.db import SessionFactory
from cloud.errors import PublishError
from cloud.services.commands import CommandSigner, open_command
from cloud.services.publisher import RecordingPublisher
from cloud.services.signing import Signing
from cloud.tuf import TufRepository
from edge_agent.trust.commands import verify_signed_command
from edge_agent.trust.director import DirectorKeys
from edge_agent.trust.errors import CommandExpiredError, CommandReplayError
from edgefleet_proto.v1 import command_pb2
from tests.unit.cloud.helpers import FrozenClock


def sign(signer: CommandSigner, sessions: SessionFactory, device_id: str = "d1") -> bytes:
    with sessions() as session:
        out = signer.sign(session, device_id, "f", command_pb2.Ping(nonce="n"))
        session.commit()
    return out


def device_check(
    repo: TufRepository, payload: bytes, clock: FrozenClock, last_seq: int = 0
) -> command_pb2.Command:
    return verify_signed_command(
        payload,
        DirectorKeys.from_root(repo.root().signed),
        device_id="d1",
        fleet="f",
        last_seq=last_seq,
        now_ms=int(clock().timestamp() * 1000),
    )


def test_a_signed_command_passes_the_devices_checks(
    repo: TufRepository, sessions: SessionFactory, clock: FrozenClock
) -> None:
    signer = CommandSigner(repo, clock=clock, ttl=timedelta(minutes=2))
    cmd = device_check(repo, sign(signer, sessions), clock)
    assert (cmd.device_id, cmd.fleet, cmd.seq, cmd.ping.nonce) == ("d1", "f", 1, "n")
    assert cmd.expires_at_ms - cmd.issued_at_ms == 120_000


def test_seq_grows_per_device_and_is_kept_in_the_database(
    repo: TufRepository, sessions: SessionFactory, clock: FrozenClock
) -> None:
    first = CommandSigner(repo, clock=clock)
    seqs = [open_command(sign(first, sessions)).seq for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert open_command(sign(first, sessions, "d2")).seq == 1
    # Another replica (or a restarted hub) continues from the stored number, never reusing one.
    again = sign(CommandSigner(repo, clock=clock), sessions)
    assert open_command(again).seq == 4
    with pytest.raises(CommandReplayError):
        device_check(repo, again, clock, last_seq=4)


def test_a_command_expires_after_its_ttl(
    repo: TufRepository, sessions: SessionFactory, clock: FrozenClock
) -> None:
    payload = sign(CommandSigner(repo, clock=clock, ttl=timedelta(minutes=5)), sessions)
    clock.advance(301)
    with pytest.raises(CommandExpiredError, match="expired at"):
        device_check(repo, payload, clock)


def test_a_ttl_must_be_positive(repo: TufRepository) -> None:
    with pytest.raises(ValueError, match="positive"):
        CommandSigner(repo, ttl=timedelta(0))


def test_signing_sends_a_signed_command_on_the_cmd_topic(
    signing: Signing, publisher: RecordingPublisher, clock: FrozenClock
) -> None:
    envelope = signing.send_command("d1", "f", command_pb2.Resync())
    assert publisher.commands == [("d1", envelope)]
    assert publisher.retained == {}, "a command is not a retained desired state"
    cmd = device_check(signing.repo, envelope, clock)
    assert cmd.HasField("resync") and cmd.seq == 1


def test_a_command_that_the_broker_refuses_still_uses_its_seq(
    signing: Signing, publisher: RecordingPublisher, clock: FrozenClock
) -> None:
    publisher.fail_with = "broker down"
    with pytest.raises(PublishError, match="broker down"):
        signing.send_command("d1", "f", command_pb2.Ping())
    publisher.fail_with = None
    envelope = signing.send_command("d1", "f", command_pb2.Ping())
    assert device_check(signing.repo, envelope, clock, last_seq=0).seq == 2  # a gap the device accepts
