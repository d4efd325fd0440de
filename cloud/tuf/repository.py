"""The update repository: TUF root, targets, snapshot and timestamp, kept in the database.

Every signed version of every role is a row (``TufMetadata``), so the hub serves
consistent snapshots (``7.targets.json``) from any replica, and the current version of a
role is the highest one stored. A change of targets publishes a new targets, snapshot
and timestamp version in one transaction: a client never sees a snapshot that names a
targets version the database does not hold. Snapshot and timestamp pin the length and
sha256 of what they name, which turns a swapped file into a verification error.

Online roles (targets, snapshot, timestamp) and the director are signed with keys the
hub holds (:class:`~cloud.tuf.keys.OnlineKeys`); root needs a threshold of root keys,
normally offline (see :mod:`cloud.tuf.rotation`). :meth:`TufRepository.refresh` re-signs
whatever is close to expiry; the scheduler calls it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from securesystemslib.signer import CryptoSigner
from sqlalchemy import Engine, bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from cloud.clock import Clock, utcnow
from cloud.db import SessionFactory, read_session_factory, read_transaction
from cloud.errors import NotFoundError
from cloud.models import TufMetadata, TufTarget
from cloud.tuf.config import TufSettings
from cloud.tuf.errors import KeyCustodyError, NotInitializedError
from cloud.tuf.keys import KeyDir, OnlineKeys
from cloud.tuf.metadata import (
    TargetSpec,
    build_snapshot,
    build_targets,
    build_timestamp,
    director_role,
    serialize,
    sign,
)

__all__ = ["ONLINE_TOP", "RoleStatus", "TufRepository", "latest_metadata"]

log = logging.getLogger(__name__)

ONLINE_TOP = ("targets", "snapshot", "timestamp")
_NAME_RE = re.compile(r"^(?:(\d{1,12})\.)?(root|targets|snapshot|timestamp)\.json$")
_PUBLISH_ATTEMPTS = 5
T = TypeVar("T", Root, Timestamp, Snapshot, Targets)

# The two queries a TUF client's fetches make, built once (see TufRepository._read_metadata).
_TABLE = TufMetadata.__table__  # type: ignore[attr-defined]
_LATEST = (
    sa_select(_TABLE.c.data)
    .where(_TABLE.c.role == bindparam("role"))
    .order_by(_TABLE.c.version.desc())
    .limit(1)
)
_VERSION = sa_select(_TABLE.c.data).where(
    _TABLE.c.role == bindparam("role"), _TABLE.c.version == bindparam("version")
)


@dataclass(frozen=True, slots=True)
class RoleStatus:
    role: str
    version: int
    expires: datetime
    keyids: list[str]
    threshold: int


def latest_metadata(session: Session, role: str) -> TufMetadata | None:
    """The newest stored version of ``role``'s metadata (None before the repository exists)."""
    return session.exec(
        select(TufMetadata).where(TufMetadata.role == role).order_by(col(TufMetadata.version).desc()).limit(1)
    ).first()


def _load(row: TufMetadata, kind: type[T]) -> Metadata[T]:
    md: Metadata[Any] = Metadata.from_bytes(row.data)
    if not isinstance(md.signed, kind):
        raise TypeError(f"stored {row.role} v{row.version} is a {type(md.signed).__name__}")
    return md


