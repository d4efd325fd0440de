"""Which stage of a rollout a device belongs to: sticky hash buckets.

Each device gets a bucket in [0, 100) from a hash of the rollout id and its own id:
the same device lands in the same bucket for the same rollout on every replica and
after every restart, with nothing stored and no random state. A stage of 10% takes
the devices whose bucket is below 10, the next stage of 50% adds those below 50,
and so on, so that each stage only adds devices. Hashing the rollout id in too
spreads each rollout differently, so the same devices are not always the canaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cloud.rollouts.plan import Stage

__all__ = ["bucket", "stage_for", "stage_of"]

# Buckets step by 1e-5 of a percent: fine enough for any fleet, and exact to compare.
_STEPS: Final = 10_000_000


def bucket(device_id: str, rollout_id: str) -> float:
    """The device's sticky bucket in [0, 100) for this rollout."""
    digest = hashlib.sha256(f"{rollout_id}/{device_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") % _STEPS) * 100 / _STEPS


def stage_of(bucket: float, cohort_member_flags: Sequence[bool], stages: Sequence[Stage]) -> int | None:
    """The index of the first stage that takes the device, or None if no stage does.

    A stage takes the device when it is in the stage's cohort (``cohort_member_flags[i]``
    says so for stage ``i``; a stage without a cohort takes every eligible device) and its
    bucket is below the stage's cumulative percent (no percent: the whole cohort).
    """
    if len(cohort_member_flags) != len(stages):
        got = len(cohort_member_flags)
        raise ValueError(f"cohort_member_flags: expected one flag per stage ({len(stages)}), got {got}")
    for index, (stage, member) in enumerate(zip(stages, cohort_member_flags, strict=True)):
        in_cohort = stage.cohort is None or member
        percent = 100.0 if stage.percent is None else stage.percent
        if in_cohort and bucket < percent:
            return index
    return None


def stage_for(
    device_id: str, rollout_id: str, cohorts: Collection[str], stages: Sequence[Stage]
) -> int | None:
    """:func:`stage_of` for a device that belongs to the named ``cohorts``."""
    flags = [stage.cohort is not None and stage.cohort in cohorts for stage in stages]
    return stage_of(bucket(device_id, rollout_id), flags, stages)
