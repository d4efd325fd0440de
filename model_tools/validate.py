"""Check a labelled data set before training (light: numpy only).

Training on broken data wastes a run at best and ships a broken model at worst,
so every check runs before the first epoch and all of them report at once: the
report names the offending rows and columns, so a person can find them in the
source data. :func:`validate_dataset` returns the report; :func:`require_valid`
raises :class:`DataValidationError` carrying it when any check failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_tools.errors import ConfigError, DataValidationError

__all__ = [
    "DEFAULT_MIN_CLASS_RATIO",
    "Issue",
    "ValidationReport",
    "require_valid",
    "validate_dataset",
]

# The rarest class must have at least this share of the commonest class's samples. Digits is
# near-balanced (about 0.93); a ratio under 0.2 means a split or an export went wrong.
DEFAULT_MIN_CLASS_RATIO = 0.2
# How many offending rows or columns a report lists by index; the count is always complete.
_SHOWN = 20


@dataclass(frozen=True)
class Issue:
    """One failed check: what was expected, and where the data differs."""

    check: str
    message: str
    rows: tuple[int, ...] = ()
    columns: tuple[int, ...] = ()
    row_count: int = 0
    column_count: int = 0

    def describe(self) -> str:
        parts = [f"{self.check}: {self.message}"]
        if self.row_count:
            parts.append(f"rows {_shown(self.rows, self.row_count)}")
        if self.column_count:
            parts.append(f"columns {_shown(self.columns, self.column_count)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "message": self.message,
            "rows": list(self.rows),
            "row_count": self.row_count,
            "columns": list(self.columns),
            "column_count": self.column_count,
        }


@dataclass(frozen=True)
class ValidationReport:
    """What the checks found on one split; ``ok`` when nothing failed."""

    split: str
    samples: int
    issues: tuple[Issue, ...] = ()
    class_counts: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    def describe(self) -> str:
        if self.ok:
            return f"{self.split}: {self.samples} samples passed every check"
        lines = [f"{self.split}: {len(self.issues)} check(s) failed on {self.samples} samples"]
        lines += [f"  - {issue.describe()}" for issue in self.issues]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "samples": self.samples,
            "ok": self.ok,
            "issues": [i.to_dict() for i in self.issues],
            "class_counts": {str(k): v for k, v in sorted(self.class_counts.items())},
        }


def validate_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    feature_shape: Sequence[int],
    num_classes: int,
    split: str = "train",
    min_class_ratio: float = DEFAULT_MIN_CLASS_RATIO,
) -> ValidationReport:
    """Check shapes, dtypes, NaN and inf, label range and class balance of ``x`` and ``y``.

    ``x`` must be float32 of shape ``(N, *feature_shape)`` and ``y`` integer labels
    of shape ``(N,)`` in ``[0, num_classes)``. Later checks that need a sound
    shape are skipped when the shape itself is wrong.
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    if not 0.0 <= min_class_ratio <= 1.0:
        raise ConfigError(f"min_class_ratio must be between 0 and 1, got {min_class_ratio}")
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise ConfigError(f"x and y must be numpy arrays, got {type(x).__name__} and {type(y).__name__}")
    expected = tuple(int(d) for d in feature_shape)
    issues: list[Issue] = []
    samples = int(x.shape[0]) if x.ndim else 0

    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        issues.append(
            Issue("shape", f"expected features of shape (N, {', '.join(map(str, expected))}), got {x.shape}")
        )
    if x.dtype != np.float32:
        issues.append(Issue("dtype", f"expected float32 features, got {x.dtype}"))
    if y.ndim != 1:
        issues.append(Issue("shape", f"expected labels of shape (N,), got {y.shape}"))
    elif y.shape[0] != samples:
        issues.append(Issue("shape", f"expected one label per sample ({samples}), got {y.shape[0]} labels"))
    if not np.issubdtype(y.dtype, np.integer):
        issues.append(Issue("dtype", f"expected integer labels, got {y.dtype}"))
    if samples == 0:
        issues.append(Issue("size", "expected at least one sample, got none"))

    shape_ok = not any(i.check == "shape" for i in issues)
    if shape_ok and samples and np.issubdtype(x.dtype, np.floating):
        flat = x.reshape(samples, -1)
        issues += _non_finite(flat, np.isnan(flat), "nan", "NaN")
        issues += _non_finite(flat, np.isinf(flat), "inf", "infinite values")
    counts: dict[int, int] = {}
    if shape_ok and samples and np.issubdtype(y.dtype, np.integer):
        bad = np.flatnonzero((y < 0) | (y >= num_classes))
        if bad.size:
            seen = sorted({int(v) for v in y[bad[:_SHOWN]]})
            issues.append(
                Issue(
                    "label_range",
                    f"expected labels in [0, {num_classes - 1}], got values such as {seen}",
                    rows=tuple(int(r) for r in bad[:_SHOWN]),
                    row_count=int(bad.size),
                )
            )
        valid = y[(y >= 0) & (y < num_classes)]
        bincount = np.bincount(valid.astype(np.int64), minlength=num_classes)
        counts = {c: int(n) for c, n in enumerate(bincount)}
        issues += _balance(counts, min_class_ratio)
    return ValidationReport(split=split, samples=samples, issues=tuple(issues), class_counts=counts)


def require_valid(*reports: ValidationReport) -> None:
    """Raise DataValidationError listing every failed check when any report is not ok."""
    failed = [r for r in reports if not r.ok]
    if failed:
        text = "\n".join(r.describe() for r in failed)
        raise DataValidationError(failed, f"data validation failed; training did not start:\n{text}")


def _non_finite(flat: np.ndarray, mask: np.ndarray, check: str, what: str) -> list[Issue]:
    if not mask.any():
        return []
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    return [
        Issue(
            check,
            f"expected finite features, found {int(mask.sum())} {what}",
            rows=tuple(int(r) for r in rows[:_SHOWN]),
            columns=tuple(int(c) for c in columns[:_SHOWN]),
            row_count=int(rows.size),
            column_count=int(columns.size),
        )
    ]


def _balance(counts: dict[int, int], min_ratio: float) -> list[Issue]:
    missing = [c for c, n in counts.items() if n == 0]
    if missing:
        return [Issue("class_balance", f"expected every class to have samples; classes {missing} have none")]
    largest = max(counts.values())
    rare = {c: n for c, n in counts.items() if n < min_ratio * largest}
    if not rare:
        return []
    shown = ", ".join(f"class {c}: {n}" for c, n in sorted(rare.items()))
    return [
        Issue(
            "class_balance",
            f"expected every class to have at least {min_ratio:.0%} of the largest class's "
            f"{largest} samples; {shown}",
        )
    ]


def _shown(indices: tuple[int, ...], count: int) -> str:
    listed = ", ".join(map(str, indices))
    return f"{listed} (and {count - len(indices)} more)" if count > len(indices) else listed
