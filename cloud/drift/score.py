"""Score rebuilt cohort rollups: data drift, prediction drift, accuracy from labels, telemetry.

For each rollup key (cohort, model, version, bucket) the rollup's merged ``SketchWindow`` is
compared with two references:

- ``baseline``: the version's bundle profile, what the model saw on held-out data;
- ``previous``: the same cohort and version's latest earlier rollup that sketched anything.

and one ``CohortMetric`` row is upserted per value (names in ``cloud.drift.tables``). A feature
whose sketch is empty on either side is skipped, not scored as no drift. Labels are scored per
version they name, over every rollup of the cohort's bucket: a label can arrive after its version
stopped serving, inside another version's windows.

Rows are upserted on the table's unique key, so scoring a key twice (or on two replicas) leaves
the same rows. Each key is scored in its own transaction: a broken rollup is logged and skipped
without holding back the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from datasketches import kll_floats_sketch  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from cloud.db import SessionFactory, transaction
from cloud.drift.baseline import BaselineSource
from cloud.drift.stats import (
    PSI_DRIFT,
    class_drift,
    feature_drift,
    load_sketch,
    tally_labels,
)
from cloud.drift.tables import CohortMetric
from cloud.telemetry.tables import CohortRollup
from edgefleet_proto.v1 import profile_pb2, sketch_pb2

if TYPE_CHECKING:
    from cloud.telemetry.rollup import RollupKey

__all__ = ["score", "score_key"]

log = logging.getLogger(__name__)

_KEY_COLUMNS = (
    "fleet",
    "cohort_id",
    "model_name",
    "model_version",
    "bucket_start",
    "metric",
    "feature",
    "reference",
)
_VALUE_COLUMNS = ("bucket_s", "value", "threshold", "drifted", "n", "computed_at")
# Rows per INSERT: far below SQLite's bound on parameters (32766) at 14 columns a row.
_ROWS_PER_INSERT = 500


@dataclass(frozen=True)
class _Key:
    fleet: str
    cohort_id: int
    model_name: str
    model_version: str
    bucket_start: datetime
    bucket_s: int


class _Rows:
    """The metric rows of one key, as dicts ready for the upsert."""

    def __init__(self, key: _Key, now: datetime) -> None:
        self.key = key
        self.now = now
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        metric: str,
        value: float,
        *,
        n: int,
        feature: str = "",
        reference: str = "",
        threshold: float | None = None,
        drifted: bool = False,
        version: str | None = None,
    ) -> None:
        self.rows.append(
            {
                "fleet": self.key.fleet,
                "cohort_id": self.key.cohort_id,
                "model_name": self.key.model_name,
                "model_version": self.key.model_version if version is None else version,
                "bucket_start": self.key.bucket_start,
                "bucket_s": self.key.bucket_s,
                "metric": metric,
                "feature": feature,
                "reference": reference,
                "value": float(value),
                "threshold": threshold,
                "drifted": bool(drifted),
                "n": int(n),
                "computed_at": self.now,
            }
        )


def score(
    sessions: SessionFactory,
    *,
    fleet: str,
    keys: Sequence[RollupKey],
    alpha: float,
    now: datetime,
    baseline: BaselineSource,
) -> int:
    """Score each rollup named in ``keys``; returns how many metric rows were written."""
    written = 0
    for key in dict.fromkeys(keys):  # a key named twice is scored once
        try:
            with transaction(sessions) as session:
                written += score_key(session, fleet=fleet, key=key, alpha=alpha, now=now, baseline=baseline)
        except (DecodeError, ValueError) as e:
            # A rollup that does not parse cannot be scored; the next rebuild of its bucket may fix it.
            cohort_id, model_name, model_version, bucket_start = key
            log.warning(
                "drift of cohort %s %s %s at %s not scored: %s",
                cohort_id, model_name, model_version, bucket_start.isoformat(), e,
            )  # fmt: skip
    return written


def score_key(
    session: Session,
    *,
    fleet: str,
    key: RollupKey | tuple[int, str, str, datetime],
    alpha: float,
    now: datetime,
    baseline: BaselineSource,
) -> int:
    """Score one rollup in ``session`` (the caller commits); returns how many rows were upserted."""
    cohort_id, model_name, model_version, bucket_start = key
    rollup = session.exec(
        select(CohortRollup).where(
            CohortRollup.fleet == fleet,
            CohortRollup.cohort_id == cohort_id,
            CohortRollup.model_name == model_name,
            CohortRollup.model_version == model_version,
            CohortRollup.bucket_start == bucket_start,
        )
    ).first()
    if rollup is None:
        return 0
    rows = _Rows(_Key(fleet, cohort_id, model_name, model_version, bucket_start, rollup.bucket_s), now)
    _telemetry(rows, rollup)
    window = _window(rollup)
    profile = baseline.profile(model_name, model_version, session=session)
    if window is not None:
        _confidence(rows, window)
        if profile is not None:
            _drift(rows, window, _profile_window(profile), "baseline", alpha)
            if profile.class_distribution:
                _classes(rows, window, list(profile.class_distribution), "baseline")
        previous = _previous(session, rollup)
        if previous is not None:
            _drift(rows, window, previous, "previous", alpha)
            if previous.class_counts and sum(previous.class_counts) > 0:
                _classes(rows, window, list(previous.class_counts), "previous")
    _labels(rows, session, rollup, baseline)
    _upsert(session, rows.rows)
    return len(rows.rows)


def _window(rollup: CohortRollup) -> sketch_pb2.SketchWindow | None:
    if not rollup.sketch:
        return None
    try:
        return sketch_pb2.SketchWindow.FromString(rollup.sketch)
    except DecodeError as e:
        raise ValueError(
            f"rollup sketch: expected a serialized SketchWindow, got {len(rollup.sketch)} bytes: {e}"
        ) from e


def _previous(session: Session, rollup: CohortRollup) -> sketch_pb2.SketchWindow | None:
    """The cohort and version's latest earlier rollup that sketched anything."""
    row = session.exec(
        select(CohortRollup)
        .where(
            CohortRollup.fleet == rollup.fleet,
            CohortRollup.cohort_id == rollup.cohort_id,
            CohortRollup.model_name == rollup.model_name,
            CohortRollup.model_version == rollup.model_version,
            col(CohortRollup.bucket_start) < rollup.bucket_start,
            col(CohortRollup.samples) > 0,
        )
        .order_by(col(CohortRollup.bucket_start).desc())
        .limit(1)
    ).first()
    return _window(row) if row is not None else None


