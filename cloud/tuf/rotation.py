"""Root versions: the first one, key rotations, and re-signing before expiry.

Every change of keys is a new root version, signed by a threshold of the previous
root's keys *and* a threshold of its own (TUF's rule; python-tuf checks it with
``Root.get_root_verification_result``). The hub prepares the new root and keeps it as a
pending rotation; root key custodians sign it where their keys are (``fleet keys rotate``
signs locally and sends only signatures); once both thresholds are met the hub
publishes it and re-signs whatever the rotated key signed:

    targets   -> new targets, snapshot and timestamp versions
    snapshot  -> new snapshot and timestamp versions
    timestamp -> a new timestamp version
    director  -> listeners re-sign every device's desired state (cloud.services.director)
    root      -> nothing else; a development root key the hub held is destroyed

A new online key is generated when the rotation is proposed and kept only if the
rotation is published.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Key, Signature
from sqlmodel import Session, col, select
from tuf.api.metadata import Metadata, Role, Root

from cloud.models import TufRotation
from cloud.tuf.errors import (
    RepositoryStateError,
    RotationError,
    RotationNotFoundError,
    SignatureThresholdError,
)
from cloud.tuf.keys import ONLINE_ROLES
from cloud.tuf.metadata import build_root, director_role, gc_keys, serialize, set_director
from cloud.tuf.repository import ONLINE_TOP, TufRepository, latest_metadata

__all__ = ["Rotation", "RotationService"]

log = logging.getLogger(__name__)

ROTATABLE = ("root", *ONLINE_ROLES)


@dataclass(frozen=True, slots=True)
class Rotation:
    """A root version waiting for signatures (or published)."""

    id: int
    role: str
    root_version: int
    root_json: bytes
    signatures: dict[str, str]
    state: str
    # What must sign: the previous root's root keys and the new root's, each with a threshold.
    old_keyids: list[str]
    old_threshold: int
    new_keyids: list[str]
    new_threshold: int

    @property
    def payload(self) -> bytes:
        """The bytes a root key signs (canonical JSON of the new root's signed part)."""
        return Metadata[Root].from_bytes(self.root_json).signed_bytes

    @property
    def missing(self) -> dict[str, int]:
        """How many more signatures each threshold needs."""
        have = set(self.signatures)
        return {
            "previous root": max(0, self.old_threshold - len(have & set(self.old_keyids))),
            "new root": max(0, self.new_threshold - len(have & set(self.new_keyids))),
        }


class RotationService:
    """Prepares, collects signatures for, and publishes new root versions."""

    def __init__(self, repo: TufRepository, listeners: Sequence[Callable[[str], None]] = ()) -> None:
        self.repo = repo
        self._listeners = list(listeners)

    # -- the first root ------------------------------------------------------------------------

    def init_development_root(self) -> Rotation:
        """Create the repository with one root key the hub holds (single-machine and demo use)."""
        if self.repo.hub_root is None:
            raise RepositoryStateError("this hub keeps no development root key: run `fleet keys init`")
        signer = self.repo.hub_root.create()
        rotation = self.propose("root", root_keys=[signer.public_key], threshold=1)
        if rotation.state != "published":
            raise RepositoryStateError(f"the development root did not publish: {rotation.missing}")
        log.warning(
            "created the update repository with a development root key kept on this hub (%s); "
            "run `fleet keys init` to move root to offline keys",
            self.repo.hub_root.path,
        )
        return rotation

    def refresh_root_if_expiring(self) -> bool:
        """Sign a later-expiring root when the hub holds the root key; else warn its custodians.

        Returns whether a new root version was published. Called on every re-sign tick.
        """
        if not self.repo.root_expiring():
            return False
        if self.repo.hub_root is None or not self.repo.hub_root.keyids():
            left = self.repo.root().signed.expires - self.repo.now()
            log.warning(
                "root metadata expires in %s; sign a new root version with the offline root keys "
                "(`fleet keys rotate root`)",
                left if left > timedelta(0) else "the past",
            )
            return False
        return self.propose("root-refresh").state == "published"

    # -- proposals -----------------------------------------------------------------------------

    def propose(
        self, role: str, *, root_keys: Sequence[Key] | None = None, threshold: int | None = None
    ) -> Rotation:
        """A new root version that changes ``role``'s keys ("root-refresh": none, just a later expiry)."""
        if role not in (*ROTATABLE, "root-refresh"):
            raise RotationError(f"cannot rotate {role!r}: expected one of {', '.join(ROTATABLE)}")
        if role == "root" and not root_keys:
            raise RotationError(
                "rotating root needs the new root keys' public halves (fleet keys rotate root)"
            )
        if role != "root" and root_keys:
            raise RotationError(f"new keys for {role} are made on the hub; root keys are only taken for root")
        threshold = threshold or 1
        if root_keys is not None and not 1 <= threshold <= len(root_keys):
            raise RotationError(f"root threshold {threshold} is impossible with {len(root_keys)} root key(s)")
        with self.repo.write_lock, self.repo.sessions() as session:
            row = latest_metadata(session, "root")
            old = None if row is None else Metadata[Root].from_bytes(row.data).signed
            if old is None and role != "root":
                raise RepositoryStateError(
                    "the repository has no root yet: initialise it with root keys first"
                )
            new, new_keyids = self._next_root(old, role, list(root_keys or []), threshold)
            for stale in session.exec(select(TufRotation).where(TufRotation.state == "pending")):
                stale.state = "superseded"
                session.add(stale)
            md = Metadata(new)
            rotation_row = TufRotation(
                role=role,
                root_version=new.version,
                root_json=serialize(md),
                signatures={},
                new_keyids=new_keyids,
                created_at=self.repo.now(),
            )
            session.add(rotation_row)
            session.commit()
            session.refresh(rotation_row)
            rotation_id = rotation_row.id
        assert rotation_id is not None
        # The hub signs with any root key it holds (a development root); custodians sign the rest.
        held = self.repo.hub_root.signers() if self.repo.hub_root is not None else []
        payload = md.signed_bytes
        wanted = set(new.roles["root"].keyids) | (set(old.roles["root"].keyids) if old else set())
        own = {s.public_key.keyid: s.sign(payload).signature for s in held if s.public_key.keyid in wanted}
        return self.add_signatures(rotation_id, own) if own else self.get(rotation_id)

    def _next_root(
        self, old: Root | None, role: str, root_keys: list[Key], threshold: int
    ) -> tuple[Root, list[str]]:
        expires = self.repo.now() + self.repo.settings.expiry("root")
        if old is None:
            made = {r: self.repo.online.role(r).create().public_key for r in ONLINE_ROLES}
            root = build_root(
                version=1,
                expires=expires,
                role_keys={"root": (root_keys, threshold), **{r: ([made[r]], 1) for r in ONLINE_TOP}},
                director=([made["director"]], 1),
            )
            return root, [k.keyid for k in made.values()] + [k.keyid for k in root_keys]
        new = copy.deepcopy(old)
        new.version = old.version + 1
        new.expires = expires
        new_keyids: list[str] = []
        if role == "root":
            new.roles["root"] = Role([], threshold)
            for key in root_keys:
                new.add_key(key, "root")
            new_keyids = [k.keyid for k in root_keys]
        elif role == "director":
            key = self.repo.online.role("director").create().public_key
            set_director(new, [key], 1)
            new_keyids = [key.keyid]
        elif role in ONLINE_TOP:
            key = self.repo.online.role(role).create().public_key
            new.roles[role] = Role([], 1)
            new.add_key(key, role)
            new_keyids = [key.keyid]
        gc_keys(new)
        return new, new_keyids

    def get(self, rotation_id: int) -> Rotation:
        with self.repo.sessions() as session:
            row = session.get(TufRotation, rotation_id)
            if row is None:
                raise RotationNotFoundError(f"no key rotation {rotation_id}")
            return self._view(session, row)

    def pending(self) -> list[Rotation]:
        with self.repo.sessions() as session:
            rows = session.exec(
                select(TufRotation).where(TufRotation.state == "pending").order_by(col(TufRotation.id))
            )
            return [self._view(session, r) for r in rows]

    def _view(self, session: Session, row: TufRotation) -> Rotation:
        new = Metadata[Root].from_bytes(row.root_json).signed
        old = new
        previous = self._root_row(session, row.root_version - 1) if row.root_version > 1 else None
        if previous is not None:
            old = Metadata[Root].from_bytes(previous).signed
        assert row.id is not None
        return Rotation(
            id=row.id,
            role=row.role,
            root_version=row.root_version,
            root_json=row.root_json,
            signatures=dict(row.signatures),
            state=row.state,
            old_keyids=list(old.roles["root"].keyids),
            old_threshold=old.roles["root"].threshold,
            new_keyids=list(new.roles["root"].keyids),
            new_threshold=new.roles["root"].threshold,
        )

    @staticmethod
    def _root_row(session: Session, version: int) -> bytes | None:
        from cloud.models import TufMetadata

        row = session.exec(
            select(TufMetadata).where(TufMetadata.role == "root", TufMetadata.version == version)
        ).first()
        return None if row is None else row.data

    # -- signatures and publishing ------------------------------------------------------------

    def add_signatures(self, rotation_id: int, signatures: Mapping[str, str]) -> Rotation:
        """Add root-key signatures (hex) to a pending rotation; publish it once both thresholds hold."""
        published_role = None
        with self.repo.write_lock, self.repo.sessions() as session:
            row = session.get(TufRotation, rotation_id)
            if row is None:
                raise RotationNotFoundError(f"no key rotation {rotation_id}")
            if row.state != "pending":
                raise RepositoryStateError(
                    f"key rotation {rotation_id} is {row.state}: expected a pending one"
                )
            md = Metadata[Root].from_bytes(row.root_json)
            new = md.signed
            old_bytes = self._root_row(session, new.version - 1) if new.version > 1 else None
            old = Metadata[Root].from_bytes(old_bytes).signed if old_bytes is not None else None
            current = latest_metadata(session, "root")
            if (current.version if current else 0) != new.version - 1:
                row.state = "superseded"
                session.add(row)
                session.commit()
                raise RepositoryStateError(
                    f"key rotation {rotation_id} proposes root v{new.version} but the repository is at "
                    f"v{current.version if current else 0}: propose it again"
                )
            payload = md.signed_bytes
            keys = {**(old.keys if old else {}), **new.keys}
            allowed = set(new.roles["root"].keyids) | (set(old.roles["root"].keyids) if old else set())
            merged = dict(row.signatures)
            for keyid, sig_hex in signatures.items():
                if keyid not in allowed:
                    raise SignatureThresholdError(
                        f"key {keyid} is not a root key of v{new.version} or the version before it"
                    )
                try:
                    keys[keyid].verify_signature(Signature(keyid, sig_hex), payload)
                except UnverifiedSignatureError as e:
                    raise SignatureThresholdError(
                        f"signature by root key {keyid} does not verify over root v{new.version}"
                    ) from e
                merged[keyid] = sig_hex
            row.signatures = merged
            md.signatures.clear()
            for keyid, sig_hex in merged.items():
                md.signatures[keyid] = Signature(keyid, sig_hex)
            if new.get_root_verification_result(old, payload, md.signatures).verified:
                self.repo.store_root(session, md)
                self._after_root(session, old, new)
                row.state = "published"
                published_role = row.role
            session.add(row)
            session.commit()
        if published_role is not None:
            log.info("published root v%d (%s)", new.version, published_role)
            self._cleanup(new)
            for listener in self._listeners:
                listener(published_role)
        return self.get(rotation_id)

    def _after_root(self, session: Session, old: Root | None, new: Root) -> None:
        if old is None:
            self.repo.publish(session, ["targets"])
            return
        changed = [r for r in ONLINE_TOP if old.roles[r].keyids != new.roles[r].keyids]
        if changed:
            self.repo.publish(session, changed)

    def _cleanup(self, new: Root) -> None:
        """Destroy keys the new root no longer names (an old key could still fool a stale device)."""
        for role in ONLINE_ROLES:
            keep = set(director_role(new)[0]) if role == "director" else set(new.roles[role].keyids)
            folder = self.repo.online.role(role)
            for keyid in folder.keyids():
                if keyid not in keep:
                    folder.remove(keyid)
        if self.repo.hub_root is not None:
            for keyid in self.repo.hub_root.keyids():
                if keyid not in new.roles["root"].keyids:
                    self.repo.hub_root.remove(keyid)
                    log.warning("destroyed the development root key %s: root keys are now offline", keyid)
