"""Merging sketch windows: the merge of the parts' sketches is the sketch of all the data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.telemetry.merge import SketchMergeError, SketchMerger, merge_windows
from edgefleet_proto.v1 import sketch_pb2

K = 64  # small, so a few thousand values put the sketches well into estimation mode
FEATURES = ("mean", "std")


def _kll(values: np.ndarray, k: int = K) -> bytes:
    sketch = kll_floats_sketch(k)
    sketch.update(np.ascontiguousarray(values, dtype=np.float32))
    return bytes(sketch.serialize())


def _window(
    seq: int,
    rows: np.ndarray,
    confidence: np.ndarray,
    predicted: np.ndarray,
    *,
    version: str = "1.0",
    names: Sequence[str] = FEATURES,
    reduction: str = "image_summary",
    start_ms: int = 0,
) -> sketch_pb2.SketchWindow:
    window = sketch_pb2.SketchWindow(
        seq=seq,
        window_start_ms=start_ms,
        window_end_ms=start_ms + 60_000,
        model_name="digits",
        model_version=version,
        samples=len(rows),
        reduction=reduction,
        class_counts=np.bincount(predicted).tolist() if len(predicted) else [],
        confidence_kll=_kll(confidence) if len(confidence) else b"",
    )
    for index, name in enumerate(names):
        column = rows[:, index]
        window.features.add(
            name=name,
            kll_floats=_kll(column),
            count=len(column),
            min=float(column.min()) if len(column) else 0.0,
            max=float(column.max()) if len(column) else 0.0,
        )
    return window


def _assert_same_distribution(merged: bytes, values: np.ndarray) -> None:
    """The merged sketch answers rank queries within its normalized rank error of the exact ranks,
    and of the ranks a sketch of the concatenated data gives (each is within one error of the truth)."""
    sketch = kll_floats_sketch.deserialize(merged)
    whole = kll_floats_sketch.deserialize(_kll(values))
    assert sketch.n == whole.n == len(values)
    assert sketch.get_min_value() == whole.get_min_value()
    assert sketch.get_max_value() == whole.get_max_value()
    eps = sketch.normalized_rank_error(False)
    ordered = np.sort(values.astype(np.float32))
    for q in np.quantile(ordered, np.linspace(0.02, 0.98, 13)):
        exact = np.searchsorted(ordered, q, side="right") / len(ordered)  # get_rank is inclusive
        assert abs(sketch.get_rank(q) - exact) <= eps
        assert abs(sketch.get_rank(q) - whole.get_rank(q)) <= 2 * eps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2_000, 12_000),
    cuts=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=12),
)
def test_merge_of_parts_is_the_sketch_of_the_whole(seed: int, n: int, cuts: list[float]) -> None:
    rng = np.random.default_rng(seed)
    rows = np.column_stack([rng.normal(0.3, 0.1, n), rng.exponential(0.2, n)]).astype(np.float32)
    confidence = rng.beta(5, 2, n).astype(np.float32)
    predicted = rng.integers(0, 10, n)
    bounds = sorted({int(c * n) for c in cuts})
    parts = [
        _window(i, r, c, p, start_ms=1_000 * i)
        for i, (r, c, p) in enumerate(
            zip(
                np.split(rows, bounds), np.split(confidence, bounds), np.split(predicted, bounds), strict=True
            )
        )
    ]

    merged = merge_windows(parts, k=K)

    assert merged.samples == n
    assert [f.name for f in merged.features] == list(FEATURES)
    for index, feature in enumerate(merged.features):
        assert feature.count == n
        _assert_same_distribution(feature.kll_floats, rows[:, index])
    _assert_same_distribution(merged.confidence_kll, confidence)
    assert list(merged.class_counts) == np.bincount(predicted).tolist()
    assert merged.window_start_ms == 0
    assert merged.window_end_ms == 1_000 * (len(parts) - 1) + 60_000
    assert (merged.model_name, merged.model_version, merged.reduction) == ("digits", "1.0", "image_summary")


def test_merging_a_merge_equals_merging_everything_at_once() -> None:
    rng = np.random.default_rng(7)
    windows = [_window(i, rng.random((500, 2)), rng.random(500), rng.integers(0, 3, 500)) for i in range(6)]
    nested = merge_windows([merge_windows(windows[:2]), merge_windows(windows[2:])])
    flat = merge_windows(windows)
    assert nested.samples == flat.samples == 3_000
    assert list(nested.class_counts) == list(flat.class_counts)
    for a, b in zip(nested.features, flat.features, strict=True):
        assert a.count == b.count == 3_000 and (a.min, a.max) == (b.min, b.max)


def test_class_counts_are_padded_to_the_longest_and_labels_summed_per_version() -> None:
    empty = np.empty((0, 2), np.float32)
    a = _window(1, empty, np.empty(0), np.array([0, 1, 1]))
    b = _window(2, empty, np.empty(0), np.array([0, 4]))
    a.labels.add(model_version="1.0", labelled=3).cells.add(actual=1, predicted=1, count=3)
    b.labels.add(model_version="1.0", labelled=2).cells.add(actual=1, predicted=1, count=2)
    old = b.labels.add(model_version="0.9", labelled=1)
    old.cells.add(actual=0, predicted=2, count=1)

    merged = merge_windows([a, b])

    assert list(merged.class_counts) == [2, 2, 0, 0, 1]
    by_version = {labels.model_version: labels for labels in merged.labels}
    assert by_version["1.0"].labelled == 5
    assert [(c.actual, c.predicted, c.count) for c in by_version["1.0"].cells] == [(1, 1, 5)]
    assert by_version["0.9"].labelled == 1
    assert [(c.actual, c.predicted, c.count) for c in by_version["0.9"].cells] == [(0, 2, 1)]
    assert merged.confidence_kll == b""  # nothing was sketched


def test_a_feature_missing_from_some_windows_is_merged_from_those_that_have_it() -> None:
    rng = np.random.default_rng(3)
    old = _window(1, rng.random((100, 2)), rng.random(100), rng.integers(0, 2, 100), version="1.0")
    new = _window(
        2,
        rng.random((50, 3)),
        rng.random(50),
        rng.integers(0, 2, 50),
        version="2.0",
        names=("mean", "std", "lit"),
    )
    idle = _window(3, np.empty((0, 0)), np.empty(0), np.empty(0, np.int64), version="1.0", names=())

    merged = merge_windows([old, idle, new])

    counts = {f.name: f.count for f in merged.features}
    assert counts == {"mean": 150, "std": 150, "lit": 50}
    assert merged.model_version == ""  # windows of two versions: no one version
    assert merged.samples == 150


def test_windows_of_one_version_with_other_feature_names_are_refused_naming_both() -> None:
    rng = np.random.default_rng(4)
    a = _window(11, rng.random((10, 2)), rng.random(10), rng.integers(0, 2, 10))
    b = _window(12, rng.random((10, 2)), rng.random(10), rng.integers(0, 2, 10), names=("mean", "lit"))
    with pytest.raises(SketchMergeError, match=r"version '1.0' disagree on their features") as info:
        merge_windows([a, b])
    assert "window seq 11" in str(info.value) and "window seq 12" in str(info.value)
    assert "['mean', 'std']" in str(info.value) and "['mean', 'lit']" in str(info.value)


def test_windows_of_one_version_with_another_reduction_are_refused_naming_both() -> None:
    rng = np.random.default_rng(5)
    a = _window(21, rng.random((10, 2)), rng.random(10), rng.integers(0, 2, 10))
    b = _window(22, rng.random((10, 2)), rng.random(10), rng.integers(0, 2, 10), reduction="channel_means")
    with pytest.raises(SketchMergeError, match="disagree on the feature reduction") as info:
        merge_windows([a, b])
    assert "'image_summary'" in str(info.value) and "'channel_means'" in str(info.value)
    assert "window seq 21" in str(info.value) and "window seq 22" in str(info.value)


def test_a_corrupt_sketch_is_refused_and_leaves_the_merger_as_it_was() -> None:
    rng = np.random.default_rng(6)
    good = _window(1, rng.random((10, 2)), rng.random(10), rng.integers(0, 2, 10))
    bad = _window(2, rng.random((10, 2)), rng.random(10), rng.integers(0, 2, 10))
    bad.features[1].kll_floats = b"not a sketch"
    merger = SketchMerger(k=K)
    merger.add(good)
    with pytest.raises(
        SketchMergeError, match=r"feature 'std' of window seq 2 .* does not hold a serialized KLL"
    ):
        merger.add(bad)
    result = merger.result()
    assert merger.windows == 1 and result.samples == 10
    assert [f.count for f in result.features] == [10, 10]


def test_nothing_to_merge_is_an_empty_window() -> None:
    assert merge_windows([]) == sketch_pb2.SketchWindow()
    with pytest.raises(ValueError, match=r"k must lie in \[8, 65535\], got 2"):
        merge_windows([], k=2)


def test_absorbing_partial_merges_equals_merging_every_window() -> None:
    rng = np.random.default_rng(8)
    confidences = [rng.random(1_000) for _ in range(6)]
    windows = [
        _window(i, rng.random((1_000, 2)), c, rng.integers(0, 4, 1_000)) for i, c in enumerate(confidences)
    ]
    windows[1].labels.add(model_version="1.0", labelled=2).cells.add(actual=0, predicted=1, count=2)
    parts = [SketchMerger(k=K) for _ in range(3)]
    for index, window in enumerate(windows):
        parts[index % 3].add(window)
    whole = SketchMerger(k=K)
    for part in parts:
        whole.absorb(part)

    absorbed, direct = whole.result(), merge_windows(windows, k=K)
    assert whole.windows == 6
    assert (absorbed.samples, list(absorbed.class_counts)) == (direct.samples, list(direct.class_counts))
    assert (absorbed.window_start_ms, absorbed.window_end_ms) == (
        direct.window_start_ms,
        direct.window_end_ms,
    )
    assert list(absorbed.labels) == list(direct.labels)
    for a, b in zip(absorbed.features, direct.features, strict=True):
        assert (a.name, a.count, a.min, a.max) == (b.name, b.count, b.min, b.max)
    _assert_same_distribution(absorbed.confidence_kll, np.concatenate(confidences))


def test_absorbing_a_merger_whose_features_disagree_is_refused_and_changes_nothing() -> None:
    rng = np.random.default_rng(9)
    ours, theirs = SketchMerger(k=K), SketchMerger(k=K)
    ours.add(_window(1, rng.random((10, 2)), rng.random(10), rng.integers(0, 2, 10)))
    theirs.add(_window(2, rng.random((10, 2)), rng.random(10), rng.integers(0, 2, 10), names=("mean", "lit")))
    with pytest.raises(SketchMergeError, match=r"disagree on their features: window seq 1 .* window seq 2"):
        ours.absorb(theirs)
    assert ours.windows == 1 and ours.result().samples == 10
