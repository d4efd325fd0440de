"""Baseline data profiles: KLL sketches of features (or image summaries) and the predicted classes."""

from __future__ import annotations

import numpy as np
import pytest
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]

from edgefleet_proto.v1 import profile_pb2
from model_tools.errors import ConfigError, ProfileError
from model_tools.profile import (
    IMAGE_FEATURES,
    build_profile,
    class_distribution,
    feature_columns,
    parse_profile,
    profile_reduction,
    resolve_reduction,
    summary_features,
)


def test_summary_features_of_known_images() -> None:
    blank = np.zeros((4, 4), np.float32)
    corner = blank.copy()
    corner[0, 0] = 1.0
    full = np.ones((4, 4), np.float32)
    cols = summary_features(np.stack([blank, corner, full]))
    assert cols.names == IMAGE_FEATURES
    mean, std, lit, row, col = cols.values.T
    np.testing.assert_allclose(mean, [0.0, 1 / 16, 1.0], rtol=1e-6)
    np.testing.assert_allclose(lit, [0.0, 1 / 16, 1.0], rtol=1e-6)
    np.testing.assert_allclose(row, [0.5, 0.0, 0.5], rtol=1e-6)  # blank: the middle; corner: the top
    np.testing.assert_allclose(col, [0.5, 0.0, 0.5], rtol=1e-6)
    assert std[0] == 0 and std[2] == 0 and std[1] > 0


def test_class_distribution_sums_to_one_and_checks_range() -> None:
    assert class_distribution(np.array([0, 0, 1, 3]), 4) == [0.5, 0.25, 0.0, 0.25]
    with pytest.raises(ProfileError, match=r"must lie in \[0, 3\]"):
        class_distribution(np.array([4]), 4)
    with pytest.raises(ProfileError, match="at least one prediction"):
        class_distribution(np.array([], dtype=np.int64), 4)


def test_tabular_profile_sketches_every_column() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((300, 64), dtype=np.float32)
    predicted = np.arange(300) % 10
    profile = parse_profile(
        build_profile(
            model_name="m", model_version="v", dataset_hash="h", x=x, predicted=predicted, num_classes=10
        ).SerializeToString()
    )
    assert profile.samples == 300 and len(profile.features) == 64
    assert profile.features[0].name == "f00" and profile.features[63].name == "f63"
    assert list(profile.class_distribution) == [0.1] * 10
    assert list(profile.class_names) == [str(c) for c in range(10)]
    f = profile.features[7]
    sketch = kll_floats_sketch.deserialize(f.kll_floats)
    assert sketch.n == f.count == 300
    assert f.min == pytest.approx(float(x[:, 7].min())) and f.max == pytest.approx(float(x[:, 7].max()))
    assert sketch.get_quantile(0.5) == pytest.approx(float(np.median(x[:, 7])), abs=0.05)


def test_image_profile_uses_summary_features() -> None:
    x = np.random.default_rng(2).random((50, 64), dtype=np.float32)
    profile = build_profile(
        model_name="m",
        model_version="v",
        dataset_hash="h",
        x=x,
        predicted=np.zeros(50, np.int64),
        num_classes=10,
        image_shape=(1, 8, 8),
    )
    assert [f.name for f in profile.features] == list(IMAGE_FEATURES)
    assert profile.class_distribution[0] == 1.0
    # Recorded, so that a device reduces its inputs the same way.
    assert (profile.reduction, list(profile.image_shape)) == ("image_summary", [1, 8, 8])


def test_channel_means_is_one_feature_per_channel_and_recorded() -> None:
    x = np.zeros((6, 2, 3, 3), np.float32)
    x[:, 1] = np.arange(6, dtype=np.float32)[:, None, None] / 10
    profile = build_profile(
        model_name="m",
        model_version="v",
        dataset_hash="h",
        x=x,
        predicted=np.zeros(6, np.int64),
        num_classes=2,
        reduction="channel_means",
    )
    assert profile.reduction == "channel_means" and list(profile.image_shape) == []
    assert [(f.name, f.min, f.max) for f in profile.features] == [
        ("ch0", 0.0, 0.0),
        ("ch1", 0.0, pytest.approx(0.5)),
    ]


def test_one_function_reduces_rows_for_every_reduction() -> None:
    rows = np.random.default_rng(5).random((10, 12), dtype=np.float32)
    as_columns = feature_columns(rows, reduction="columns")
    assert as_columns.names[0] == "f00" and as_columns.values.shape == (10, 12)
    np.testing.assert_array_equal(as_columns.values, rows)
    summary = feature_columns(rows, image_shape=(3, 2, 2))
    np.testing.assert_allclose(summary.values, summary_features(rows.reshape(10, 3, 2, 2)).values)
    channels = feature_columns(rows, image_shape=(3, 2, 2), reduction="channel_means")
    assert channels.names == ("ch0", "ch1", "ch2")
    np.testing.assert_allclose(channels.values, rows.reshape(10, 3, 4).mean(axis=2), rtol=1e-6)
    # Unflattened (N, C, H, W) inputs need no image shape.
    np.testing.assert_allclose(feature_columns(rows.reshape(10, 3, 2, 2)).values, channels.values, rtol=1e-6)
    with pytest.raises(ConfigError, match=r"image shape \(5, 5\) does not hold 12 features per row"):
        feature_columns(rows, image_shape=(5, 5))
    with pytest.raises(ConfigError, match=r"unknown feature reduction 'pixels': expected one of"):
        feature_columns(rows, reduction="pixels")
    with pytest.raises(ConfigError, match=r"expected inputs of shape \(N, C, \.\.\.\) for channel means"):
        feature_columns(rows, reduction="channel_means")


@pytest.mark.parametrize(
    ("reduction", "image_shape", "rank", "expected"),
    [
        (None, None, 2, "columns"),
        (None, None, 4, "channel_means"),
        (None, (1, 8, 8), 2, "image_summary"),
        ("channel_means", (1, 8, 8), 2, "channel_means"),
    ],
)
def test_the_default_reduction_follows_the_image_shape_and_the_rank(
    reduction: str | None, image_shape: tuple[int, ...] | None, rank: int, expected: str
) -> None:
    assert resolve_reduction(reduction, image_shape=image_shape, rank=rank) == expected


def test_a_profile_without_a_recorded_reduction_reads_as_the_proto_says() -> None:
    assert profile_reduction(profile_pb2.DataProfile()) == ("columns", None)
    assert profile_reduction(profile_pb2.DataProfile(image_shape=[1, 8, 8])) == ("image_summary", (1, 8, 8))


def test_bad_input_is_refused() -> None:
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ProfileError, match="one prediction per row"):
        build_profile(
            model_name="m", model_version="v", dataset_hash="h", x=x, predicted=np.zeros(2), num_classes=2
        )
    x[0, 0] = np.nan
    with pytest.raises(ProfileError, match="finite"):
        build_profile(
            model_name="m", model_version="v", dataset_hash="h", x=x, predicted=np.zeros(3), num_classes=2
        )
    with pytest.raises(ProfileError, match="not a serialized DataProfile"):
        parse_profile(b"\xff\xff\xff")
    with pytest.raises(ProfileError, match="sums to 1"):
        parse_profile(b"")