class TufRepository:
    """One fleet's update repository."""

    def __init__(
        self,
        sessions: SessionFactory,
        online: OnlineKeys,
        settings: TufSettings,
        *,
        hub_root: KeyDir | None = None,
        clock: Clock = utcnow,
        reads: SessionFactory | None = None,
    ) -> None:
        self._sessions = sessions
        # Reads (every device's metadata fetches above all) take no write lock; see cloud.db.
        # Without a factory of its own, the repository makes one on the write sessions' engine.
        self._reads = reads
        self._read_engine: Engine | None = None
        self.online = online
        self.settings = settings
        # A development root key the hub holds (auto-init); None once root keys are offline.
        self.hub_root = hub_root
        self._clock = clock
        self._lock = threading.RLock()
        # Versioned files never change once written: cache them.
        self._immutable: dict[str, bytes] = {}

    # -- reading -----------------------------------------------------------------------------

    def _read(self) -> AbstractContextManager[Session]:
        """A read-only transaction: on SQLite it neither waits for the write lock nor holds it."""
        if self._reads is None:
            with self._sessions() as session:
                self._reads = read_session_factory(session.get_bind().engine)
        return read_transaction(self._reads)

    def _read_metadata(self, role: str, version: int | None) -> bytes | None:
        """One metadata file's bytes, on a plain connection of the read-only engine.

        Every device asks for the timestamp (and for the next root) on every refresh; an ORM
        session and its transaction cost three times what this query does, so it goes without.
        """
        if self._read_engine is None:
            if self._reads is None:
                self._read()  # makes the read-only session factory
            assert self._reads is not None
            with self._reads() as session:
                self._read_engine = session.get_bind().engine
        with self._read_engine.connect() as conn:
            try:
                if version is None:
                    data: bytes | None = conn.execute(_LATEST, {"role": role}).scalar()
                else:
                    data = conn.execute(_VERSION, {"role": role, "version": version}).scalar()
            finally:
                conn.rollback()  # ends the read snapshot before the connection goes back to the pool
        return data

    def initialized(self) -> bool:
        with self._read() as session:
            return latest_metadata(session, "timestamp") is not None

    def root(self, session: Session | None = None) -> Metadata[Root]:
        """The current root (pass the caller's session inside a transaction: SQLite has one writer)."""
        if session is not None:
            return self._root(session)
        with self._read() as own:
            return self._root(own)

    def _root(self, session: Session) -> Metadata[Root]:
        row = latest_metadata(session, "root")
        if row is None:
            raise NotInitializedError(
                "the update repository has no root yet: run `fleet keys init` or start the hub with auto-init"
            )
        return _load(row, Root)

    def root_bytes(self, version: int | None = None) -> bytes:
        """The serialized root (latest, or one version): what devices are provisioned with."""
        return self.metadata_file("root.json" if version is None else f"{version}.root.json")

    def metadata_file(self, name: str) -> bytes:
        """A metadata file by the name a TUF client asks for; NotFoundError when there is none."""
        match = _NAME_RE.fullmatch(name)
        if match is None:
            raise NotFoundError(
                f"no metadata file {name!r}: expected '<role>.json' or '<version>.<role>.json'"
            )
        if name in self._immutable:
            return self._immutable[name]
        version_text, role = match.groups()
        data = self._read_metadata(role, None if version_text is None else int(version_text))
        if data is None:
            raise NotFoundError(f"no metadata file {name!r} in the repository")
        if version_text is not None:
            self._immutable[name] = data
        return data

    def status(self) -> list[RoleStatus]:
        with self._read() as session:
            root = self._root(session).signed
            out = [
                RoleStatus(
                    "root",
                    root.version,
                    root.expires,
                    list(root.roles["root"].keyids),
                    root.roles["root"].threshold,
                )
            ]
            for role in ONLINE_TOP:
                row = latest_metadata(session, role)
                if row is None:
                    continue
                r = root.roles[role]
                out.append(RoleStatus(role, row.version, row.expires, list(r.keyids), r.threshold))
            keyids, threshold = director_role(root)
            out.append(RoleStatus("director", root.version, root.expires, keyids, threshold))
            return out

    def targets(self) -> dict[str, TargetSpec]:
        with self._read() as session:
            rows = session.exec(select(TufTarget)).all()
            return {r.path: TargetSpec(r.path, r.sha256, r.length, dict(r.custom)) for r in rows}

    def find_target(
        self, sha256: str, kind: str | None = None, session: Session | None = None
    ) -> TargetSpec | None:
        if session is None:
            with self._read() as own:
                return self.find_target(sha256, kind, own)
        for row in session.exec(
            select(TufTarget).where(TufTarget.sha256 == sha256).order_by(col(TufTarget.path))
        ):
            if kind is None or row.custom.get("kind") == kind:
                return TargetSpec(row.path, row.sha256, row.length, dict(row.custom))
        return None

    def has_target_sha256(self, sha256: str) -> bool:
        with self._read() as session:
            return session.exec(select(TufTarget.path).where(TufTarget.sha256 == sha256)).first() is not None

    # -- signing keys ------------------------------------------------------------------------

    def signers(self, role: str, root: Root) -> list[CryptoSigner]:
        """The hub's signers for an online role (or the director), as ``root`` names the role's keys."""
        if role == "director":
            keyids, threshold = director_role(root)
        else:
            keyids, threshold = list(root.roles[role].keyids), root.roles[role].threshold
        signers = self.online.signers(role, keyids)
        if len(signers) < threshold:
            raise KeyCustodyError(
                f"the hub holds {len(signers)} of the {threshold} {role} keys it needs "
                f"(key ids {', '.join(keyids) or 'none'}); "
                f"expected them under {self.online.keys_dir}/online/{role}"
            )
        return signers

    def director_signers(self, session: Session | None = None) -> list[CryptoSigner]:
        return self.signers("director", self.root(session).signed)

    # -- publishing --------------------------------------------------------------------------

    def _expires(self, role: str) -> datetime:
        return self._clock() + self.settings.expiry(role)

    def _store(self, session: Session, role: str, md: Metadata[Any]) -> bytes:
        data = serialize(md)
        session.add(
            TufMetadata(
                role=role,
                version=md.signed.version,
                data=data,
                expires=md.signed.expires,
                created_at=self._clock(),
            )
        )
        return data

    def publish(self, session: Session, roles: Sequence[str]) -> None:
        """Sign and store new versions of ``roles`` and of every role that pins them (caller commits).

        ``targets`` implies snapshot and timestamp; ``snapshot`` implies timestamp.
        """
        root = self._root(session).signed
        new_targets = "targets" in roles
        new_snapshot = new_targets or "snapshot" in roles
        t_row = latest_metadata(session, "targets")
        s_row = latest_metadata(session, "snapshot")
        ts_row = latest_metadata(session, "timestamp")
        if new_targets or t_row is None:
            specs = [
                TargetSpec(r.path, r.sha256, r.length, dict(r.custom))
                for r in session.exec(select(TufTarget))
            ]
            version = (t_row.version if t_row else 0) + 1
            targets_md = sign(
                Metadata(build_targets(version, self._expires("targets"), specs)),
                self.signers("targets", root),
            )
            targets_data, targets_version = self._store(session, "targets", targets_md), version
        else:
            targets_data, targets_version = t_row.data, t_row.version
        if new_snapshot or s_row is None or new_targets:
            version = (s_row.version if s_row else 0) + 1
            snapshot_md = sign(
                Metadata(build_snapshot(version, self._expires("snapshot"), targets_version, targets_data)),
                self.signers("snapshot", root),
            )
            snapshot_data, snapshot_version = self._store(session, "snapshot", snapshot_md), version
        else:
            assert s_row is not None
            snapshot_data, snapshot_version = s_row.data, s_row.version
        version = (ts_row.version if ts_row else 0) + 1
        timestamp_md = sign(
            Metadata(build_timestamp(version, self._expires("timestamp"), snapshot_version, snapshot_data)),
            self.signers("timestamp", root),
        )
        self._store(session, "timestamp", timestamp_md)

    def _publish_retrying(self, change: Any, roles: Sequence[str]) -> bool:
        """Run ``change(session)`` and publish ``roles`` in one transaction; retry lost version races."""
        with self._lock:
            for attempt in range(_PUBLISH_ATTEMPTS):
                with self._sessions() as session:
                    try:
                        if change(session) is False:
                            session.rollback()
                            return False
                        self.publish(session, roles)
                        session.commit()
                        return True
                    except IntegrityError:
                        # Another replica published the same version first: build on top of it.
                        session.rollback()
                        log.info("lost a metadata version race (attempt %d); publishing again", attempt + 1)
            raise RuntimeError(f"could not publish {', '.join(roles)} after {_PUBLISH_ATTEMPTS} attempts")

    def update_targets(self, add: Iterable[TargetSpec] = (), remove: Iterable[str] = ()) -> bool:
        """Add (or replace) and remove targets; publish a new targets version when anything changed."""
        add, remove = list(add), set(remove)

        def change(session: Session) -> bool:
            changed = False
            for spec in add:
                row = session.get(TufTarget, spec.path)
                if row is not None and (row.sha256, row.length, row.custom) == (
                    spec.sha256,
                    spec.length,
                    dict(spec.custom),
                ):
                    continue
                if row is None:
                    row = TufTarget(
                        path=spec.path, sha256=spec.sha256, length=spec.length, created_at=self._clock()
                    )
                row.sha256, row.length, row.custom = spec.sha256, spec.length, dict(spec.custom)
                session.add(row)
                changed = True
            for path in remove:
                row = session.get(TufTarget, path)
                if row is not None:
                    session.delete(row)
                    changed = True
            session.flush()
            return changed

        published = self._publish_retrying(change, ["targets"])
        if published:
            log.info("published targets: %d added or changed, %d removed", len(add), len(remove))
        return published

    def refresh(self, now: datetime | None = None) -> list[str]:
        """Re-sign every online role with less than ``resign_fraction`` of its validity left.

        Returns the roles re-signed. Root is not one of them: a new root version is a rotation
        (``cloud.tuf.rotation``), which the re-sign scheduler asks for when ``root_expiring`` says so.
        """
        now = now or self._clock()
        due: list[str] = []
        with self._read() as session:
            for role in ONLINE_TOP:
                if self._expiring(session, role, now):
                    due.append(role)
        if due:
            self._publish_retrying(lambda _s: True, due)
            log.info("re-signed %s before expiry", ", ".join(due))
        return due

    def root_expiring(self, now: datetime | None = None) -> bool:
        """Whether root has less than ``resign_fraction`` of its validity left."""
        with self._read() as session:
            return self._expiring(session, "root", now or self._clock())

    def _expiring(self, session: Session, role: str, now: datetime) -> bool:
        row = latest_metadata(session, role)
        if row is None:
            return False
        return row.expires - now <= self.settings.expiry(role) * self.settings.resign_fraction

    # -- what workflows over the store (rotation, target sync) use ------------------------------

    @property
    def sessions(self) -> SessionFactory:
        return self._sessions

    @property
    def write_lock(self) -> threading.RLock:
        """Held while metadata is signed and stored, so versions are handed out one at a time."""
        return self._lock

    def now(self) -> datetime:
        return self._clock()

    def sign_root(self, md: Metadata[Root], signers: Iterable[CryptoSigner]) -> None:
        for signer in signers:
            md.sign(signer, append=True)

    def store_root(self, session: Session, md: Metadata[Root]) -> None:
        self._store(session, "root", md)
