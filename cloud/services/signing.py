"""The signed-update channel as the rest of the hub sees it: repository, rotations, director.

:class:`Signing` is what the API, the transports and the assignment service hold. It
also reacts to a published rotation: after a director key rotation every device's
desired state is signed again with the new key and republished, so no device is left
holding an instruction its refreshed root no longer vouches for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import Session

from cloud.db import SessionFactory
from cloud.errors import HubError, PublishError
from cloud.services.commands import CommandPublisher, CommandSigner
from cloud.services.director import Director
from cloud.services.publisher import DesiredPublisher
from cloud.tuf.repository import TufRepository
from cloud.tuf.rotation import RotationService
from cloud.tuf.sync import sync_targets
from edgefleet_proto.v1 import command_pb2, desired_pb2

__all__ = ["Signing", "publish_registered"]

log = logging.getLogger(__name__)


@dataclass
class Signing:
    repo: TufRepository
    director: Director
    sessions: SessionFactory
    publisher: DesiredPublisher | None = None
    rotations: RotationService = field(init=False)
    commands: CommandSigner = field(init=False)

    def __post_init__(self) -> None:
        self.rotations = RotationService(self.repo, listeners=[self._on_rotated])
        self.commands = CommandSigner(self.repo, clock=self.director.clock)

    def send_command(self, device_id: str, fleet: str, body: command_pb2.Resync | command_pb2.Ping) -> bytes:
        """Sign a command for one device and publish it on its cmd topic; returns the signed envelope.

        The seq is committed before the publish: a command the broker did not take leaves a gap in the
        device's seqs, which it accepts (it only refuses a seq that does not grow). Raises PublishError
        when there is no publisher that sends commands, or the broker does not take it.
        """
        publisher: object = self.publisher  # a DesiredPublisher that may also send commands
        if not isinstance(publisher, CommandPublisher):
            raise PublishError("this hub has no MQTT connection to send commands over")
        with self.sessions() as session:
            envelope = self.commands.sign(session, device_id, fleet, body)
            session.commit()
        publisher.publish_command(device_id, envelope)
        return envelope

    def seal(self, session: Session, desired: desired_pb2.DesiredState) -> bytes:
        """Sign a desired state for its device (the caller commits before publishing)."""
        return self.director.seal(session, desired)

    def seal_many(self, session: Session, states: Sequence[desired_pb2.DesiredState]) -> list[bytes]:
        """:meth:`seal` for many devices, in input order: keys, root and targets read once a batch."""
        return self.director.seal_many(session, states)

    def sync_targets(self) -> bool:
        return sync_targets(self.repo)

    def publish_all(self, envelopes: Sequence[tuple[str, bytes]]) -> list[str]:
        """Publish signed desired states; returns the devices the broker did not take (republished later)."""
        failed: list[str] = []
        if self.publisher is None:
            return [d for d, _ in envelopes]
        for device_id, envelope in envelopes:
            try:
                self.publisher.publish_desired(device_id, envelope)
            except PublishError as e:
                log.warning("could not publish the re-signed desired state of %s: %s", device_id, e)
                failed.append(device_id)
        return failed

    def _on_rotated(self, role: str) -> None:
        if role != "director":
            return
        with self.sessions() as session:
            envelopes = self.director.resign(session, force=True)
            session.commit()
        self.publish_all(envelopes)
        log.info("director key rotated: re-signed %d desired state(s) with the new key", len(envelopes))


def publish_registered(signing: Signing | None) -> None:
    """List what a registration just committed as TUF targets now, not at the scheduler's next tick.

    Until the targets metadata lists an artifact, no device can verify it, and a rollout that
    names it would wait for the tick (up to its interval). A failure here leaves the registration
    in place: it is logged, and the scheduler's sync publishes the target on its next run.
    """
    if signing is None:
        return
    try:
        signing.sync_targets()
    except HubError as e:
        log.error(
            "registered, but the new TUF target(s) are not published yet (the scheduler retries): %s", e
        )
