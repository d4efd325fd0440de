"""Sticky buckets: which stage takes a device, the same on every replica and after every restart."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from cloud.rollouts.plan import Stage
from cloud.rollouts.selection import bucket, stage_for, stage_of

DEVICES = [f"dev-{n:05d}" for n in range(10_000)]


def stages(*specs: tuple[str | None, float | None]) -> list[Stage]:
    return [Stage(name=f"s{i}", cohort=cohort, percent=percent) for i, (cohort, percent) in enumerate(specs)]


def test_buckets_lie_in_0_to_100_and_are_spread_evenly() -> None:
    values = [bucket(device, "r1") for device in DEVICES]
    assert all(0 <= value < 100 for value in values)
    deciles = Counter(int(value // 10) for value in values)
    assert sorted(deciles) == list(range(10))
    assert all(900 <= count <= 1100 for count in deciles.values()), deciles


@pytest.mark.parametrize("percent", [10.0, 50.0, 100.0])
def test_a_stage_takes_its_percent_of_the_devices_within_two_points(percent: float) -> None:
    plan = stages((None, percent))
    taken = sum(stage_of(bucket(device, "r1"), [False], plan) == 0 for device in DEVICES)
    assert abs(100 * taken / len(DEVICES) - percent) <= 2, taken


def test_cumulative_stages_split_the_fleet_10_40_50() -> None:
    plan = stages((None, 10), (None, 50), (None, 100))
    counts = Counter(stage_of(bucket(device, "r1"), [False] * 3, plan) for device in DEVICES)
    assert set(counts) == {0, 1, 2}
    for index, share in enumerate([10, 40, 50]):
        assert abs(100 * counts[index] / len(DEVICES) - share) <= 2, counts


def test_a_device_keeps_its_stage_for_the_same_rollout_even_in_a_fresh_process() -> None:
    plan = stages((None, 10), (None, 50), (None, 100))
    here = [stage_for(device, "r1", (), plan) for device in DEVICES[:200]]
    assert here == [stage_for(device, "r1", (), plan) for device in DEVICES[:200]]
    # A new interpreter (another replica, a restarted hub) computes the same buckets: nothing random is kept.
    script = (
        "from cloud.rollouts.selection import bucket\n"
        "print(','.join(repr(bucket(f'dev-{n:05d}', 'r1')) for n in range(200)))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert [float(value) for value in out.strip().split(",")] == [
        bucket(device, "r1") for device in DEVICES[:200]
    ]


def test_different_rollouts_pick_different_devices_first() -> None:
    plan = stages((None, 10))
    first = {d for d in DEVICES if stage_of(bucket(d, "rollout-a"), [False], plan) == 0}
    second = {d for d in DEVICES if stage_of(bucket(d, "rollout-b"), [False], plan) == 0}
    # Independent 10% picks share about 1% of the fleet; the same pick would share 10%.
    assert len(first & second) < 0.03 * len(DEVICES), len(first & second)


def test_a_cohort_stage_takes_only_members_and_later_stages_take_the_rest() -> None:
    plan = stages(("canary", 100), (None, 50), (None, 100))
    members = set(DEVICES[:500])
    placed = {d: stage_for(d, "r1", {"canary"} if d in members else set(), plan) for d in DEVICES}
    assert {d for d, s in placed.items() if s == 0} == members
    assert all(s in (1, 2) for d, s in placed.items() if d not in members)


def test_a_percent_of_a_cohort_takes_that_share_of_its_members_only() -> None:
    plan = stages(("canary", 10), (None, 100))
    members = set(DEVICES[:5000])
    first = [d for d in DEVICES if stage_for(d, "r1", {"canary"} if d in members else set(), plan) == 0]
    assert set(first) <= members
    assert abs(100 * len(first) / len(members) - 10) <= 2


def test_a_device_no_stage_takes_is_left_out() -> None:
    plan = stages(("canary", 100), (None, 20))
    out = [d for d in DEVICES if stage_for(d, "r1", (), plan) is None]
    assert abs(100 * len(out) / len(DEVICES) - 80) <= 2
    # A device in the bucket below 20 is taken by the second stage even though the first refused it.
    assert stage_of(5.0, [False, False], plan) == 1
    assert stage_of(5.0, [True, False], plan) == 0
    assert stage_of(25.0, [False, False], plan) is None


def test_the_flags_must_match_the_stages() -> None:
    with pytest.raises(ValueError, match=r"expected one flag per stage \(2\), got 1"):
        stage_of(5.0, [True], stages(("canary", 100), (None, 20)))
