"""Signed commands for the cmd topic: the director signs them as it signs desired states.

A command (``Command``: resync, ping) goes out as a ``SignedCommand``: the serialized command
and the director's signatures over exactly those bytes. Before signing, the hub fills in what
lets a device refuse a forgery, a replay or a stale command:

- ``device_id`` and ``fleet``: a device refuses another's command;
- ``seq``: grows with every command signed for the device, kept in ``CommandSeq`` under a row
  lock so two hub replicas never hand out one number twice; a device refuses a seq that is not
  above the last one it accepted;
- ``expires_at_ms``: commands are short-lived (``ttl``); a device refuses one past it.

The keys are the director keys of the repository's root, the ones desired states are signed
with, so a device needs nothing new to check a command.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

from securesystemslib.signer import Signer
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from cloud.clock import Clock, to_ms, utcnow
from cloud.models import CommandSeq
from cloud.tuf.repository import TufRepository
from edgefleet_proto.v1 import command_pb2

__all__ = ["DEFAULT_COMMAND_TTL", "CommandPublisher", "CommandSigner", "open_command", "seal_command"]

# Long enough for a QoS 1 redelivery after a short reconnect; a command is not an instruction to keep.
DEFAULT_COMMAND_TTL = timedelta(minutes=5)

Body = command_pb2.Resync | command_pb2.Ping


@runtime_checkable
class CommandPublisher(Protocol):
    """Publishes a signed command on a device's cmd topic (QoS 1, not retained); raises PublishError."""

    def publish_command(self, device_id: str, payload: bytes) -> None: ...


def seal_command(command: command_pb2.Command, signers: Sequence[Signer]) -> bytes:
    """The ``SignedCommand`` envelope of ``command`` signed by each of ``signers``. Pure."""
    payload = command.SerializeToString(deterministic=True)
    envelope = command_pb2.SignedCommand(command=payload)
    for signer in signers:
        sig = signer.sign(payload)
        envelope.signatures.add(keyid=sig.keyid, sig=bytes.fromhex(sig.signature))
    return envelope.SerializeToString(deterministic=True)


def open_command(envelope: bytes) -> command_pb2.Command:
    """The command inside a signed envelope (no signature check: for the hub's own reading)."""
    return command_pb2.Command.FromString(command_pb2.SignedCommand.FromString(envelope).command)


class CommandSigner:
    """Numbers, dates and signs commands with the director key(s) named in the repository's root."""

    def __init__(
        self, repo: TufRepository, *, clock: Clock = utcnow, ttl: timedelta = DEFAULT_COMMAND_TTL
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError(f"command ttl: expected a positive duration, got {ttl}")
        self.repo = repo
        self._clock = clock
        self.ttl = ttl

    def sign(self, session: Session, device_id: str, fleet: str, body: Body) -> bytes:
        """The signed envelope of one command for ``device_id`` (the caller commits ``session``)."""
        row = self._locked_row(session, device_id)
        row.seq += 1
        session.add(row)
        now = self._clock()
        command = command_pb2.Command(
            device_id=device_id,
            fleet=fleet,
            seq=row.seq,
            issued_at_ms=to_ms(now),
            expires_at_ms=to_ms(now + self.ttl),
        )
        if isinstance(body, command_pb2.Resync):
            command.resync.CopyFrom(body)
        else:
            command.ping.CopyFrom(body)
        return seal_command(command, self.repo.director_signers(session))

    @staticmethod
    def _locked_row(session: Session, device_id: str) -> CommandSeq:
        query = (
            select(CommandSeq)
            .where(CommandSeq.device_id == device_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row = session.exec(query).first()
        if row is None:
            try:
                with session.begin_nested():
                    session.add(CommandSeq(device_id=device_id, seq=0))
            except IntegrityError:
                pass  # another thread or replica made it first: lock theirs
            row = session.exec(query).one()
        return row
