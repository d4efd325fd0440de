"""Baseline data profiles: what a model saw and predicted on held-out data (light: numpy, datasketches).

A profile ships in every bundle as a serialized ``edgefleet.v1.DataProfile``:

- ``features``: an Apache DataSketches KLL float sketch per input feature. How
  input rows become features is the profile's ``reduction``: ``columns`` (one
  per input column, for tabular models), ``image_summary`` (a sketch per pixel
  says little and costs a lot: mean and standard deviation of intensity, the
  share of lit pixels, and the centre of mass) or ``channel_means`` (one per
  channel of (C, ...) inputs). Devices reduce their inputs with the same
  :func:`feature_columns` and send sketches of the same features; the hub
  scores drift against these.
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
    "REDUCTIONS",
    "FeatureColumns",
    "build_profile",
    "channel_means",
    "class_distribution",
    "feature_columns",
    "parse_profile",
    "profile_reduction",
    "resolve_reduction",
    "summary_features",
]

PROFILE_MEDIA_TYPE = "application/x-edgefleet-profile+protobuf"
# KLL accuracy parameter: ~1.65% normalized rank error at k=200 (the library's default).
DEFAULT_K = 200
IMAGE_FEATURES: tuple[str, ...] = ("mean", "std", "lit_fraction", "center_row", "center_col")
# A pixel counts as lit above half of the full scale (features are in [0, 1]).
_LIT = 0.5
# How input rows become features (DataProfile.reduction, SketchWindow.reduction).
COLUMNS, IMAGE_SUMMARY, CHANNEL_MEANS = "columns", "image_summary", "channel_means"
REDUCTIONS: tuple[str, ...] = (COLUMNS, IMAGE_SUMMARY, CHANNEL_MEANS)


@dataclass(frozen=True)
class FeatureColumns:
    names: tuple[str, ...]
    values: np.ndarray  # (N, len(names)) float32


def summary_features(images: np.ndarray) -> FeatureColumns:
    """Per-image summaries of (N, H, W) or (N, C, H, W) intensities in [0, 1]."""
    if images.ndim == 4:
        # A device reduces every request in bulk: skip the channel mean's copy for one channel.
        images = images[:, 0] if images.shape[1] == 1 else images.mean(axis=1)
    if images.ndim != 3:
        raise ConfigError(f"expected images of shape (N, H, W) or (N, C, H, W), got {images.shape}")
    n, h, w = images.shape
    flat = images.reshape(n, -1).astype(np.float64)
    pixels = h * w
    # Row sums as matrix products (much faster than axis-1 reductions on short rows): the total,
    # and the intensity-weighted row and column indices for the centre of mass.
    weights = np.stack(
        [
            np.ones(pixels),
            np.repeat(np.arange(h, dtype=np.float64), w),
            np.tile(np.arange(w, dtype=np.float64), h),
        ],
        axis=1,
    )
    total, by_row, by_col = (flat @ weights).T
    mean = total / pixels
    std = np.sqrt(np.maximum((flat * flat) @ weights[:, 0] / pixels - mean * mean, 0.0))
    lit = (flat > _LIT).astype(np.float64) @ weights[:, 0] / pixels
    # A blank image has no centre of mass: use the middle, so the sketch stays finite.
    safe = np.where(total > 0, total, 1.0)
    center_row = np.where(total > 0, by_row / safe / max(h - 1, 1), 0.5)
    center_col = np.where(total > 0, by_col / safe / max(w - 1, 1), 0.5)
    values = np.stack([mean, std, lit, center_row, center_col], axis=1)
    return FeatureColumns(IMAGE_FEATURES, values.astype(np.float32))


def channel_means(x: np.ndarray) -> FeatureColumns:
    """The mean of each channel of (N, C, ...) inputs: one feature per channel."""
    if x.ndim < 3:
        raise ConfigError(f"expected inputs of shape (N, C, ...) for channel means, got {x.shape}")
    n, c = x.shape[0], x.shape[1]
    values = x.reshape(n, c, -1).astype(np.float64).mean(axis=2)
    width = len(str(c - 1))
    return FeatureColumns(tuple(f"ch{i:0{width}d}" for i in range(c)), values.astype(np.float32))


def resolve_reduction(reduction: str | None, *, image_shape: Sequence[int] | None, rank: int) -> str:
    """The reduction to use: ``reduction`` when given, else ``image_summary`` for images (an
    ``image_shape``), ``columns`` for rows of rank 2 (N, F), ``channel_means`` for (N, C, ...)."""
    if reduction:
        if reduction not in REDUCTIONS:
            raise ConfigError(f"unknown feature reduction {reduction!r}: expected one of {list(REDUCTIONS)}")
        return reduction
    if image_shape:
        return IMAGE_SUMMARY
    return COLUMNS if rank <= 2 else CHANNEL_MEANS


def profile_reduction(profile: profile_pb2.DataProfile) -> tuple[str, tuple[int, ...] | None]:
    """(reduction, image shape or None) of a profile; an empty reduction reads as the proto says."""
    shape = tuple(int(d) for d in profile.image_shape) or None
    return resolve_reduction(profile.reduction or None, image_shape=shape, rank=2), shape


def feature_columns(
    x: np.ndarray, *, image_shape: Sequence[int] | None = None, reduction: str | None = None
) -> FeatureColumns:
    """The features of input rows ``x`` (N, ...), as both a profile and a device sketch them.

    ``image_shape`` is the shape of one input as an image (rows are reshaped to it);
    ``reduction`` one of :data:`REDUCTIONS`, or None for :func:`resolve_reduction`'s default.
    """
    if x.ndim < 1:
        raise ConfigError(f"expected rows of shape (N, ...), got a scalar of shape {x.shape}")
    shape = tuple(int(d) for d in image_shape) if image_shape else None
    how = resolve_reduction(reduction, image_shape=shape, rank=x.ndim)
    n = x.shape[0]
    if shape is not None:
        row = int(np.prod(x.shape[1:]))
        if int(np.prod(shape)) != row:
            raise ConfigError(f"image shape {shape} does not hold {row} features per row")
        x = x.reshape(n, *shape)
    if how == IMAGE_SUMMARY:
        return summary_features(x)
    if how == CHANNEL_MEANS:
        return channel_means(x)
    flat = x.reshape(n, -1)
    width = len(str(flat.shape[1] - 1))
    names = tuple(f"f{i:0{width}d}" for i in range(flat.shape[1]))
    return FeatureColumns(names, np.asarray(flat, dtype=np.float32))


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
    reduction: str | None = None,
    k: int = DEFAULT_K,
) -> profile_pb2.DataProfile:
    """A DataProfile of held-out rows ``x`` and the classes the model predicted for them.

    ``reduction`` (see :func:`feature_columns`) and ``image_shape`` are recorded in the
    profile, so that a device reduces its inputs the same way.
    """
    if x.shape[0] != predicted.shape[0]:
        raise ProfileError(f"expected one prediction per row, got {predicted.shape[0]} for {x.shape[0]} rows")
    if not np.isfinite(x).all():
        raise ProfileError("held-out rows hold NaN or infinite values: expected finite features")
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ProfileError(f"expected {num_classes} class names, got {len(names)}")
    shape = tuple(int(d) for d in image_shape) if image_shape else None
    how = resolve_reduction(reduction, image_shape=shape, rank=x.ndim)
    columns = feature_columns(x, image_shape=shape, reduction=how)
    profile = profile_pb2.DataProfile(
        model_name=model_name,
        model_version=model_version,
        dataset_hash=dataset_hash,
        samples=int(x.shape[0]),
        class_distribution=class_distribution(predicted, num_classes),
        class_names=names,
        reduction=how,
        image_shape=list(shape or ()),
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
