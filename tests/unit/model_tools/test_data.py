"""The digits splits: shapes, ranges, stratification and content hash (scikit-learn's bundled data)."""

from __future__ import annotations

import numpy as np
import pytest

from model_tools.data import DigitsSplits, as_images, load_digits_splits
from model_tools.errors import ConfigError
from model_tools.hashing import array_digest

DIGITS_TOTAL = 1797


@pytest.fixture(scope="module")
def splits() -> DigitsSplits:
    return load_digits_splits(seed=0)


def test_shapes_dtypes_and_sizes(splits: DigitsSplits) -> None:
    pairs = [(splits.x_train, splits.y_train), (splits.x_val, splits.y_val), (splits.x_test, splits.y_test)]
    for x, y in pairs:
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (len(y), 64)
    assert sum(splits.sizes().values()) == DIGITS_TOTAL
    assert splits.sizes()["test"] == pytest.approx(0.15 * DIGITS_TOTAL, abs=1)
    assert splits.sizes()["val"] == pytest.approx(0.15 * DIGITS_TOTAL, abs=1)
    assert splits.num_classes == 10 and splits.feature_shape == (64,)


def test_features_are_scaled_to_unit_range(splits: DigitsSplits) -> None:
    x = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    assert x.min() == 0.0 and x.max() == 1.0
    # Pixels were 0..16: scaled values are multiples of 1/16.
    np.testing.assert_array_equal(x * 16, np.round(x * 16))


def test_labels_cover_every_class(splits: DigitsSplits) -> None:
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert set(np.unique(y).tolist()) == set(range(10))


def test_splits_are_stratified(splits: DigitsSplits) -> None:
    y_all = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    overall = np.bincount(y_all, minlength=10) / len(y_all)
    for y in (splits.y_train, splits.y_val, splits.y_test):
        counts = np.bincount(y, minlength=10)
        # Stratified: each class count is within two samples (one rounding per split stage) of its
        # share of the split; a random split strays by about six.
        assert np.all(np.abs(counts - overall * len(y)) <= 2.0), counts


def test_same_seed_gives_the_same_splits_and_hash(splits: DigitsSplits) -> None:
    again = load_digits_splits(seed=0)
    assert again.content_hash == splits.content_hash
    np.testing.assert_array_equal(again.x_train, splits.x_train)
    np.testing.assert_array_equal(again.y_test, splits.y_test)


def test_another_seed_gives_other_splits_and_another_hash(splits: DigitsSplits) -> None:
    other = load_digits_splits(seed=1)
    assert other.content_hash != splits.content_hash
    assert not np.array_equal(other.y_train, splits.y_train)


def test_content_hash_covers_every_array_in_order(splits: DigitsSplits) -> None:
    arrays = [splits.x_train, splits.y_train, splits.x_val, splits.y_val, splits.x_test, splits.y_test]
    assert splits.content_hash == array_digest(*arrays)
    changed = splits.x_val.copy()
    changed[0, 0] = 0.5 if changed[0, 0] != 0.5 else 0.25
    arrays[2] = changed
    assert array_digest(*arrays) != splits.content_hash


def test_arrays_are_read_only_so_the_hash_stays_true(splits: DigitsSplits) -> None:
    with pytest.raises(ValueError, match="read-only"):
        splits.x_train[0, 0] = 1.0


def test_as_images_views_rows_as_8x8(splits: DigitsSplits) -> None:
    images = as_images(splits.x_test)
    assert images.shape == (len(splits.x_test), 1, 8, 8)
    np.testing.assert_array_equal(images[3, 0, 2], splits.x_test[3, 16:24])
    with pytest.raises(ConfigError, match=r"\(N, 64\)"):
        as_images(np.zeros((2, 63), dtype=np.float32))


@pytest.mark.parametrize(
    ("val", "test", "match"),
    [(0.0, 0.15, "val_fraction"), (0.15, 1.0, "test_fraction"), (0.5, 0.5, "leave data to train on")],
)
def test_bad_fractions_are_refused(val: float, test: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_digits_splits(val_fraction=val, test_fraction=test)
