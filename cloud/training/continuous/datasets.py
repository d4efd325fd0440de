"""Labelled samples uploaded to the hub: validated, stored by content, counted, and read back for training.

Devices report only how many predictions were labelled (and how many were right); the samples
themselves reach the hub as ``.npz`` files (``numpy.savez``) holding two arrays:

    x   float features of shape (N, 64), scaled to [0, 1] as the model takes them (pixel / 16)
    y   integer labels of shape (N,), in [0, 9]

Every file is checked before it is kept (zip structure, array names, shapes, dtypes, finite
values, value and label ranges, size) and stored under its sha256 in
``{data_dir}/datasets/labelled``: the hash is what a training run's lineage names. A stored file
is checked again when a run reads it, so one damaged on disk fails the run with the reason
rather than training on it.

Each upload is split the same way every time (from its hash): a fifth is held out to judge the
challenger against the champion on recent field data, the rest joins the training split.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, or_, select

from cloud.artifacts import ArtifactInfo, ArtifactStore
from cloud.clock import Clock, utcnow
from cloud.errors import InvalidArtifactError, NotFoundError
from cloud.models import ModelVersion
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page
from cloud.settings import MiB, Settings
from cloud.training.continuous.tables import LabelledDataset
from cloud.validation import check_model_name

__all__ = [
    "FEATURES",
    "HOLDOUT_SHARE",
    "MAX_LABELLED_BYTES",
    "MAX_SAMPLES",
    "NUM_CLASSES",
    "InvalidLabelledDataError",
    "LabelledSamples",
    "add_labelled",
    "discard_unreferenced",
    "labelled_for",
    "labelled_store",
    "list_labelled",
    "load_labelled",
    "read_labelled",
    "split_holdout",
    "uploaded_since",
]

log = logging.getLogger(__name__)

# The base data set's shape: the digits every model of the zoo takes (model_tools.zoo).
FEATURES = 64
NUM_CLASSES = 10
_RANGE = (0.0, 1.0)
# A labelled upload is a batch of field samples, not a data set of its own: 64 MiB is ~250,000 rows.
MAX_LABELLED_BYTES = 64 * MiB
MAX_SAMPLES = 1_000_000
# What the arrays may take once unzipped: a small .npz that inflates to gigabytes is refused unread.
_MAX_INFLATED = 4 * MAX_LABELLED_BYTES
# The share of each upload held out for judging the challenger and the champion.
HOLDOUT_SHARE = 0.2
_ARRAYS = ("x.npy", "y.npy")


class InvalidLabelledDataError(InvalidArtifactError):
    """A labelled-data file that cannot be trained on; the message says what was expected and what came."""


@dataclass(frozen=True)
class LabelledSamples:
    """One stored upload, read and checked: ``x`` float32 (N, 64), ``y`` int64 (N,)."""

    sha256: str
    x: np.ndarray
    y: np.ndarray
    created_at: datetime

    @property
    def samples(self) -> int:
        return int(self.y.shape[0])


def labelled_store(settings: Settings) -> ArtifactStore:
    """Where uploads are kept, by content: ``{data_dir}/datasets/labelled``."""
    return ArtifactStore(settings.data_dir / "datasets" / "labelled")


def read_labelled(path: Path, *, source: str = "labelled data") -> tuple[np.ndarray, np.ndarray]:
    """The checked ``(x, y)`` of an ``.npz`` file; InvalidLabelledDataError names the first fault."""
    size = path.stat().st_size
    if size > MAX_LABELLED_BYTES:
        raise InvalidLabelledDataError(f"{source} is {size} bytes: expected at most {MAX_LABELLED_BYTES}")
    if not zipfile.is_zipfile(path):
        raise InvalidLabelledDataError(
            f"{source} is not an .npz file: expected a zip of x.npy and y.npy as numpy.savez writes it"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as e:
        raise InvalidLabelledDataError(f"{source} is a damaged .npz file: {e}") from e
    names = sorted(m.filename for m in members)
    if names != list(_ARRAYS):
        raise InvalidLabelledDataError(f"{source}: expected exactly the arrays x and y, got {names}")
    inflated = sum(m.file_size for m in members)
    if inflated > _MAX_INFLATED:
        raise InvalidLabelledDataError(
            f"{source} unpacks to {inflated} bytes: expected at most {_MAX_INFLATED}"
        )
    try:
        # allow_pickle=False: an object array would unpickle, and so run, whatever the file holds.
        with np.load(path, allow_pickle=False) as arrays:
            x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InvalidLabelledDataError(f"{source}: cannot read the arrays ({e})") from e
    return _checked(x, y, source)


def _checked(x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 2 or x.shape[1] != FEATURES:
        raise InvalidLabelledDataError(f"{source}: expected x of shape (N, {FEATURES}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidLabelledDataError(f"{source}: expected floating-point x, got {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise InvalidLabelledDataError(
            f"{source}: expected y of shape ({x.shape[0]},), one label per row of x, got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise InvalidLabelledDataError(f"{source}: expected integer labels y, got {y.dtype}")
    samples = int(x.shape[0])
    if not 0 < samples <= MAX_SAMPLES:
        raise InvalidLabelledDataError(f"{source}: expected 1 to {MAX_SAMPLES} samples, got {samples}")
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad_rows.size:
        raise InvalidLabelledDataError(
            f"{source}: expected finite values in x, got NaN or infinity in {bad_rows.size} row(s), "
            f"first row {int(bad_rows[0])}"
        )
    low, high = float(x.min()), float(x.max())
    if low < _RANGE[0] or high > _RANGE[1]:
        raise InvalidLabelledDataError(
            f"{source}: expected x scaled to [{_RANGE[0]:g}, {_RANGE[1]:g}] as the model takes it "
            f"(pixel / 16), got values from {low:g} to {high:g}"
        )
    bad_labels = np.flatnonzero((y < 0) | (y >= NUM_CLASSES))
    if bad_labels.size:
        seen = sorted({int(v) for v in y[bad_labels[:10]]})
        raise InvalidLabelledDataError(
            f"{source}: expected labels in [0, {NUM_CLASSES - 1}], got values such as {seen} "
            f"in {bad_labels.size} row(s)"
        )
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64)


def _class_counts(y: np.ndarray) -> dict[str, int]:
    return {str(c): int(n) for c, n in enumerate(np.bincount(y, minlength=NUM_CLASSES)) if n}


def add_labelled(
    session: Session,
    store: ArtifactStore,
    info: ArtifactInfo,
    *,
    fleet: str,
    model_name: str = "",
    filename: str = "",
    uploaded_by: str = "",
    clock: Clock = utcnow,
) -> tuple[LabelledDataset, bool]:
    """Check the file ``info`` names in ``store`` and record it; returns the row and whether it is new.

    A file that fails a check is removed from the store (unless an earlier upload is the same
    bytes). The same bytes uploaded twice are recorded once.
    """
    try:
        if model_name:
            _check_model(session, model_name)
        x, y = read_labelled(store.path(info.sha256), source=filename or "labelled data")
        del x
        existing = _find(session, fleet, info.sha256)
        if existing is not None:
            return existing, False
        row = LabelledDataset(
            fleet=fleet,
            sha256=info.sha256,
            length=info.length,
            samples=int(y.shape[0]),
            model_name=model_name,
            class_counts=_class_counts(y),
            filename=filename[:255],
            uploaded_by=uploaded_by,
            created_at=clock(),
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            # The same bytes uploaded at the same moment by another request: one row is enough.
            session.rollback()
            raced = _find(session, fleet, info.sha256)
            if raced is None:
                raise
            return raced, False
    except BaseException:
        session.rollback()
        discard_unreferenced(session, store, info.sha256)
        raise
    session.refresh(row)
    log.info(
        "labelled data %s: %d samples for %s", info.sha256[:12], row.samples, model_name or "every model"
    )
    return row, True


def _check_model(session: Session, model_name: str) -> None:
    check_model_name(model_name)
    version = session.exec(
        select(ModelVersion)
        .where(ModelVersion.name == model_name)
        .order_by(col(ModelVersion.created_at).desc())
    ).first()
    if version is None:
        raise NotFoundError(f"model {model_name} is not registered: expected the name of a registered model")
    shape = list(version.inputs[0].get("shape", [])) if version.inputs else []
    if shape[1:] != [FEATURES]:
        raise InvalidLabelledDataError(
            f"model {model_name} takes input of shape {shape}: expected a model of the base data set's "
            f"shape [-1, {FEATURES}] to train with labelled digits"
        )


def discard_unreferenced(session: Session, store: ArtifactStore, sha256: str) -> None:
    """Remove a stored upload no recorded one uses (a refused file, or a form refused after it)."""
    if _find_any(session, sha256) is None:
        store.delete(sha256)


def _find(session: Session, fleet: str, sha256: str) -> LabelledDataset | None:
    return session.exec(
        select(LabelledDataset).where(LabelledDataset.fleet == fleet, LabelledDataset.sha256 == sha256)
    ).first()


def _find_any(session: Session, sha256: str) -> LabelledDataset | None:
    return session.exec(select(LabelledDataset).where(LabelledDataset.sha256 == sha256)).first()


def list_labelled(
    session: Session, fleet: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[LabelledDataset]:
    """A page of the fleet's uploads, newest first."""
    query = select(LabelledDataset).where(LabelledDataset.fleet == fleet)
    return keyset_page(
        session,
        query,
        [LabelledDataset.created_at, LabelledDataset.id],
        listing="labelled datasets",
        key_of=lambda r: (r.created_at, r.id or 0),
        limit=limit,
        cursor=cursor,
        descending=True,
    )