def _profile_window(profile: profile_pb2.DataProfile) -> sketch_pb2.SketchWindow:
    """The profile's feature sketches in the shape of a window, so both references read the same."""
    return sketch_pb2.SketchWindow(reduction=profile.reduction, features=list(profile.features))


def _sketches(window: sketch_pb2.SketchWindow) -> dict[str, kll_floats_sketch]:
    """Non-empty feature sketches by name."""
    found = {}
    for feature in window.features:
        if not feature.kll_floats:
            continue
        sketch = load_sketch(feature.kll_floats)
        if not sketch.is_empty():
            found[feature.name] = sketch
    return found


def _drift(
    rows: _Rows, window: sketch_pb2.SketchWindow, reference: sketch_pb2.SketchWindow, name: str, alpha: float
) -> None:
    observed, expected = _sketches(window), _sketches(reference)
    compared = [f for f in observed if f in expected]
    # Bonferroni: each of F features is tested at alpha / F, so that alpha bounds the chance that any
    # feature of an undrifted window rejects (64 pixel columns at 1% each would alarm on half of them).
    per_feature = alpha / max(1, len(compared))
    worst: float | None = None
    drifted = False
    for feature in compared:
        sketch, against = observed[feature], expected[feature]
        found = feature_drift(sketch, against, alpha=per_feature)
        n = found.ks.n
        ks = found.ks
        rows.add(
            "drift_ks",
            ks.statistic,
            n=n,
            feature=feature,
            reference=name,
            threshold=ks.threshold,
            drifted=ks.drifted,
        )
        rows.add(
            "drift_psi",
            found.psi,
            n=n,
            feature=feature,
            reference=name,
            threshold=PSI_DRIFT,
            drifted=found.psi > PSI_DRIFT,
        )
        rows.add("drift_js", found.js, n=n, feature=feature, reference=name)
        rows.add("drift_wasserstein", found.wasserstein, n=n, feature=feature, reference=name)
        worst = ks.score if worst is None else max(worst, ks.score)
        drifted = drifted or ks.drifted
    if worst is not None:
        rows.add("drift_score", worst, n=int(window.samples), reference=name, threshold=1.0, drifted=drifted)


