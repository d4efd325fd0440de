"""Drift statistics on KLL sketches, checked against scipy on the raw data the sketches summarise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from cloud.drift.stats import (
    PSI_FLOOR,
    class_drift,
    feature_drift,
    ks_c_alpha,
    ks_test,
    load_sketch,
    psi,
    rank_error,
    sketch_js,
    sketch_psi,
    sketch_wasserstein,
    tally_labels,
)
from edgefleet_proto.v1 import sketch_pb2

ALPHA = 0.01
N = 100_000


def sketch(values: np.ndarray, k: int = 200) -> kll_floats_sketch:
    s = kll_floats_sketch(k)
    s.update(np.ascontiguousarray(values, dtype=np.float32))
    return s


def normal(seed: int, shift: float = 0.0, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, n).astype(np.float32)


# --- KS -----------------------------------------------------------------------------------------


def test_the_threshold_is_the_two_sample_bound_plus_both_rank_errors() -> None:
    a, b = sketch(normal(1)), sketch(normal(2))
    result = ks_test(a, b, alpha=ALPHA)
    c = math.sqrt(-math.log(ALPHA / 2) / 2)
    eps = a.normalized_rank_error(False) + b.normalized_rank_error(False)
    assert result.threshold == pytest.approx(c * math.sqrt(2 / N) + eps)
    assert (result.n, result.m) == (N, N)
    # The figure the gates and alerts rely on: about 0.034 at n = m = 100,000, k = 200, alpha = 0.01.
    assert 0.03 < result.threshold < 0.04


@pytest.mark.parametrize("seed", range(5))
def test_ks_decides_as_scipy_does_on_the_raw_data(seed: int) -> None:
    reference = normal(100 + seed)
    for shift, expect_drift in ((0.0, False), (0.2, True)):
        observed = normal(seed, shift)
        exact = ks_2samp(observed, reference)
        result = ks_test(sketch(observed), sketch(reference), alpha=ALPHA)
        assert bool(exact.pvalue < ALPHA) is expect_drift, "the case is meant to be clear-cut"
        assert result.drifted is expect_drift
        eps = rank_error(sketch(observed)) + rank_error(sketch(reference))
        assert abs(result.statistic - exact.statistic) <= eps


@pytest.mark.parametrize("seed", range(3))
def test_a_small_shift_is_detected_at_a_hundred_thousand(seed: int) -> None:
    # A tenth of a sigma sits near the threshold for some draws (bench/drift.py measures its power);
    # 0.15 sigma is clear of it whatever the sketches' random compactions do.
    result = ks_test(sketch(normal(seed, 0.15)), sketch(normal(50 + seed)), alpha=ALPHA)
    assert result.drifted
    assert result.score > 1.0


@pytest.mark.parametrize("seed", range(3))
def test_no_shift_stays_well_below_the_threshold(seed: int) -> None:
    result = ks_test(sketch(normal(seed)), sketch(normal(50 + seed)), alpha=ALPHA)
    assert not result.drifted
    # Measured: D stays under 0.021 over hundreds of draws, against a threshold near 0.034.
    assert result.statistic < 0.75 * result.threshold


def test_below_k_items_the_sketch_is_exact_and_matches_scipy() -> None:
    a, b = normal(1, 0.3, n=150), normal(2, n=180)
    sa, sb = sketch(a), sketch(b)
    assert rank_error(sa) == rank_error(sb) == 0.0
    result = ks_test(sa, sb, alpha=ALPHA)
    exact = ks_2samp(a, b)
    assert result.statistic == pytest.approx(exact.statistic, abs=1e-12)
    assert result.threshold == pytest.approx(ks_c_alpha(ALPHA) * math.sqrt((150 + 180) / (150 * 180)))


def test_empty_sketches_and_bad_alphas_are_refused() -> None:
    with pytest.raises(ValueError, match="observed sketch: expected at least one item, got an empty sketch"):
        ks_test(kll_floats_sketch(200), sketch(normal(1, n=10)), alpha=ALPHA)
    with pytest.raises(ValueError, match="reference sketch: expected at least one item"):
        sketch_psi(sketch(normal(1, n=10)), kll_floats_sketch(200))
    with pytest.raises(ValueError, match=r"alpha: expected a significance level in \(0, 1\), got 1.5"):
        ks_c_alpha(1.5)


def test_load_sketch_names_what_came() -> None:
    s = sketch(normal(3, n=1000))
    assert load_sketch(bytes(s.serialize())).n == 1000
    with pytest.raises(ValueError, match="expected a serialized KLL float sketch, got 3 bytes"):
        load_sketch(b"abc")
    with pytest.raises(TypeError, match="got str"):
        load_sketch("abc")


# --- PSI, JS, Wasserstein -------------------------------------------------------------------------


def raw_decile_shares(observed: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shares in the reference's exact deciles (at-or-below each cut, as the sketch's CDF counts)."""
    cuts = np.quantile(reference, np.arange(1, 10) / 10)
    shares = []
    for values in (observed, reference):
        below = np.searchsorted(np.sort(values), cuts, side="right") / len(values)
        shares.append(np.diff(np.concatenate([[0.0], below, [1.0]])))
    return shares[0], shares[1]


