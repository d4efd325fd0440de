"""Baseline data profiles: what a model saw and predicted on held-out data (light: numpy, datasketches).

A profile ships in every bundle as a serialized ``edgefleet.v1.DataProfile``:

- ``features``: an Apache DataSketches KLL float sketch per input feature. A
  tabular model gets one per column. An image model gets summary features
  instead (a sketch per pixel says little and costs a lot): mean and standard
  deviation of intensity, the share of lit pixels, and the centre of mass.
  Devices send sketches of the same features; the hub scores drift against these.
- ``class_distribution``: the share of each predicted class, which a device
  compares with its own predictions during a new version's trial window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError

from edgefleet_proto.v1 import profile_pb2
from model_tools.errors import ConfigError, ProfileError

__all__ = [
    "DEFAULT_K",
    "IMAGE_FEATURES",
    "PROFILE_MEDIA_TYPE",
    "build_profile",
    "class_distribution",
    "feature_columns",
    "parse_profile",
    "summary_features",
]

PROFILE_MEDIA_TYPE = "application/x-edgefleet-profile+protobuf"
# KLL accuracy parameter: ~1.65% normalized rank error at k=200 (the library's default).
DEFAULT_K = 200
IMAGE_FEATURES: tuple[str, ...] = ("mean", "std", "lit_fraction", "center_row", "center_col")
# A pixel counts as lit above half of the full scale (features are in [0, 1]).
_LIT = 0.5


@dataclass(frozen=True)
class FeatureColumns:
    names: tuple[str, ...]
    values: np.ndarray  # (N, len(names)) float32


def summary_features(images: np.ndarray) -> FeatureColumns:
    """Per-image summaries of (N, H, W) or (N, C, H, W) intensities in [0, 1]."""
    if images.ndim == 4:
        images = images.mean(axis=1)
    if images.ndim != 3:
        raise ConfigError(f"expected images of shape (N, H, W) or (N, C, H, W), got {images.shape}")
    n, h, w = images.shape
    flat = images.reshape(n, -1).astype(np.float64)
    total = flat.sum(axis=1)
    rows = np.repeat(np.arange(h, dtype=np.float64), w)
    cols = np.tile(np.arange(w, dtype=np.float64), h)
    # A blank image has no centre of mass: use the middle, so the sketch stays finite.
    safe = np.where(total > 0, total, 1.0)
    center_row = np.where(total > 0, (flat * rows).sum(axis=1) / safe / max(h - 1, 1), 0.5)
    center_col = np.where(total > 0, (flat * cols).sum(axis=1) / safe / max(w - 1, 1), 0.5)
    values = np.stack(
        [flat.mean(axis=1), flat.std(axis=1), (flat > _LIT).mean(axis=1), center_row, center_col], axis=1
    )
    return FeatureColumns(IMAGE_FEATURES, values.astype(np.float32))


def feature_columns(x: np.ndarray, *, image_shape: Sequence[int] | None) -> FeatureColumns:
    """The features a profile sketches: every column of ``x``, or image summaries when ``image_shape``."""
    if x.ndim != 2:
        raise ConfigError(f"expected rows of shape (N, features), got {x.shape}")
    if image_shape is not None:
        shape = tuple(int(d) for d in image_shape)
        if int(np.prod(shape)) != x.shape[1]:
            raise ConfigError(f"image shape {shape} does not hold {x.shape[1]} features per row")
        return summary_features(x.reshape(x.shape[0], *shape))
    width = len(str(x.shape[1] - 1))
    names = tuple(f"f{i:0{width}d}" for i in range(x.shape[1]))
    return FeatureColumns(names, np.asarray(x, dtype=np.float32))


def class_distribution(predicted: np.ndarray, num_classes: int) -> list[float]:
    """Share of each class among ``predicted`` (integer class ids); sums to 1."""
    if predicted.size == 0:
        raise ProfileError("expected at least one prediction to compute a class distribution, got none")
    if predicted.min() < 0 or predicted.max() >= num_classes:
        raise ProfileError(
            f"predicted classes must lie in [0, {num_classes - 1}], got {predicted.min()}..{predicted.max()}"
        )
    counts = np.bincount(predicted.astype(np.int64), minlength=num_classes).astype(np.float64)
    return [float(c) for c in counts / counts.sum()]


def build_profile(
    *,
    model_name: str,
    model_version: str,
    dataset_hash: str,
    x: np.ndarray,
    predicted: np.ndarray,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    image_shape: Sequence[int] | None = None,
    k: int = DEFAULT_K,
) -> profile_pb2.DataProfile:
    """A DataProfile of held-out rows ``x`` and the classes the model predicted for them."""
    if x.shape[0] != predicted.shape[0]:
        raise ProfileError(f"expected one prediction per row, got {predicted.shape[0]} for {x.shape[0]} rows")
    if not np.isfinite(x).all():
        raise ProfileError("held-out rows hold NaN or infinite values: expected finite features")
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ProfileError(f"expected {num_classes} class names, got {len(names)}")
    columns = feature_columns(x, image_shape=image_shape)
    profile = profile_pb2.DataProfile(
        model_name=model_name,
        model_version=model_version,
        dataset_hash=dataset_hash,
        samples=int(x.shape[0]),
        class_distribution=class_distribution(predicted, num_classes),
        class_names=names,
    )
    for index, name in enumerate(columns.names):
        values = np.ascontiguousarray(columns.values[:, index], dtype=np.float32)
        sketch = kll_floats_sketch(k)
        sketch.update(values)
        profile.features.add(
            name=name,
            kll_floats=bytes(sketch.serialize()),
            count=int(sketch.n),
            min=float(sketch.get_min_value()),
            max=float(sketch.get_max_value()),
        )
    return profile


def parse_profile(data: bytes) -> profile_pb2.DataProfile:
    """A DataProfile from its serialized bytes; ProfileError when they are not one."""
    profile = profile_pb2.DataProfile()
    try:
        profile.ParseFromString(data)
    except DecodeError as e:
        raise ProfileError(f"not a serialized DataProfile: {e}") from e
    if not profile.class_distribution or abs(sum(profile.class_distribution) - 1.0) > 1e-6:
        raise ProfileError(
            f"expected a class distribution that sums to 1, got {len(profile.class_distribution)} "
            f"shares summing to {sum(profile.class_distribution):.6f}"
        )
    for feature in profile.features:
        try:
            kll_floats_sketch.deserialize(feature.kll_floats)
        except (RuntimeError, ValueError) as e:
            raise ProfileError(f"feature {feature.name!r} does not hold a KLL float sketch: {e}") from e
    return profile