def _classes(rows: _Rows, window: sketch_pb2.SketchWindow, reference: list[float], name: str) -> None:
    counts = list(window.class_counts)
    n = sum(counts)
    if n <= 0:
        return
    found = class_drift(counts, reference)
    rows.add(
        "prediction_psi", found.psi, n=n, reference=name, threshold=PSI_DRIFT, drifted=found.psi > PSI_DRIFT
    )
    rows.add("prediction_js", found.js, n=n, reference=name)


def _confidence(rows: _Rows, window: sketch_pb2.SketchWindow) -> None:
    if not window.confidence_kll:
        return
    sketch = load_sketch(window.confidence_kll)
    if not sketch.is_empty():
        rows.add("confidence_p50", float(sketch.get_quantile(0.5)), n=int(sketch.n))


def _telemetry(rows: _Rows, rollup: CohortRollup) -> None:
    rows.add("requests", rollup.requests, n=rollup.requests)
    if rollup.requests > 0:
        rows.add("error_rate", rollup.errors / rollup.requests, n=rollup.requests)
    if rollup.p95_ms is not None:
        rows.add("p95_ms", rollup.p95_ms, n=rollup.requests)


def _labels(rows: _Rows, session: Session, rollup: CohortRollup, baseline: BaselineSource) -> None:
    """Accuracy and recall per version named by any label of the cohort's bucket."""
    bucket = session.exec(
        select(CohortRollup).where(
            CohortRollup.fleet == rollup.fleet,
            CohortRollup.cohort_id == rollup.cohort_id,
            CohortRollup.model_name == rollup.model_name,
            CohortRollup.bucket_start == rollup.bucket_start,
        )
    ).all()
    labels: list[sketch_pb2.LabelCounts] = []
    for row in bucket:
        window = _window(row)
        if window is not None:
            labels.extend(window.labels)
    for version, tally in sorted(tally_labels(labels).items()):
        if not version:
            continue
        rows.add("labelled", tally.labelled, n=tally.labelled, version=version)
        accuracy = tally.accuracy
        if accuracy is None:
            continue
        rows.add("accuracy", accuracy, n=tally.total, version=version)
        names = _class_names(session, baseline, rollup.model_name, version)
        for actual, (recall, n) in tally.recall().items():
            rows.add("recall", recall, n=n, feature=_name(names, actual), version=version)


def _class_names(session: Session, baseline: BaselineSource, model_name: str, version: str) -> Sequence[str]:
    profile = baseline.profile(model_name, version, session=session)
    return list(profile.class_names) if profile is not None else []


def _name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) and names[index] else str(index)


def _upsert(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (the metric's key) DO UPDATE: the newest computation wins."""
    # One row per key: PostgreSQL refuses a statement that would update the same row twice
    # (two classes that share a name would otherwise collide).
    batch = list({tuple(row[c] for c in _KEY_COLUMNS): row for row in rows}.values())
    if not batch:
        return
    table = CohortMetric.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise RuntimeError(f"unsupported database dialect {dialect!r}: expected sqlite or postgresql")
    stmt = stmt.on_conflict_do_update(
        index_elements=list(_KEY_COLUMNS), set_={c: stmt.excluded[c] for c in _VALUE_COLUMNS}
    )
    for start in range(0, len(batch), _ROWS_PER_INSERT):
        session.execute(stmt, batch[start : start + _ROWS_PER_INSERT])
