"""The bulk half of drift sketching: what becomes a feature, and one window's sketches.

- :class:`ProfileSpecs` says how a model version's input rows become features: as its
  data profile recorded (``reduction``, ``image_shape``), as the config overrides, or by
  the input's rank when there is no profile.
- :class:`WindowSketch` holds one window's top-1 class counts and KLL sketch of the
  top-1 probability (every prediction), and a uniform sample of its feature rows
  (:class:`BottomK`: at most ``sample_rows``, so a busy device spends a bounded amount
  of CPU per window on feature sketches); at the window's close each feature's sampled
  column goes into its KLL sketch in one update, and :func:`to_proto` turns the lot
  into an ``edgefleet.v1.SketchWindow``.

Everything here runs off the request path (edge_agent.sketching schedules it).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError

from edge_agent.errors import StoreError
from edge_agent.logs import Log
from edge_agent.store import ArtifactStore
from edge_agent.tensors import Array
from edgefleet_proto.v1 import common_pb2, profile_pb2, sketch_pb2, telemetry_pb2
from model_tools.profile import FeatureColumns, profile_reduction, resolve_reduction

__all__ = [
    "SAMPLE_ROWS",
    "BottomK",
    "FeatureSpec",
    "ProfileSpecs",
    "SpecSource",
    "WindowSketch",
    "default_spec",
    "to_proto",
    "top1",
]

log = logging.getLogger(__name__)

# A row whose scores sum to within this of 1 (and has no negatives) is already a probability vector.
_PROB_TOLERANCE = 1e-3
# Feature rows sketched per window, at most: a uniform sample of more rows than that adds little
# to a KLL sketch at k=200 (its rank error is ~1.65%; a sample of 8192 rows adds ~1.5% at 95%), and the cap
# bounds the CPU a busy device spends on feature sketches. Class counts and confidence see every row.
SAMPLE_ROWS = 8192
# ... and at most this much memory for the sample (fewer rows for many features).
_SAMPLE_BYTES = 2 << 20


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How one model's input rows become features (see :func:`model_tools.profile.feature_columns`)."""

    reduction: str
    image_shape: tuple[int, ...] | None = None


# The spec for a model version, given the shape of one input row.
SpecSource = Callable[[common_pb2.ModelRef, tuple[int, ...]], FeatureSpec]


def default_spec(row_shape: tuple[int, ...], override: str | None = None) -> FeatureSpec:
    """Without a profile: the override, else columns for (N, F) inputs and channel means for (N, C, ...)."""
    return FeatureSpec(resolve_reduction(override, image_shape=None, rank=len(row_shape) + 1))


class ProfileSpecs:
    """The feature spec of each model version: its data profile's reduction and image shape (read
    once from the artifact store, where the updater verified and kept it), or the config's override."""

    def __init__(self, store: ArtifactStore, *, override: str | None, logger: Log = log) -> None:
        self._store = store
        self._override = override or None
        self._log = logger
        # By profile digest: the profile's (reduction, image shape), not the profile (its sketches
        # are KiBs a feature, and a simulator runs a thousand agents).
        self._specs: dict[str, FeatureSpec | None] = {}

    def __call__(self, model: common_pb2.ModelRef, row_shape: tuple[int, ...]) -> FeatureSpec:
        spec = self._profile_spec(model)
        if spec is None:
            return default_spec(row_shape, self._override)
        return FeatureSpec(self._override, spec.image_shape) if self._override else spec

    def _profile_spec(self, model: common_pb2.ModelRef) -> FeatureSpec | None:
        if not model.HasField("profile") or not model.profile.sha256:
            return None
        key = model.profile.sha256
        if key not in self._specs:
            profile = self._read(model)
            self._specs[key] = None if profile is None else FeatureSpec(*profile_reduction(profile))
        return self._specs[key]

    def _read(self, model: common_pb2.ModelRef) -> profile_pb2.DataProfile | None:
        pinned = model.profile
        try:
            data = self._store.path_for(pinned.sha256).read_bytes()
        except (OSError, StoreError) as e:
            self._log.warning(
                "data profile of %s:%s not readable (%s); sketching default features",
                model.name,
                model.version,
                e,
            )
            return None
        if hashlib.sha256(data).hexdigest() != pinned.sha256:
            self._log.warning(
                "data profile of %s:%s does not match its sha256; sketching default features",
                model.name,
                model.version,
            )
            return None
        try:
            return profile_pb2.DataProfile.FromString(data)
        except DecodeError as e:
            self._log.warning(
                "data profile of %s:%s does not parse (%s); sketching default features",
                model.name,
                model.version,
                e,
            )
            return None


def top1(scores: Array) -> tuple[Array, Array]:
    """(top-1 class, top-1 probability) of each row of (N, C) scores.

    Rows that are already probability vectors (no negatives, summing to ~1) are taken
    as they are; other rows (logits) go through a softmax first.
    """
    rows = np.asarray(scores, dtype=np.float64)
    classes = rows.argmax(axis=1)
    peak = rows[np.arange(rows.shape[0]), classes]
    is_prob = (rows.min(axis=1) >= 0) & (np.abs(rows.sum(axis=1) - 1.0) <= _PROB_TOLERANCE)
    # The softmax of the largest score: 1 / sum(exp(s - max)).
    softmax_peak = 1.0 / np.exp(rows - peak[:, None]).sum(axis=1)
    return classes, np.where(is_prob, peak, softmax_peak)


