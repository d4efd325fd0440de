"""Data validation before training: every check, and reports that name the offending rows and columns."""

from __future__ import annotations

import re

import numpy as np
import pytest

from model_tools.errors import ConfigError, DataValidationError
from model_tools.validate import ValidationReport, require_valid, validate_dataset


def _good(n: int = 40, features: int = 6, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((n, features), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % classes
    return x, y


def _check(report: ValidationReport, name: str) -> list[str]:
    return [i.message for i in report.issues if i.check == name]


def test_clean_data_passes_with_class_counts() -> None:
    x, y = _good()
    report = validate_dataset(x, y, feature_shape=(6,), num_classes=4)
    assert report.ok and report.issues == ()
    assert report.class_counts == {0: 10, 1: 10, 2: 10, 3: 10}
    assert "passed every check" in report.describe()
    require_valid(report)


def test_nan_names_rows_and_columns() -> None:
    x, y = _good()
    x[3, 2] = np.nan
    x[17, 2] = np.nan
    x[17, 5] = np.nan
    report = validate_dataset(x, y, feature_shape=(6,), num_classes=4)
    (issue,) = [i for i in report.issues if i.check == "nan"]
    assert issue.rows == (3, 17) and issue.row_count == 2
    assert issue.columns == (2, 5) and issue.column_count == 2
    assert "found 3 NaN" in issue.message
    with pytest.raises(DataValidationError, match=r"nan: expected finite features.*rows 3, 17; columns 2, 5"):
        require_valid(report)


def test_inf_is_reported_apart_from_nan() -> None:
    x, y = _good()
    x[0, 0] = np.inf
    x[1, 1] = -np.inf
    report = validate_dataset(x, y, feature_shape=(6,), num_classes=4)
    assert [i.check for i in report.issues] == ["inf"]
    assert report.issues[0].rows == (0, 1) and report.issues[0].columns == (0, 1)


def test_many_offending_rows_are_counted_but_listed_in_part() -> None:
    x, y = _good(n=100)
    x[:, 4] = np.nan
    issue = validate_dataset(x, y, feature_shape=(6,), num_classes=4).issues[0]
    assert issue.row_count == 100 and len(issue.rows) == 20
    assert "(and 80 more)" in issue.describe()


@pytest.mark.parametrize(
    ("x_shape", "feature_shape", "message"),
    [
        ((40, 5), (6,), r"expected features of shape \(N, 6\), got \(40, 5\)"),
        ((40, 6, 1), (6,), r"expected features of shape \(N, 6\), got \(40, 6, 1\)"),
        ((40, 1, 8, 8), (1, 8, 8), None),
    ],
)
def test_feature_shape(x_shape: tuple[int, ...], feature_shape: tuple[int, ...], message: str | None) -> None:
    x = np.zeros(x_shape, dtype=np.float32)
    y = np.arange(40, dtype=np.int64) % 4
    report = validate_dataset(x, y, feature_shape=feature_shape, num_classes=4)
    if message is None:
        assert report.ok
    else:
        assert any(re.search(message, m) for m in _check(report, "shape"))


def test_dtypes_and_label_count() -> None:
    x, y = _good()
    report = validate_dataset(x.astype(np.float64), y.astype(np.float32), feature_shape=(6,), num_classes=4)
    assert _check(report, "dtype") == [
        "expected float32 features, got float64",
        "expected integer labels, got float32",
    ]
    report = validate_dataset(x, y[:-1], feature_shape=(6,), num_classes=4)
    assert _check(report, "shape") == ["expected one label per sample (40), got 39 labels"]


def test_labels_out_of_range_name_their_rows() -> None:
    x, y = _good()
    y[5] = 4
    y[9] = -1
    report = validate_dataset(x, y, feature_shape=(6,), num_classes=4)
    (issue,) = [i for i in report.issues if i.check == "label_range"]
    assert issue.rows == (5, 9)
    assert "expected labels in [0, 3], got values such as [-1, 4]" in issue.message


def test_missing_and_rare_classes_fail_balance() -> None:
    x, y = _good()
    y[y == 3] = 0
    assert _check(validate_dataset(x, y, feature_shape=(6,), num_classes=4), "class_balance") == [
        "expected every class to have samples; classes [3] have none"
    ]
    x, y = _good(n=100)
    y[:] = np.r_[np.zeros(45), np.ones(45), np.full(8, 2), np.full(2, 3)].astype(np.int64)
    (message,) = _check(validate_dataset(x, y, feature_shape=(6,), num_classes=4), "class_balance")
    assert "at least 20% of the largest class's 45 samples" in message
    assert "class 2: 8, class 3: 2" in message
    assert validate_dataset(x, y, feature_shape=(6,), num_classes=4, min_class_ratio=0.0).ok


def test_empty_and_bad_arguments() -> None:
    report = validate_dataset(
        np.zeros((0, 6), np.float32), np.zeros(0, np.int64), feature_shape=(6,), num_classes=4
    )
    assert _check(report, "size") == ["expected at least one sample, got none"]
    with pytest.raises(ConfigError, match="num_classes"):
        validate_dataset(*_good(), feature_shape=(6,), num_classes=1)
    with pytest.raises(ConfigError, match="min_class_ratio"):
        validate_dataset(*_good(), feature_shape=(6,), num_classes=4, min_class_ratio=2.0)


def test_report_serialises_for_the_run_record() -> None:
    x, y = _good()
    x[2, 1] = np.nan
    data = validate_dataset(x, y, feature_shape=(6,), num_classes=4, split="val").to_dict()
    assert data["split"] == "val" and data["ok"] is False
    assert data["issues"][0] | {"message": ""} == {
        "check": "nan",
        "message": "",
        "rows": [2],
        "row_count": 1,
        "columns": [1],
        "column_count": 1,
    }
    assert data["class_counts"] == {"0": 10, "1": 10, "2": 10, "3": 10}
