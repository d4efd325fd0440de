"""Building drift sketches for tests: windows as devices send them, profiles as bundles ship them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]
from sqlmodel import Session, select

from cloud.artifacts import ArtifactStore
from cloud.models import Bundle, ModelVersion
from edgefleet_proto.v1 import profile_pb2, sketch_pb2
from model_tools.profile import PROFILE_MEDIA_TYPE

__all__ = ["add_bundle", "feature", "labels", "normal", "profile", "window"]


def normal(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, n).astype(np.float32)


def feature(name: str, values: np.ndarray | None) -> profile_pb2.FeatureSketch:
    """A feature sketch of ``values``; None gives a feature that sketched nothing."""
    sketch = kll_floats_sketch(200)
    if values is not None:
        sketch.update(np.ascontiguousarray(values, dtype=np.float32))
    return profile_pb2.FeatureSketch(name=name, kll_floats=bytes(sketch.serialize()), count=int(sketch.n))


def labels(version: str, cells: Mapping[tuple[int, int], int]) -> sketch_pb2.LabelCounts:
    """Label counts of one version: (actual, predicted) -> count."""
    return sketch_pb2.LabelCounts(
        model_version=version,
        labelled=sum(cells.values()),
        cells=[sketch_pb2.ConfusionCell(actual=a, predicted=p, count=c) for (a, p), c in cells.items()],
    )


def window(
    *,
    model: str,
    version: str,
    features: Mapping[str, np.ndarray | None],
    class_counts: Sequence[int] = (),
    confidence: np.ndarray | None = None,
    label_counts: Sequence[sketch_pb2.LabelCounts] = (),
    seq: int = 0,
    start_ms: int = 0,
    end_ms: int = 0,
) -> sketch_pb2.SketchWindow:
    sizes = [len(v) for v in features.values() if v is not None]
    out = sketch_pb2.SketchWindow(
        seq=seq,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        model_name=model,
        model_version=version,
        samples=max(sizes, default=0),
        reduction="columns",
        features=[feature(name, values) for name, values in features.items()],
        class_counts=list(class_counts),
        labels=list(label_counts),
    )
    if confidence is not None:
        sketch = kll_floats_sketch(200)
        sketch.update(np.ascontiguousarray(confidence, dtype=np.float32))
        out.confidence_kll = bytes(sketch.serialize())
    return out


def profile(
    *,
    model: str,
    version: str,
    features: Mapping[str, np.ndarray],
    class_distribution: Sequence[float],
    class_names: Sequence[str],
) -> profile_pb2.DataProfile:
    return profile_pb2.DataProfile(
        model_name=model,
        model_version=version,
        dataset_hash="0" * 64,
        samples=max(len(v) for v in features.values()),
        features=[feature(name, values) for name, values in features.items()],
        class_distribution=list(class_distribution),
        class_names=list(class_names),
        reduction="columns",
    )


def add_bundle(
    session: Session,
    store: ArtifactStore,
    data_profile: profile_pb2.DataProfile,
    *,
    metrics: Mapping[str, Any] | None = None,
) -> None:
    """A bundle row for the profile's version (registered here as a bare row when it is not yet)."""
    name, version = data_profile.model_name, data_profile.model_version
    row = session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()
    if row is None:
        row = ModelVersion(name=name, version=version, format="onnx", sha256="1" * 64, length=1)
        session.add(row)
        session.flush()
    assert row.id is not None
    info = store.put_bytes(data_profile.SerializeToString(deterministic=True))
    session.add(
        Bundle(
            model_version_id=row.id,
            manifest={"metrics": dict(metrics or {})},
            profile_sha256=info.sha256,
            profile_length=info.length,
            profile_media_type=PROFILE_MEDIA_TYPE,
        )
    )
    session.commit()
