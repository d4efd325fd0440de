"""The digits data set, split for training (hub only: imports scikit-learn).

The demo model learns scikit-learn's bundled 8x8 digits (1,797 images, no
download). Splits are stratified and fixed by a seed, and carry a content hash
so a model version can name exactly the data it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from model_tools.errors import ConfigError, DataError
from model_tools.hashing import array_digest

__all__ = ["DATASET_NAME", "DigitsSplits", "as_images", "load_digits_splits", "write_traffic_npz"]

DATASET_NAME = "sklearn-digits"
# Digits pixels are counts of set pixels in 4x4 blocks: integers 0..16.
_PIXEL_MAX = 16.0
_IMAGE_SIDE = 8


@dataclass(frozen=True, eq=False)
class DigitsSplits:
    """Train, validation and test splits: float32 features in [0, 1], int64 labels.

    The arrays are read-only so that ``content_hash`` keeps describing them.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    content_hash: str
    seed: int
    num_classes: int = 10
    feature_shape: tuple[int, ...] = field(default=(_IMAGE_SIDE * _IMAGE_SIDE,))
    name: str = DATASET_NAME

    def sizes(self) -> dict[str, int]:
        """Number of samples in each split."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def as_images(x: np.ndarray) -> np.ndarray:
    """View flat (N, 64) digits as (N, 1, 8, 8) single-channel images."""
    side = _IMAGE_SIDE
    if x.ndim != 2 or x.shape[1] != side * side:
        raise ConfigError(f"expected flat digits of shape (N, {side * side}), got {x.shape}")
    return x.reshape(x.shape[0], 1, side, side)


def load_digits_splits(
    seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DigitsSplits:
    """Load digits and split them, stratified by class, the same way for the same seed."""
    for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"{label} must be between 0 and 1 (exclusive), got {fraction}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction must leave data to train on (< 1), "
            f"got {val_fraction} + {test_fraction} = {val_fraction + test_fraction}"
        )
    try:
        bunch = load_digits()
    except (OSError, ValueError) as e:
        raise DataError(f"could not load the scikit-learn digits data set: {e}") from e
    x = (np.asarray(bunch.data, dtype=np.float32) / _PIXEL_MAX).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    # The validation share is of the whole set, so rescale it to what is left after the test split.
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1.0 - test_fraction), stratify=y_rest, random_state=seed
    )
    arrays = [_read_only(a) for a in (x_train, y_train, x_val, y_val, x_test, y_test)]
    return DigitsSplits(
        x_train=arrays[0],
        y_train=arrays[1],
        x_val=arrays[2],
        y_val=arrays[3],
        x_test=arrays[4],
        y_test=arrays[5],
        content_hash=array_digest(*arrays),
        seed=seed,
    )


def _read_only(a: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(a)
    out.setflags(write=False)
    return out


def write_traffic_npz(path: Path, *, seed: int = 0) -> Path:
    """The held-out digits as a simulated fleet's traffic (``x`` flat 64 in [0, 1], ``y`` labels).

    The test split, not the whole set: the model never saw these rows, so labelled accuracy on them
    is what it would be in the field.
    """
    import io

    from model_tools.atomic import atomic_write

    splits = load_digits_splits(seed=seed)
    buffer = io.BytesIO()
    np.savez(buffer, x=splits.x_test, y=splits.y_test)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue(), mode=0o644)
    return path
