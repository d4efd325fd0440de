"""The reference a version's drift is scored against: the DataProfile shipped in its bundle.

A bundle's profile lives in the artifact store, named by the sha256 its ``Bundle`` row pins
(``cloud.services.bundles``). Parsing it costs a few milliseconds per feature, and every observe
cycle asks for the same few versions, so parsed profiles are kept in a small cache. The cache is
keyed by the pinned sha256, not by the version's name: the row is read on every call (one
indexed lookup), so the cache can never answer with another file than the one the row names.

A version registered without a bundle (a bare model file) has no profile: its drift against the
baseline is not scored. A profile that is missing from the store or does not parse is logged and
treated the same way, so one broken bundle does not stop the scoring of the others.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlmodel import Session, col, select

from cloud.artifacts import ArtifactStore
from cloud.db import SessionFactory
from cloud.errors import NotFoundError
from cloud.models import Bundle, ModelVariant, ModelVersion
from edgefleet_proto.v1 import profile_pb2
from model_tools.errors import ProfileError
from model_tools.profile import parse_profile

__all__ = ["ACCURACY_KEYS", "BaselineSource", "baseline_accuracy"]

log = logging.getLogger(__name__)

# Where a bundle records its held-out accuracy, most specific first: the fp32 baseline variant
# on the test split (model_tools.pipeline), then the training run's own test accuracy.
ACCURACY_KEYS = ("fp32_test_accuracy", "test_accuracy")


class BaselineSource:
    """Bundle profiles and held-out accuracies by (model name, version); thread-safe.

    Each call reads the version's ``Bundle`` row in ``session`` when one is given, else in a
    short session of its own. A caller inside a transaction passes its session: on SQLite a
    second session would wait for the first one's write lock.
    """

    def __init__(self, sessions: SessionFactory, store: ArtifactStore, *, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries: expected at least 1, got {max_entries}")
        self._sessions = sessions
        self._store = store
        self._max = max_entries
        self._profiles: OrderedDict[str, profile_pb2.DataProfile] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def _session(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        with self._sessions() as own:
            try:
                yield own
            finally:
                own.rollback()  # nothing written: end the read

    def profile(
        self, model_name: str, version: str, *, session: Session | None = None
    ) -> profile_pb2.DataProfile | None:
        """The version's bundle profile; None when it has none (or its file is missing or broken)."""
        with self._session(session) as s:
            bundle = _bundle(s, model_name, version)
            sha256 = bundle.profile_sha256 if bundle is not None else None
        if sha256 is None:
            return None
        with self._lock:
            cached = self._profiles.get(sha256)
            if cached is not None:
                self._profiles.move_to_end(sha256)
                return cached
        try:
            with self._store.open(sha256) as f:
                profile = parse_profile(f.read())
        except (NotFoundError, OSError, ProfileError) as e:
            log.warning("no baseline for %s %s: profile %s: %s", model_name, version, sha256, e)
            return None
        with self._lock:
            self._profiles[sha256] = profile
            while len(self._profiles) > self._max:
                self._profiles.popitem(last=False)
        return profile

    def accuracy(self, model_name: str, version: str, *, session: Session | None = None) -> float | None:
        """The version's held-out accuracy; see :func:`baseline_accuracy`."""
        with self._session(session) as s:
            return baseline_accuracy(s, model_name, version)


def _bundle(session: Session, model_name: str, version: str) -> Bundle | None:
    return session.exec(
        select(Bundle)
        .join(ModelVersion, col(ModelVersion.id) == col(Bundle.model_version_id))
        .where(ModelVersion.name == model_name, ModelVersion.version == version)
    ).first()


def baseline_accuracy(session: Session, model_name: str, version: str) -> float | None:
    """The version's held-out accuracy (a share in [0, 1]) as its bundle records it; None if not.

    Needs no artifact store: the figure is in the manifest kept in the database.
    """
    bundle = _bundle(session, model_name, version)
    if bundle is None:
        return None
    found = _accuracy(bundle.manifest.get("metrics", {}))
    if found is not None:
        return found
    # An older manifest without the figure: the baseline variant's own evaluation.
    row = session.exec(
        select(ModelVariant).where(
            ModelVariant.model_version_id == bundle.model_version_id,
            col(ModelVariant.is_baseline).is_(True),
        )
    ).first()
    return _accuracy(row.metrics, keys=("accuracy",)) if row is not None else None


def _accuracy(metrics: Mapping[str, Any] | Any, *, keys: tuple[str, ...] = ACCURACY_KEYS) -> float | None:
    if not isinstance(metrics, Mapping):
        return None
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
            return float(value)
    return None
