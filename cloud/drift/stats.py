"""Distances between two distributions held as KLL float sketches, between class distributions,
and accuracy from label counts.

Pure: no database. Each function takes the sketches (or counts) and returns numbers.

A KLL sketch stands for its data by a few hundred retained items, each with a weight (how many
inputs it speaks for). Iterating a sketch yields those ``(item, weight)`` pairs, and the sketch's
CDF at ``x`` is the weight at or below ``x`` over ``n``: the same step function ``get_cdf``
evaluates, computed here once for every point with numpy. Both sketches' CDFs only change at
their own items, so the largest gap between them is found on the union of those items.

The KS decision adds each sketch's rank error to the classic two-sample threshold: the sketched
CDF may sit up to ``eps`` away from the true one on either side, so a gap must clear the sampling
noise plus both sketches' error before it is called drift. ``datasketches``' own ``ks_test``
uses a bound that is far wider at these sizes (it rarely fires on a tenth of a sigma at
n = 100,000), so it is not used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from edgefleet_proto.v1 import sketch_pb2

__all__ = [
    "PSI_BINS",
    "PSI_DRIFT",
    "PSI_FLOOR",
    "ClassDrift",
    "FeatureDrift",
    "KSResult",
    "LabelTally",
    "class_drift",
    "feature_drift",
    "ks_c_alpha",
    "ks_test",
    "load_sketch",
    "psi",
    "rank_error",
    "sketch_js",
    "sketch_psi",
    "sketch_wasserstein",
    "tally_labels",
]

# Deciles of the reference: ten bins, the usual choice for PSI.
PSI_BINS = 10
# Share given to an empty bin, so that PSI stays finite (ln(p/0)) without hiding a real gap.
PSI_FLOOR = 1e-4
# The customary reading of PSI: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
PSI_DRIFT = 0.25


@dataclass(frozen=True)
class KSResult:
    """A two-sample Kolmogorov-Smirnov test on two sketches."""

    statistic: float  # D = max |F1 - F2| over the sketched CDFs
    threshold: float  # c(alpha) * sqrt((n + m) / (n m)) + eps1 + eps2
    drifted: bool  # statistic > threshold
    n: int  # items behind the first (observed) sketch
    m: int  # items behind the second (reference) sketch

    @property
    def score(self) -> float:
        """D over its threshold: >= 1 means drifted, whatever the sample sizes."""
        return self.statistic / self.threshold if self.threshold > 0 else math.inf


@dataclass(frozen=True)
class FeatureDrift:
    """Every distance between one feature's observed and reference sketch."""

    ks: KSResult
    psi: float
    js: float
    wasserstein: float


@dataclass(frozen=True)
class ClassDrift:
    """Distances between two class distributions."""

    psi: float
    js: float


def load_sketch(data: bytes | kll_floats_sketch) -> kll_floats_sketch:
    """A KLL float sketch from its serialized bytes (ValueError naming what came when they are not one)."""
    if isinstance(data, kll_floats_sketch):
        return data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected a serialized KLL float sketch (bytes), got {type(data).__name__}")
    try:
        return kll_floats_sketch.deserialize(bytes(data))
    except (RuntimeError, ValueError, IndexError) as e:
        raise ValueError(
            f"expected a serialized KLL float sketch, got {len(data)} bytes that are not: {e}"
        ) from e


def rank_error(sketch: kll_floats_sketch) -> float:
    """The sketch's normalized rank error (99% confidence); 0 while it still holds every item."""
    if not sketch.is_estimation_mode():
        return 0.0
    return float(sketch.normalized_rank_error(False))


def ks_c_alpha(alpha: float) -> float:
    """c(alpha) of the two-sample KS test: sqrt(-ln(alpha / 2) / 2)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a significance level in (0, 1), got {alpha!r}")
    return math.sqrt(-math.log(alpha / 2) / 2)


def _weighted(sketch: kll_floats_sketch) -> tuple[np.ndarray, np.ndarray]:
    """The retained items, sorted, and their weights."""
    pairs = np.array(list(sketch), dtype=np.float64).reshape(-1, 2)
    order = np.argsort(pairs[:, 0], kind="stable")
    return pairs[order, 0], pairs[order, 1]


def _cdf_at(items: np.ndarray, weights: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Share of the weight at or below each point (the sketch's inclusive CDF)."""
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    shares: np.ndarray = cumulative[np.searchsorted(items, points, side="right")] / cumulative[-1]
    return shares


def _require(sketch: kll_floats_sketch, role: str) -> None:
    if sketch.is_empty():
        raise ValueError(f"{role} sketch: expected at least one item, got an empty sketch")


def ks_test(observed: kll_floats_sketch, reference: kll_floats_sketch, *, alpha: float) -> KSResult:
    """Whether ``observed`` drew from another distribution than ``reference``, at level ``alpha``."""
    _require(observed, "observed")
    _require(reference, "reference")
    a_items, a_weights = _weighted(observed)
    b_items, b_weights = _weighted(reference)
    points = np.union1d(a_items, b_items)
    statistic = float(
        np.max(np.abs(_cdf_at(a_items, a_weights, points) - _cdf_at(b_items, b_weights, points)))
    )
    n, m = int(observed.n), int(reference.n)
    threshold = (
        ks_c_alpha(alpha) * math.sqrt((n + m) / (n * m)) + rank_error(observed) + rank_error(reference)
    )
    return KSResult(statistic=statistic, threshold=threshold, drifted=statistic > threshold, n=n, m=m)


