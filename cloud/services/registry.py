"""Model registry: validate an artifact, store it by content, record the version.

A registration is all or nothing: when the row cannot be written (duplicate, invalid
model) the artifact is removed again, unless another version already uses the same bytes.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.artifacts import ArtifactInfo, ArtifactStore, Readable
from cloud.clock import Clock, utcnow
from cloud.db import SessionFactory, read_transaction
from cloud.errors import ConflictError, NotFoundError, UnsupportedFormatError
from cloud.models import Bundle, ModelVariant, ModelVersion
from cloud.services.onnx_schema import DEFAULT_LIMITS, ValidationLimits, inspect_onnx, single_file_variant
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page
from cloud.validation import check_model_name, check_version

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("onnx",)


def check_format(fmt: str) -> str:
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"unsupported model format {fmt!r}: expected one of {', '.join(SUPPORTED_FORMATS)}"
        )
    return fmt


def check_new_version(session: Session, name: str, version: str, fmt: str) -> None:
    """Validate what a registration names before any byte is stored."""
    check_model_name(name)
    check_version(version)
    check_format(fmt)
    if find_model(session, name, version) is not None:
        raise ConflictError(f"model {name} version {version} is already registered; expected a new version")


def register_model(
    session: Session,
    store: ArtifactStore,
    name: str,
    version: str,
    stream: Readable,
    *,
    fmt: str = "onnx",
    max_length: int | None = None,
    clock: Clock = utcnow,
    limits: ValidationLimits = DEFAULT_LIMITS,
) -> ModelVersion:
    """Store the artifact read from ``stream`` and register it as ``name`` ``version``."""
    check_new_version(session, name, version, fmt)
    info = store.put_stream(stream, max_length=max_length)
    return register_stored(session, store, name, version, info, fmt=fmt, clock=clock, limits=limits)


def register_stored(
    session: Session,
    store: ArtifactStore,
    name: str,
    version: str,
    info: ArtifactInfo,
    *,
    fmt: str = "onnx",
    clock: Clock = utcnow,
    limits: ValidationLimits = DEFAULT_LIMITS,
) -> ModelVersion:
    """Register an artifact already in the store (an upload streamed there by the API)."""
    try:
        check_new_version(session, name, version, fmt)
        facts = inspect_onnx(store.path(info.sha256), limits)
        row = ModelVersion(
            name=name,
            version=version,
            format=fmt,
            sha256=info.sha256,
            length=info.length,
            inputs=facts.inputs,
            outputs=facts.outputs,
            created_at=clock(),
        )
        session.add(row)
        session.flush()
        # A pushed file is a one-variant version: its variant is what devices are assigned.
        session.add(single_file_variant(facts, row, clock()))
        try:
            session.commit()
        except IntegrityError as e:
            # Lost a race with a concurrent registration of the same name and version.
            raise ConflictError(f"model {name} version {version} is already registered") from e
    except BaseException:
        session.rollback()
        _discard_unreferenced(session, store, info.sha256)
        raise
    session.refresh(row)
    log.info("registered model %s %s (%s, %d bytes)", name, version, info.sha256, info.length)
    return row


def _discard_unreferenced(session: Session, store: ArtifactStore, sha256: str) -> None:
    if not is_registered_artifact(session, sha256):
        store.delete(sha256)


def find_model(session: Session, name: str, version: str) -> ModelVersion | None:
    return session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()


def get_model(session: Session, name: str, version: str) -> ModelVersion:
    row = find_model(session, name, version)
    if row is None:
        raise NotFoundError(f"model {name} version {version} is not registered")
    return row


def list_models(session: Session, name: str | None = None) -> list[ModelVersion]:
    query = select(ModelVersion)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    return list(session.exec(query.order_by(col(ModelVersion.name), col(ModelVersion.created_at))).all())


def page_models(
    session: Session, name: str | None = None, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[ModelVersion]:
    """A page of ``list_models``: by name, then oldest first."""
    query = select(ModelVersion)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    return keyset_page(
        session,
        query,
        [ModelVersion.name, ModelVersion.created_at, ModelVersion.id],
        listing="models",
        key_of=lambda m: (m.name, m.created_at, m.id or 0),
        limit=limit,
        cursor=cursor,
    )


def is_registered_artifact(session: Session, sha256: str) -> bool:
    """Whether some model version, variant or bundle profile pins this artifact (only those are served)."""
    for query in (
        select(ModelVersion.id).where(ModelVersion.sha256 == sha256),
        select(ModelVariant.id).where(ModelVariant.sha256 == sha256),
        select(Bundle.model_version_id).where(Bundle.profile_sha256 == sha256),
    ):
        if session.exec(query).first() is not None:
            return True
    return False


class ServedArtifacts:
    """``served(sha256)``: whether the artifact service may hand out these bytes.

    Asked once per download, so its answer is cached, but only when yes: the bytes under a
    sha256 never change, so a registered artifact stays one, while an unknown one is asked
    again each time (it may be registered a moment later) and never fills the cache. The
    artifact's file is checked on every download apart from this, so a deleted file is refused
    even while its sha256 is cached. ``sessions`` should be read-only sessions
    (:func:`cloud.db.read_session_factory`) so that downloads never wait on the write lock.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        also: Callable[[str], bool] | None = None,
        max_entries: int = 4096,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries: expected at least 1, got {max_entries}")
        self._sessions = sessions
        # Artifacts served for another reason than the registry (TUF targets such as firmware).
        self._also = also
        self._max_entries = max_entries
        self._known: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, sha256: str) -> bool:
        with self._lock:
            if sha256 in self._known:
                self._known.move_to_end(sha256)
                return True
        with read_transaction(self._sessions) as session:
            served = is_registered_artifact(session, sha256)
        if not served and self._also is not None:
            served = self._also(sha256)
        if served:
            with self._lock:
                self._known[sha256] = None
                self._known.move_to_end(sha256)
                while len(self._known) > self._max_entries:
                    self._known.popitem(last=False)
        return served

    def forget(self, sha256: str) -> None:
        """Drop a cached yes (for a caller that unregisters an artifact)."""
        with self._lock:
            self._known.pop(sha256, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._known)
