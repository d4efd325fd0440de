"""The firmware state machine: states, the events steps post, and the one table between them.

An install walks DOWNLOADING -> VERIFYING -> (PATCHING) -> WRITING -> REBOOT_PENDING;
the restart lands in TRIAL when the boot-control file says the new slot is on trial,
and TRIAL ends in IDLE either way: committed after a health check, or back on the old
slot after too many failed boots. A delta that does not apply sends the attempt back to
DOWNLOADING for the full image. Pure: no I/O, so the table is tested case by case.

The table runs on the agent's one engine, :class:`edge_agent.machine.StateMachine`, the
same that walks model updates (:mod:`edge_agent.update_machine`).
"""

from __future__ import annotations

import enum
from typing import Final

from edge_agent.machine import IllegalTransitionError, StateMachine, Table, freeze_table

__all__ = [
    "TRANSITIONS",
    "FirmwareEvent",
    "FirmwareMachine",
    "FirmwareState",
    "IllegalFirmwareTransitionError",
]


class FirmwareState(enum.Enum):
    IDLE = "idle"  # running a committed slot
    DOWNLOADING = "downloading"  # fetching a delta or full bundle
    VERIFYING = "verifying"  # signed length and hashes, manifest against the signed custom fields
    PATCHING = "patching"  # applying a delta to the running slot's image
    WRITING = "writing"  # image into the inactive slot, then the boot-control switch
    REBOOT_PENDING = "reboot_pending"  # the next start boots the new slot on trial
    TRIAL = "trial"  # booted on the new slot; a health check decides
    FAILED = "failed"  # the attempt failed; the running slot was never touched


class FirmwareEvent(enum.Enum):
    FETCH = "fetch"
    DONE = "done"
    DELTA = "delta"  # a verified delta bundle: patch it
    FULL = "full"  # a verified full bundle: write it
    DELTA_FAILED = "delta_failed"  # fall back to the full image
    FAIL = "fail"
    BOOTED = "booted"  # the agent restarted on the trial slot
    HEALTHY = "healthy"  # commit
    UNHEALTHY = "unhealthy"  # reboot again (the boot count decides how often)
    FELL_BACK = "fell_back"  # past the boot limit: the old slot runs again
    RETRY = "retry"


S, E = FirmwareState, FirmwareEvent

TRANSITIONS: Final[Table[FirmwareState, FirmwareEvent]] = freeze_table(
    FirmwareState,
    FirmwareEvent,
    {
        (S.IDLE, E.FETCH): S.DOWNLOADING,
        (S.IDLE, E.FAIL): S.FAILED,  # refused before any I/O (other hardware, agent too old)
        (S.DOWNLOADING, E.DONE): S.VERIFYING,
        (S.DOWNLOADING, E.FAIL): S.FAILED,
        (S.DOWNLOADING, E.DELTA_FAILED): S.DOWNLOADING,  # the delta did not come: fetch the full image
        (S.VERIFYING, E.DELTA): S.PATCHING,
        (S.VERIFYING, E.FULL): S.WRITING,
        (S.VERIFYING, E.DELTA_FAILED): S.DOWNLOADING,
        (S.VERIFYING, E.FAIL): S.FAILED,
        (S.PATCHING, E.DONE): S.WRITING,
        (S.PATCHING, E.DELTA_FAILED): S.DOWNLOADING,
        (S.WRITING, E.DONE): S.REBOOT_PENDING,
        (S.WRITING, E.FAIL): S.FAILED,
        (S.REBOOT_PENDING, E.BOOTED): S.TRIAL,
        (S.REBOOT_PENDING, E.FELL_BACK): S.IDLE,
        (S.TRIAL, E.HEALTHY): S.IDLE,
        (S.TRIAL, E.UNHEALTHY): S.REBOOT_PENDING,
        (S.TRIAL, E.FELL_BACK): S.IDLE,
        (S.FAILED, E.RETRY): S.IDLE,
    },
)

# Where the machine waits for something outside an install attempt.
RESTING: Final = frozenset({S.IDLE, S.FAILED, S.REBOOT_PENDING, S.TRIAL})


class IllegalFirmwareTransitionError(IllegalTransitionError):
    """A step posted an event its state has no row for: a bug, not bad input."""


class FirmwareMachine(StateMachine[FirmwareState, FirmwareEvent]):
    """The firmware table on the shared engine."""

    label = "firmware"
    error = IllegalFirmwareTransitionError

    def __init__(
        self,
        state: FirmwareState = FirmwareState.IDLE,
        table: Table[FirmwareState, FirmwareEvent] = TRANSITIONS,
    ) -> None:
        super().__init__(state, table)