class BottomK:
    """A uniform sample without replacement of at most ``size`` rows: the rows of the smallest keys.

    Every row draws a uniform key; the sample keeps the ``size`` smallest. :attr:`threshold`
    only falls, so a row whose key is above it can be turned away before it is even copied
    (the request path does that); the rows kept are a uniform sample of all rows offered.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.threshold = 1.0
        self._keys: list[Array] = []
        self._rows: list[Array] = []
        self._held = 0

    def add(self, keys: Array, rows: Array) -> None:
        """Offer ``rows`` (N, F) with their keys (N,)."""
        keep = keys < self.threshold
        if not keep.all():
            keys, rows = keys[keep], rows[keep]
        if keys.shape[0] == 0:
            return
        self._keys.append(keys)
        self._rows.append(rows)
        self._held += keys.shape[0]
        if self._held >= 2 * self.size:
            self._trim()

    def rows(self) -> Array | None:
        """The sample, (at most size, F); None when nothing was offered."""
        if not self._rows:
            return None
        self._trim()
        return self._rows[0]

    def _trim(self) -> None:
        keys, rows = np.concatenate(self._keys), np.concatenate(self._rows)
        if keys.shape[0] > self.size:
            smallest = np.argpartition(keys, self.size - 1)[: self.size]
            keys, rows = keys[smallest], rows[smallest]
            self.threshold = float(keys.max())
        self._keys, self._rows, self._held = [keys], [rows], keys.shape[0]


@dataclass(slots=True)
class WindowSketch:
    """One window so far: a feature sample, class counts, a KLL sketch of the top-1 probability.

    Touched by bulk work on the event loop only.
    """

    k: int
    sample_rows: int = SAMPLE_ROWS
    samples: int = 0
    reduction: str = ""
    # One sample per set of feature names (a window has one model, so one set, in practice).
    features: dict[tuple[str, ...], BottomK] = field(default_factory=dict)
    class_counts: Array | None = None
    confidence: kll_floats_sketch | None = None

    @property
    def threshold(self) -> float:
        """Keys at or above this cannot enter the feature sample."""
        return min((s.threshold for s in self.features.values()), default=1.0)

    def add_features(self, keys: Array, columns: FeatureColumns) -> None:
        """Offer feature rows, each with its uniform key."""
        sample = self.features.get(columns.names)
        if sample is None:
            size = max(1, min(self.sample_rows, _SAMPLE_BYTES // (4 * max(1, len(columns.names)))))
            sample = self.features[columns.names] = BottomK(size)
        sample.add(keys, columns.values)

    def feature_sketches(self) -> dict[str, kll_floats_sketch]:
        """A KLL sketch per feature of the sample, each fed its whole column at once."""
        out: dict[str, kll_floats_sketch] = {}
        for names, sample in self.features.items():
            rows = sample.rows()
            if rows is None:
                continue
            # A writable C-order copy: datasketches takes neither read-only nor strided arrays.
            columns = np.array(rows.T, dtype=np.float32, order="C")
            for name, column in zip(names, columns, strict=True):
                sketch = out.setdefault(name, kll_floats_sketch(self.k))
                sketch.update(column)
        return out

    def add_outputs(self, scores: Array) -> None:
        finite = np.isfinite(scores).all(axis=1)
        if not finite.all():
            scores = scores[finite]  # NaN or inf answers have no class
            if scores.shape[0] == 0:
                return
        classes, confidence = top1(scores)
        width = scores.shape[1]
        if self.class_counts is None or len(self.class_counts) < width:
            grown = np.zeros(width, np.int64)
            if self.class_counts is not None:
                grown[: len(self.class_counts)] = self.class_counts
            self.class_counts = grown
        self.class_counts[:width] += np.bincount(classes, minlength=width)
        if self.confidence is None:
            self.confidence = kll_floats_sketch(self.k)
        self.confidence.update(confidence.astype(np.float32))


def to_proto(
    meta: telemetry_pb2.TelemetryWindow, acc: WindowSketch, labels: Mapping[str, Counter[tuple[int, int]]]
) -> sketch_pb2.SketchWindow:
    """The SketchWindow of ``acc`` for the telemetry window ``meta``, with the labels it received."""
    out = sketch_pb2.SketchWindow(
        seq=meta.seq,
        window_start_ms=meta.window_start_ms,
        window_end_ms=meta.window_end_ms,
        model_name=meta.model_name,
        model_version=meta.model_version,
        samples=acc.samples,
        reduction=acc.reduction,
    )
    for name, sketch in acc.feature_sketches().items():
        empty = sketch.is_empty()  # every value was NaN: KLL ignores those
        out.features.add(
            name=name,
            kll_floats=bytes(sketch.serialize()),
            count=int(sketch.n),
            min=0.0 if empty else float(sketch.get_min_value()),
            max=0.0 if empty else float(sketch.get_max_value()),
        )
    if acc.class_counts is not None:
        out.class_counts.extend(int(c) for c in acc.class_counts)
    if acc.confidence is not None:
        out.confidence_kll = bytes(acc.confidence.serialize())
    for version, cells in sorted(labels.items()):
        counts = out.labels.add(model_version=version, labelled=sum(cells.values()))
        for (actual, predicted), count in sorted(cells.items()):
            counts.cells.add(actual=actual, predicted=predicted, count=count)
    return out
