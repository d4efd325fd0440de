"""Baseline data profiles: KLL sketches of features (or image summaries) and the predicted classes."""

from __future__ import annotations

import numpy as np
import pytest
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]

from model_tools.errors import ProfileError
from model_tools.profile import (
    IMAGE_FEATURES,
    build_profile,
    class_distribution,
    parse_profile,
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