def labelled_for(
    session: Session, fleet: str, model_name: str, *, until: datetime | None = None
) -> list[LabelledDataset]:
    """Uploads a run of ``model_name`` trains on (for that model or for every model), oldest first."""
    query = select(LabelledDataset).where(
        LabelledDataset.fleet == fleet,
        or_(LabelledDataset.model_name == model_name, LabelledDataset.model_name == ""),
    )
    if until is not None:
        query = query.where(LabelledDataset.created_at <= until)
    return list(session.exec(query.order_by(col(LabelledDataset.created_at), col(LabelledDataset.id))).all())


def uploaded_since(session: Session, fleet: str, model_name: str, since: datetime | None) -> int:
    """Labelled samples uploaded for ``model_name`` (or every model) after ``since`` (None: ever)."""
    query = select(func.coalesce(func.sum(LabelledDataset.samples), 0)).where(
        LabelledDataset.fleet == fleet,
        or_(LabelledDataset.model_name == model_name, LabelledDataset.model_name == ""),
    )
    if since is not None:
        query = query.where(LabelledDataset.created_at > since)
    return int(session.exec(query).one())


def load_labelled(store: ArtifactStore, rows: Sequence[LabelledDataset]) -> list[LabelledSamples]:
    """Read every upload back, checking its bytes against its hash and its arrays again."""
    loaded = []
    for row in rows:
        source = f"labelled data {row.sha256[:12]} (uploaded {row.created_at:%Y-%m-%d %H:%M} UTC)"
        if not store.exists(row.sha256):
            raise InvalidLabelledDataError(f"{source} is missing from {store.root}: expected its file there")
        if not store.verify(row.sha256):
            raise InvalidLabelledDataError(
                f"{source} was damaged on disk: its file no longer hashes to {row.sha256}"
            )
        x, y = read_labelled(store.path(row.sha256), source=source)
        loaded.append(LabelledSamples(row.sha256, x, y, row.created_at))
    return loaded


def split_holdout(samples: LabelledSamples) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, holdout) over the rows of one upload, the same on every call.

    The split is drawn from the upload's hash, so a sample judged once is never trained on by a
    later run either: the champion (trained before) and every challenger meet the same held-out rows.
    """
    n = samples.samples
    rng = np.random.default_rng(int(samples.sha256[:16], 16))
    holdout = np.zeros(n, dtype=bool)
    holdout[rng.permutation(n)[: int(n * HOLDOUT_SHARE)]] = True
    return ~holdout, holdout
