"""The director: signs each device's desired state, as Uptane's director repository does.

A signed desired state (``SignedDesiredState``) carries the serialized ``DesiredState``
and the director's signatures over exactly those bytes. Before signing, the director
fills in what lets a device refuse a forgery, a replay or a stale instruction:

- ``device_id`` and ``fleet`` (already there): a device refuses another's instruction;
- ``counter``: grows with every copy signed for the device, re-signs included, kept in
  ``SignedDesired`` under a row lock so two hub replicas never hand out one number twice;
- ``expires_at_ms``: the instruction is void afterwards; the scheduler re-signs before then;
- ``model_target`` (and ``profile_target``): the TUF target paths of the model (and of its
  data profile), whose length and sha256 a device compares with the signed repository
  metadata (a mismatch is refused);
- ``firmware``: the device's desired firmware image, when one is assigned (composed, with the
  model part, by ``cloud.services.desired``: the director signs what it is given).

The director keys are listed in the repository's root, so rotating them is a root
version like any other key rotation (``fleet keys rotate director``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from securesystemslib.signer import CryptoSigner
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from cloud.clock import Clock, to_ms, utcnow
from cloud.errors import NotFoundError
from cloud.models import SignedDesired
from cloud.sql_lists import in_list
from cloud.tuf.metadata import TargetSpec
from cloud.tuf.repository import TufRepository
from cloud.tuf.sync import sync_targets
from edgefleet_proto.v1 import desired_pb2

__all__ = ["Director", "open_envelope"]

log = logging.getLogger(__name__)

_LOCK_CHUNK = 500  # device ids per IN (...): stays under SQLite's bound-parameter limit


def open_envelope(envelope: bytes) -> desired_pb2.DesiredState:
    """The desired state inside a signed envelope (no signature check: for the hub's own reading)."""
    signed = desired_pb2.SignedDesiredState.FromString(envelope)
    return desired_pb2.DesiredState.FromString(signed.payload)


def _content_sha256(desired: desired_pb2.DesiredState) -> str:
    content = desired_pb2.DesiredState()
    content.CopyFrom(desired)
    content.counter = 0
    content.expires_at_ms = 0
    content.issued_at_ms = 0
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


class Director:
    """Signs desired states with the director key(s) named in the repository's root."""

    def __init__(
        self, repo: TufRepository, *, clock: Clock = utcnow, expiry: timedelta | None = None
    ) -> None:
        self.repo = repo
        self._clock = clock
        self.expiry = expiry or repo.settings.director_expiry

    @property
    def clock(self) -> Clock:
        return self._clock

    def seal(self, session: Session, desired: desired_pb2.DesiredState, *, force: bool = False) -> bytes:
        """The signed envelope for ``desired`` (the caller commits ``session``).

        An unchanged desired state whose last envelope is still fresh gets that envelope
        again (same counter), so republishing after a reconnect signs nothing new.
        """
        return self.seal_many(session, [desired], force=force)[0]

    def seal_many(
        self, session: Session, states: Sequence[desired_pb2.DesiredState], *, force: bool = False
    ) -> list[bytes]:
        """:meth:`seal` for many devices at once, in input order (the caller commits ``session``).

        What does not change from one device to the next is done once per batch: each artifact's
        target is looked up once, the root is read and the director keys loaded once, and the
        counter rows are locked with one query per few hundred devices. One device twice in a
        batch gets two counters, in order.
        """
        if not states:
            return []
        targets: dict[tuple[str, str | None], TargetSpec | None] = {}
        for desired in states:
            self._resolve(session, desired, targets)
        now = self._clock()
        rows = self._locked_rows(session, [d.device_id for d in states], now)
        margin = self.expiry * self.repo.settings.resign_fraction
        signers: list[CryptoSigner] | None = None
        out: list[bytes] = []
        for desired in states:
            content = _content_sha256(desired)
            row = rows[desired.device_id]
            fresh = row.envelope and row.content_sha256 == content and row.expires_at - now > margin
            if fresh and not force:
                out.append(row.envelope)
                continue
            if signers is None:
                signers = self.repo.director_signers(session)
            row.counter += 1
            desired.counter = row.counter
            desired.expires_at_ms = to_ms(now + self.expiry)
            payload = desired.SerializeToString(deterministic=True)
            envelope = desired_pb2.SignedDesiredState(payload=payload)
            for signer in signers:
                sig = signer.sign(payload)
                envelope.signatures.add(keyid=sig.keyid, sig=bytes.fromhex(sig.signature))
            row.envelope = envelope.SerializeToString(deterministic=True)
            row.content_sha256 = content
            row.expires_at = now + self.expiry
            row.signed_at = now
            session.add(row)
            out.append(row.envelope)
        return out

    @staticmethod
    def _locked_query(device_ids: Sequence[str]) -> SelectOfScalar[SignedDesired]:
        return (
            select(SignedDesired)
            .where(in_list(SignedDesired.device_id, device_ids))
            # One order on every replica, so two batches never wait on each other's rows in a cycle.
            .order_by(col(SignedDesired.device_id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    def _locked_rows(
        self, session: Session, device_ids: Sequence[str], now: datetime
    ) -> dict[str, SignedDesired]:
        """Each device's counter row, locked until the caller commits (made first when missing)."""
        wanted = sorted(set(device_ids))
        rows: dict[str, SignedDesired] = {}
        for start in range(0, len(wanted), _LOCK_CHUNK):
            chunk = wanted[start : start + _LOCK_CHUNK]
            rows.update((r.device_id, r) for r in session.exec(self._locked_query(chunk)))
        missing = [d for d in wanted if d not in rows]
        if not missing:
            return rows
        try:
            with session.begin_nested():
                session.add_all(
                    SignedDesired(device_id=d, counter=0, expires_at=now, signed_at=now) for d in missing
                )
        except IntegrityError:
            pass  # another thread or replica made one of them first: lock theirs, one by one below
        for start in range(0, len(missing), _LOCK_CHUNK):
            chunk = missing[start : start + _LOCK_CHUNK]
            rows.update((r.device_id, r) for r in session.exec(self._locked_query(chunk)))
        for device_id in missing:
            if device_id not in rows:
                rows[device_id] = self._locked_row(session, device_id, now)
        return rows

    @staticmethod
    def _locked_row(session: Session, device_id: str, now: datetime) -> SignedDesired:
        """The device's counter row, locked until the caller commits (made first when missing)."""
        query = (
            select(SignedDesired)
            .where(SignedDesired.device_id == device_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row = session.exec(query).first()
        if row is None:
            try:
                with session.begin_nested():
                    session.add(SignedDesired(device_id=device_id, counter=0, expires_at=now, signed_at=now))
            except IntegrityError:
                pass  # another thread or replica made it first: lock theirs
            row = session.exec(query).one()
        return row

    def _target(
        self,
        session: Session,
        sha256: str,
        kind: str | None,
        known: dict[tuple[str, str | None], TargetSpec | None],
    ) -> TargetSpec | None:
        if (sha256, kind) in known:
            return known[sha256, kind]
        target = self.repo.find_target(sha256, kind, session)
        if target is None:
            # Registered since the last sync: publish it first. That needs a transaction of its own,
            # so the caller's (which holds only reads by now: its writes are committed) ends here.
            session.commit()
            if sync_targets(self.repo):
                target = self.repo.find_target(sha256, kind, session)
        known[sha256, kind] = target
        return target

    def _resolve(
        self,
        session: Session,
        desired: desired_pb2.DesiredState,
        known: dict[tuple[str, str | None], TargetSpec | None],
    ) -> None:
        """Pin the model's (and its profile's) TUF target; the firmware part comes composed."""
        if desired.HasField("model") and desired.model.sha256:
            target = self._target(session, desired.model.sha256, None, known)
            if target is None:
                raise NotFoundError(
                    f"model {desired.model.name} {desired.model.version} ({desired.model.sha256}) is not a "
                    "target of the signed repository: expected a registered artifact"
                )
            desired.model_target = target.path
            profile = desired.model.profile
            if profile.sha256:
                target = self._target(session, profile.sha256, "profile", known)
                if target is None:
                    raise NotFoundError(
                        f"the data profile {profile.sha256} of {desired.model.name} {desired.model.version} "
                        "is not a target of the signed repository"
                    )
                desired.profile_target = target.path

    def resign(
        self, session: Session, device_ids: Iterable[str] | None = None, *, force: bool = False
    ) -> list[tuple[str, bytes]]:
        """Re-sign stored desired states that expire soon (all of them with ``force``); returns the new ones.

        The scheduler calls it so that a retained instruction never goes stale, and a director
        key rotation calls it with ``force`` so that every device gets one signed by the new key.
        """
        query = select(SignedDesired)
        if device_ids is not None:
            query = query.where(in_list(SignedDesired.device_id, device_ids))
        now = self._clock()
        margin = self.expiry * self.repo.settings.resign_fraction
        due = [
            open_envelope(row.envelope)
            for row in session.exec(query.order_by(col(SignedDesired.device_id)))
            if force or row.expires_at - now <= margin
        ]
        envelopes = self.seal_many(session, due, force=True)
        out = [(d.device_id, envelope) for d, envelope in zip(due, envelopes, strict=True)]
        if out:
            log.info("re-signed the desired state of %d device(s)", len(out))
        return out

    def latest(self, session: Session, device_id: str) -> bytes | None:
        row = session.get(SignedDesired, device_id)
        return None if row is None else row.envelope
