"""Merging sketch windows: many devices' windows (or many rollups) into one ``SketchWindow``.

A merge is lossless in the sense the sketches allow: counts and labels add up exactly, and
each KLL sketch of the result answers rank queries within its normalized rank error of the
sketch of all the underlying values taken together (KLL sketches are mergeable).

Feature sketches merge by name. A window without a feature (one that sketched no inputs, or
a window of another model version) adds nothing to it. Within one model version every window
that carries features must carry the same names under the same reduction: a version's
features come from its bundle's profile, so a disagreement means corrupt or mislabelled data
and the merge refuses it rather than adding up unrelated distributions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from datasketches import kll_floats_sketch  # type: ignore[import-untyped]

from cloud.errors import HubError
from edgefleet_proto.v1 import profile_pb2, sketch_pb2

__all__ = ["DEFAULT_K", "SketchMergeError", "SketchMerger", "merge_windows"]

# The library's default: ~1.65% normalized rank error (model_tools.profile uses the same).
DEFAULT_K = 200


class SketchMergeError(HubError, ValueError):
    """Windows that cannot be merged: a corrupt sketch, or features that disagree within a version."""


def _load_kll(data: bytes, what: str) -> kll_floats_sketch | None:
    """The sketch in ``data``; None for no bytes (nothing was sketched)."""
    if not data:
        return None
    try:
        return kll_floats_sketch.deserialize(data)
    except (RuntimeError, ValueError, IndexError) as e:
        raise SketchMergeError(f"{what} does not hold a serialized KLL float sketch: {e}") from e


def _describe(window: sketch_pb2.SketchWindow) -> str:
    return f"window seq {window.seq} ({window.window_start_ms}..{window.window_end_ms} ms)"


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the first window of a model version that carried features said about them."""

    names: tuple[str, ...]
    reduction: str
    seen_in: str


