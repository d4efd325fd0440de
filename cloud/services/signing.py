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
from cloud.errors import PublishError
from cloud.services.director import Director
from cloud.services.publisher import DesiredPublisher
from cloud.tuf.repository import TufRepository
from cloud.tuf.rotation import RotationService
from cloud.tuf.sync import sync_targets
from edgefleet_proto.v1 import desired_pb2

__all__ = ["Signing"]

log = logging.getLogger(__name__)


@dataclass
class Signing:
    repo: TufRepository
    director: Director
    sessions: SessionFactory
    publisher: DesiredPublisher | None = None
    rotations: RotationService = field(init=False)

    def __post_init__(self) -> None:
        self.rotations = RotationService(self.repo, listeners=[self._on_rotated])

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
