"""Judging a series of buckets at an instant, and the state chains that judgements drive over time.

The clock is a parameter: each case lists bucket values (one per 5-minute bucket from T0), the
instants at which the rule is judged, and the chain of alert states those judgements visit.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloud.alerts.condition import Bucket, judge, worst
from cloud.alerts.machine import TRANSITIONS, AlertEvent, AlertState, next_state
from cloud.alerts.spec import Comparison
from tests.unit.cloud.helpers import T0

S, E = AlertState, AlertEvent
SPAN = 300
ABOVE = Comparison.ABOVE


def buckets(*values: float | None, span: int = SPAN) -> list[Bucket]:
    """One bucket per value from T0 on; None leaves a gap."""
    return [Bucket(T0 + timedelta(seconds=i * span), span, v) for i, v in enumerate(values) if v is not None]


def chain(
    series: list[Bucket],
    instants: list[int],
    *,
    for_s: int,
    comparison: Comparison = ABOVE,
    threshold: float = 1,
) -> list[AlertState]:
    """The alert's state after it is judged at each instant (seconds after T0)."""
    state, seen = S.INACTIVE, []
    for at in instants:
        now = T0 + timedelta(seconds=at)
        judged = judge(series, comparison=comparison, threshold=threshold, for_s=for_s, now=now)
        new = next_state(TRANSITIONS, state, judged.event)
        seen.append(new)
        # An ended episode: the next breach opens a new alert.
        state = S.INACTIVE if new is S.RESOLVED else new
    return seen


CHAINS = {
    "drift for 10m fires after two breaching buckets, resolves when it clears": (
        buckets(1.5, 1.6, 1.7, 0.4),
        [10, 310, 599, 600, 900],
        600,
        [S.PENDING, S.PENDING, S.PENDING, S.FIRING, S.RESOLVED],
    ),
    "a breach that clears before the duration ends inactive, never firing": (
        buckets(1.5, 0.2, 0.2),
        [10, 310, 610],
        600,
        [S.PENDING, S.INACTIVE, S.INACTIVE],
    ),
    "a gap restarts the run: it takes the full duration again from the next breach": (
        buckets(1.5, None, 1.5, 1.5, 1.5),
        [10, 450, 620, 1199, 1200],
        600,
        [S.PENDING, S.PENDING, S.PENDING, S.PENDING, S.FIRING],
    ),
    "no duration fires at once": (buckets(2.0, 0.5), [1, 301], 0, [S.FIRING, S.RESOLVED]),
    "devices stop reporting: the firing alert resolves once the data is stale": (
        buckets(2.0, 2.0),
        [300, 900, 1199, 1201],
        300,
        [S.FIRING, S.FIRING, S.FIRING, S.RESOLVED],
    ),
    "resolved and breaching again opens a new episode": (
        buckets(2.0, 0.1, 2.0),
        [1, 301, 601],
        0,
        [S.FIRING, S.RESOLVED, S.FIRING],
    ),
}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_state_chains_over_time(case: str) -> None:
    series, instants, for_s, states = CHAINS[case]
    assert chain(series, instants, for_s=for_s) == states


def test_below_threshold_rules_judge_the_lowest_value() -> None:
    series = buckets(0.95, 0.7, 0.6)
    states = chain(series, [1, 301, 601, 901], for_s=300, comparison=Comparison.BELOW, threshold=0.8)
    assert states == [S.INACTIVE, S.PENDING, S.FIRING, S.FIRING]


def test_held_counts_from_the_run_start_to_now_not_past_the_latest_bucket() -> None:
    series = buckets(1.5, 1.5, 1.5)
    judged = judge(series, comparison=ABOVE, threshold=1, for_s=900, now=T0 + timedelta(seconds=700))
    assert (judged.event, judged.since, judged.held_s, judged.value) == (AlertEvent.BREACH, T0, 700.0, 1.5)
    # The scorer is behind: the run is known only to the end of its latest bucket.
    late = judge(series, comparison=ABOVE, threshold=1, for_s=900, now=T0 + timedelta(seconds=1000))
    assert (late.event, late.held_s) == (AlertEvent.HELD, 900.0)


def test_future_buckets_are_not_judged_and_an_empty_series_has_no_data() -> None:
    series = buckets(0.1, 5.0)
    judged = judge(series, comparison=ABOVE, threshold=1, for_s=0, now=T0 + timedelta(seconds=10))
    assert judged.event is AlertEvent.CLEAR and judged.value == 0.1
    assert judge([], comparison=ABOVE, threshold=1, for_s=0, now=T0).event is AlertEvent.NO_DATA


def test_stale_after_is_a_parameter() -> None:
    series = buckets(2.0)
    at = T0 + timedelta(seconds=400)
    assert judge(series, comparison=ABOVE, threshold=1, for_s=0, now=at).event is AlertEvent.HELD
    assert (
        judge(series, comparison=ABOVE, threshold=1, for_s=0, now=at, stale_after_s=60).event
        is AlertEvent.NO_DATA
    )


def test_worst_takes_the_most_breaching_feature_per_bucket_and_skips_non_finite_values() -> None:
    rows = [
        Bucket(T0, SPAN, 0.3, "f1"),
        Bucket(T0, SPAN, 1.7, "f2"),
        Bucket(T0, SPAN, float("nan"), "f3"),
        Bucket(T0 + timedelta(seconds=SPAN), SPAN, float("inf"), "f1"),
        Bucket(T0 + timedelta(seconds=SPAN), SPAN, 0.2, "f2"),
    ]
    assert [(b.feature, b.value) for b in worst(rows, ABOVE)] == [("f2", 1.7), ("f2", 0.2)]
    assert [(b.feature, b.value) for b in worst(rows, Comparison.BELOW)] == [("f1", 0.3), ("f2", 0.2)]
    assert not Comparison.ABOVE.breached(float("nan"), 0) and not Comparison.BELOW.breached(float("-inf"), 0)