@dataclass
class SketchMerger:
    """An incremental merge: ``add`` windows one at a time, then take the ``result``.

    ``merge_windows`` is this in one call; the merger lets a caller keep partial merges (per
    device, per bucket) without serializing them in between.
    """

    k: int = DEFAULT_K
    windows: int = 0
    _start_ms: int | None = None
    _end_ms: int | None = None
    _names: set[str] = field(default_factory=set)
    _versions: set[str] = field(default_factory=set)
    _reductions: set[str] = field(default_factory=set)
    _samples: int = 0
    _features: dict[str, kll_floats_sketch] = field(default_factory=dict)
    _shapes: dict[str, _Shape] = field(default_factory=dict)  # model version -> its feature shape
    _class_counts: list[int] = field(default_factory=list)
    _confidence: kll_floats_sketch | None = None
    _labelled: dict[str, int] = field(default_factory=dict)
    _cells: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 8 <= self.k <= 65535:
            raise ValueError(f"KLL k must lie in [8, 65535], got {self.k}")

    def add(self, window: sketch_pb2.SketchWindow) -> None:
        """Merge one window in; SketchMergeError (and nothing merged) when it cannot be."""
        shape = self._check_shape(window)
        where = _describe(window)
        loaded = [
            (f.name, _load_kll(f.kll_floats, f"feature {f.name!r} of {where}")) for f in window.features
        ]
        confidence = _load_kll(window.confidence_kll, f"confidence sketch of {where}")
        # Everything is checked and decoded before anything is merged: a window that cannot be
        # merged leaves the merger as it was.
        if shape is not None:
            self._shapes[window.model_version] = shape
        self.windows += 1
        self._span(window.window_start_ms, window.window_end_ms)
        self._names.add(window.model_name)
        self._versions.add(window.model_version)
        if window.features:
            self._reductions.add(window.reduction)
        self._samples += window.samples
        for name, sketch in loaded:
            merged = self._feature(name)
            if sketch is not None:
                merged.merge(sketch)
        self._count_classes(window.class_counts)
        if confidence is not None:
            self._merge_confidence(confidence)
        for labels in window.labels:
            cells = (((c.actual, c.predicted), c.count) for c in labels.cells)
            self._count_labels(labels.model_version, labels.labelled, cells)

    def absorb(self, other: SketchMerger) -> None:
        """Merge another merger's windows in (cheaper than merging its ``result()``: nothing is
        serialized); SketchMergeError, and nothing merged, when their features disagree."""
        for version, theirs in other._shapes.items():
            ours = self._shapes.get(version)
            if ours is None:
                continue
            if set(ours.names) != set(theirs.names):
                raise SketchMergeError(
                    f"windows of model version {version!r} disagree on their features: "
                    f"{ours.seen_in} has {list(ours.names)}, {theirs.seen_in} has {list(theirs.names)}"
                )
            if ours.reduction != theirs.reduction:
                raise SketchMergeError(
                    f"windows of model version {version!r} disagree on the feature reduction: "
                    f"{ours.seen_in} has {ours.reduction!r}, {theirs.seen_in} has {theirs.reduction!r}"
                )
        for version, shape in other._shapes.items():
            self._shapes.setdefault(version, shape)
        self.windows += other.windows
        if other._start_ms is not None and other._end_ms is not None:
            self._span(other._start_ms, other._end_ms)
        self._names |= other._names
        self._versions |= other._versions
        self._reductions |= other._reductions
        self._samples += other._samples
        for name, sketch in other._features.items():
            self._feature(name).merge(sketch)
        self._count_classes(other._class_counts)
        if other._confidence is not None:
            self._merge_confidence(other._confidence)
        for version, labelled in other._labelled.items():
            self._count_labels(version, labelled, other._cells[version].items())

    def _span(self, start_ms: int, end_ms: int) -> None:
        self._start_ms = start_ms if self._start_ms is None else min(self._start_ms, start_ms)
        self._end_ms = end_ms if self._end_ms is None else max(self._end_ms, end_ms)

    def _feature(self, name: str) -> kll_floats_sketch:
        merged = self._features.get(name)
        if merged is None:
            merged = self._features[name] = kll_floats_sketch(self.k)
        return merged

    def _count_classes(self, counts: Iterable[int]) -> None:
        for index, count in enumerate(counts):
            if index == len(self._class_counts):
                self._class_counts.append(0)
            self._class_counts[index] += count

    def _merge_confidence(self, sketch: kll_floats_sketch) -> None:
        if self._confidence is None:
            self._confidence = kll_floats_sketch(self.k)
        self._confidence.merge(sketch)

    def _count_labels(
        self, version: str, labelled: int, cells: Iterable[tuple[tuple[int, int], int]]
    ) -> None:
        self._labelled[version] = self._labelled.get(version, 0) + labelled
        ours = self._cells.setdefault(version, {})
        for key, count in cells:
            ours[key] = ours.get(key, 0) + count

    def _check_shape(self, window: sketch_pb2.SketchWindow) -> _Shape | None:
        """The shape to record for the window's version when it is the first to carry features."""
        if not window.features:
            return None
        names = tuple(f.name for f in window.features)
        if len(set(names)) != len(names):
            raise SketchMergeError(
                f"{_describe(window)} of model version {window.model_version!r} names a feature twice: "
                f"expected distinct names, got {list(names)}"
            )
        shape = self._shapes.get(window.model_version)
        if shape is None:
            return _Shape(names, window.reduction, _describe(window))
        if set(names) != set(shape.names):
            raise SketchMergeError(
                f"windows of model version {window.model_version!r} disagree on their features: "
                f"{shape.seen_in} has {list(shape.names)}, {_describe(window)} has {list(names)}"
            )
        if window.reduction != shape.reduction:
            raise SketchMergeError(
                f"windows of model version {window.model_version!r} disagree on the feature reduction: "
                f"{shape.seen_in} has {shape.reduction!r}, {_describe(window)} has {window.reduction!r}"
            )
        return None

    def result(self) -> sketch_pb2.SketchWindow:
        """The merge of every window added so far (an empty SketchWindow when none was).

        ``seq`` is 0: a merge is no one window. ``model_name``, ``model_version`` and
        ``reduction`` are the windows' common value, or "" when they differ.
        """
        out = sketch_pb2.SketchWindow(
            window_start_ms=self._start_ms or 0,
            window_end_ms=self._end_ms or 0,
            model_name=_common(self._names),
            model_version=_common(self._versions),
            samples=self._samples,
            reduction=_common(self._reductions),
            class_counts=self._class_counts,
        )
        for name, sketch in self._features.items():
            out.features.append(_feature(name, sketch))
        if self._confidence is not None:
            out.confidence_kll = bytes(self._confidence.serialize())
        for version, labelled in self._labelled.items():
            cells = [
                sketch_pb2.ConfusionCell(actual=a, predicted=p, count=c)
                for (a, p), c in sorted(self._cells[version].items())
            ]
            out.labels.append(sketch_pb2.LabelCounts(model_version=version, labelled=labelled, cells=cells))
        return out


def _common(values: set[str]) -> str:
    return next(iter(values)) if len(values) == 1 else ""


def _feature(name: str, sketch: kll_floats_sketch) -> profile_pb2.FeatureSketch:
    empty = sketch.is_empty()
    return profile_pb2.FeatureSketch(
        name=name,
        kll_floats=bytes(sketch.serialize()),
        count=int(sketch.n),
        min=0.0 if empty else float(sketch.get_min_value()),
        max=0.0 if empty else float(sketch.get_max_value()),
    )


def merge_windows(
    windows: Iterable[sketch_pb2.SketchWindow], *, k: int = DEFAULT_K
) -> sketch_pb2.SketchWindow:
    """One SketchWindow holding every window's sketches, counts and labels (see ``SketchMerger.result``).

    Feature sketches keep the order in which their names first appear. Raises SketchMergeError
    for a sketch that does not deserialize, and for two windows of one model version whose
    feature names or reductions differ (the message names both windows).
    """
    merger = SketchMerger(k=k)
    for window in windows:
        merger.add(window)
    return merger.result()