def test_identical_sketches_are_at_distance_zero() -> None:
    s = sketch(normal(7))
    found = feature_drift(s, s, alpha=ALPHA)
    assert found.ks.statistic == 0.0
    assert found.psi == pytest.approx(0.0, abs=1e-12)
    assert found.js == pytest.approx(0.0, abs=1e-6)
    assert found.wasserstein == pytest.approx(0.0, abs=1e-12)


def test_every_distance_grows_with_the_shift() -> None:
    reference = sketch(normal(1))
    found = [
        feature_drift(sketch(normal(2, shift)), reference, alpha=ALPHA) for shift in (0.0, 0.25, 0.5, 1.0)
    ]
    for metric in ("psi", "js", "wasserstein"):
        values = [getattr(f, metric) for f in found]
        assert values == sorted(values), f"{metric} does not grow with the shift: {values}"
    ks = [f.ks.statistic for f in found]
    assert ks == sorted(ks)


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_distances_match_scipy_and_numpy_on_the_raw_data(shift: float) -> None:
    observed, reference = normal(11, shift), normal(12)
    so, sr = sketch(observed), sketch(reference)
    # Tolerances cover the sketches' rank error (about 1.3% each at k = 200) with room: the
    # compactions are random, and measured errors reach 0.05 (Wasserstein), 15% (PSI), 0.02 (JS).
    exact_wasserstein = wasserstein_distance(observed, reference)
    assert sketch_wasserstein(so, sr) == pytest.approx(exact_wasserstein, abs=0.08)
    p, q = raw_decile_shares(observed, reference)
    exact_psi = float(
        np.sum(
            (np.maximum(p, PSI_FLOOR) - np.maximum(q, PSI_FLOOR))
            * np.log(np.maximum(p, PSI_FLOOR) / np.maximum(q, PSI_FLOOR))
        )
    )
    assert sketch_psi(so, sr) == pytest.approx(exact_psi, abs=0.02 + 0.25 * exact_psi)
    assert sketch_js(so, sr) == pytest.approx(float(jensenshannon(p, q, base=2)), abs=0.04)


def test_psi_floors_empty_bins_and_stays_finite() -> None:
    assert psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(
        (1 - 0.5) * math.log(1 / 0.5) + (PSI_FLOOR - 0.5) * math.log(PSI_FLOOR / 0.5)
    )
    # Disjoint features: the reference's deciles hold none of the observed values but the last bin.
    found = sketch_psi(sketch(normal(1, 50.0)), sketch(normal(2)))
    assert math.isfinite(found) and found > 5


def test_a_feature_with_few_distinct_values_still_bins() -> None:
    reference = np.repeat(np.array([0.0, 1.0], dtype=np.float32), 5000)
    observed = np.concatenate([np.zeros(8000, np.float32), np.ones(2000, np.float32)])
    found = feature_drift(sketch(observed), sketch(reference), alpha=ALPHA)
    assert found.ks.drifted
    # Two bins (at or below 0, above 0) hold everything; the sketch counts them within its rank error.
    assert found.psi == pytest.approx(psi([0.8, 0.2], [0.5, 0.5]), abs=0.02)


# --- class distributions ------------------------------------------------------------------------


def test_class_drift_takes_counts_or_shares() -> None:
    assert class_drift([10, 30, 60], [0.1, 0.3, 0.6]).psi == pytest.approx(0.0, abs=1e-12)
    found = class_drift([50, 50], [0.9, 0.1])
    assert found.psi == pytest.approx((0.5 - 0.9) * math.log(0.5 / 0.9) + (0.5 - 0.1) * math.log(0.5 / 0.1))
    assert found.js == pytest.approx(float(jensenshannon([0.5, 0.5], [0.9, 0.1], base=2)))
    # A class one side never saw counts as share 0 there.
    assert class_drift([5, 5], [0.5, 0.5, 0.0]).psi == pytest.approx(0.0, abs=1e-12)
    assert class_drift([5, 5, 10], [0.5, 0.5]).psi > 1


@pytest.mark.parametrize("bad", [[], [0, 0], [1, -1], [float("nan"), 1]])
def test_class_drift_refuses_what_is_not_a_distribution(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="observed distribution: expected finite non-negative counts"):
        class_drift(bad, [0.5, 0.5])


# --- labels ---------------------------------------------------------------------------------------


def test_label_counts_add_up_per_version_into_accuracy_and_recall() -> None:
    def counts(version: str, cells: dict[tuple[int, int], int]) -> sketch_pb2.LabelCounts:
        return sketch_pb2.LabelCounts(
            model_version=version,
            labelled=sum(cells.values()),
            cells=[sketch_pb2.ConfusionCell(actual=a, predicted=p, count=c) for (a, p), c in cells.items()],
        )

    tallies = tally_labels(
        [
            counts("2", {(0, 0): 40, (0, 1): 10}),
            counts("1", {(1, 1): 7}),
            counts("2", {(0, 0): 50, (1, 1): 80, (1, 0): 20}),
        ]
    )
    two = tallies["2"]
    assert (two.labelled, two.total, two.correct) == (200, 200, 170)
    assert two.accuracy == pytest.approx(0.85)
    recall = two.recall()
    assert sorted(recall) == [0, 1]
    assert recall[0][0] == pytest.approx(0.9) and recall[1][0] == pytest.approx(0.8)
    assert (recall[0][1], recall[1][1]) == (100, 100)
    assert tallies["1"].accuracy == 1.0
    assert tally_labels([]) == {}