def _bin_shares(
    observed: kll_floats_sketch, reference: kll_floats_sketch, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shares of both sketches in the bins cut at the reference's quantiles (e.g. its deciles)."""
    if bins < 2:
        raise ValueError(f"bins: expected at least 2, got {bins}")
    cuts = np.asarray(reference.get_quantiles([i / bins for i in range(1, bins)]), dtype=np.float64)
    # A feature with few distinct values repeats quantiles: equal cuts would make empty bins.
    edges = np.unique(cuts)
    shares = []
    for sketch in (observed, reference):
        items, weights = _weighted(sketch)
        below = _cdf_at(items, weights, edges)
        shares.append(np.diff(np.concatenate([[0.0], below, [1.0]])))
    return shares[0], shares[1]


def psi(observed: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two share vectors: sum (p - q) ln(p / q), empty bins floored."""
    p, q = _shares(observed, "observed"), _shares(reference, "reference")
    p, q = _pad(p, q)
    p, q = np.maximum(p, PSI_FLOOR), np.maximum(q, PSI_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    # Base 2 bounds the distance to [0, 1]: 0 for the same distribution, 1 for disjoint ones.
    return float(jensenshannon(p, q, base=2))


def sketch_psi(observed: kll_floats_sketch, reference: kll_floats_sketch, *, bins: int = PSI_BINS) -> float:
    """PSI over the reference's quantile bins."""
    _require(observed, "observed")
    _require(reference, "reference")
    return psi(*_bin_shares(observed, reference, bins))


def sketch_js(observed: kll_floats_sketch, reference: kll_floats_sketch, *, bins: int = PSI_BINS) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) over the same bins as :func:`sketch_psi`."""
    _require(observed, "observed")
    _require(reference, "reference")
    return _js(*_bin_shares(observed, reference, bins))


def sketch_wasserstein(observed: kll_floats_sketch, reference: kll_floats_sketch) -> float:
    """Earth mover's distance between the sketched distributions, in the feature's own units.

    Computed on each sketch's retained items with their weights: that is the whole distribution
    the sketch holds (its quantile function at every rank), with no grid to choose.
    """
    _require(observed, "observed")
    _require(reference, "reference")
    a_items, a_weights = _weighted(observed)
    b_items, b_weights = _weighted(reference)
    return float(wasserstein_distance(a_items, b_items, a_weights, b_weights))


def feature_drift(
    observed: kll_floats_sketch, reference: kll_floats_sketch, *, alpha: float, bins: int = PSI_BINS
) -> FeatureDrift:
    """KS, PSI, JS and Wasserstein of one feature."""
    ks = ks_test(observed, reference, alpha=alpha)  # first: it refuses empty sketches
    shares = _bin_shares(observed, reference, bins)
    return FeatureDrift(
        ks=ks, psi=psi(*shares), js=_js(*shares), wasserstein=sketch_wasserstein(observed, reference)
    )


def _shares(values: Sequence[float] | np.ndarray, role: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.isfinite(array).all() or (array < 0).any() or array.sum() <= 0:
        raise ValueError(
            f"{role} distribution: expected finite non-negative counts or shares with a positive sum, "
            f"got {array.size} values summing to {array.sum() if array.size else 0}"
        )
    shares: np.ndarray = array / array.sum()
    return shares


def _pad(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal lengths: a class one side never saw has share 0 there."""
    size = max(p.size, q.size)
    return np.pad(p, (0, size - p.size)), np.pad(q, (0, size - q.size))


def class_drift(
    observed: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray
) -> ClassDrift:
    """PSI and JS between predicted-class distributions (index = class id; counts or shares)."""
    p, q = _pad(_shares(observed, "observed"), _shares(reference, "reference"))
    return ClassDrift(psi=psi(p, q), js=_js(p, q))


@dataclass
class LabelTally:
    """Labelled predictions of one model version: how many, how many right, per actual class."""

    labelled: int = 0  # as the devices counted them
    total: int = 0  # in confusion cells (what accuracy is computed over)
    correct: int = 0
    per_class: dict[int, list[int]] = field(default_factory=dict)  # actual class -> [right, labelled]

    def add(self, labels: sketch_pb2.LabelCounts) -> None:
        self.labelled += int(labels.labelled)
        for cell in labels.cells:
            count = int(cell.count)
            right = count if cell.actual == cell.predicted else 0
            self.total += count
            self.correct += right
            tally = self.per_class.setdefault(int(cell.actual), [0, 0])
            tally[0] += right
            tally[1] += count

    @property
    def accuracy(self) -> float | None:
        """Share of labelled predictions that were right; None without labels."""
        return self.correct / self.total if self.total else None

    def recall(self) -> dict[int, tuple[float, int]]:
        """Per actual class: the share of its labelled predictions that named it, and how many."""
        return {c: (right / n, n) for c, (right, n) in sorted(self.per_class.items()) if n}


def tally_labels(labels: Iterable[sketch_pb2.LabelCounts]) -> dict[str, LabelTally]:
    """Label counts summed per model version (windows may carry labels of several versions)."""
    found: dict[str, LabelTally] = {}
    for item in labels:
        found.setdefault(item.model_version, LabelTally()).add(item)
    return found
