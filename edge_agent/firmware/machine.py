"""The firmware state machine: states, the events steps post, and the one table between them.

An install walks DOWNLOADING -> VERIFYING -> (PATCHING) -> WRITING -> REBOOT_PENDING;
the restart lands in TRIAL when the boot-control file says the new slot is on trial,
and TRIAL ends in IDLE either way: committed after a health check, or back on the old
slot after too many failed boots. A delta that does not apply sends the attempt back to
DOWNLOADING for the full image. Pure: no I/O, so the table is tested case by case.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

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

TRANSITIONS: Final[Mapping[tuple[FirmwareState, FirmwareEvent], FirmwareState]] = MappingProxyType(
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
    }
)

# Where the machine waits for something outside an install attempt.
RESTING: Final = frozenset({S.IDLE, S.FAILED, S.REBOOT_PENDING, S.TRIAL})


class IllegalFirmwareTransitionError(RuntimeError):
    """A step posted an event its state has no row for: a bug, not bad input."""


class FirmwareMachine:
    def __init__(
        self,
        state: FirmwareState = FirmwareState.IDLE,
        table: Mapping[tuple[FirmwareState, FirmwareEvent], FirmwareState] = TRANSITIONS,
    ) -> None:
        self._state = state
        self._table = table
        self.history: list[FirmwareState] = [state]

    @property
    def state(self) -> FirmwareState:
        return self._state

    def post(self, event: FirmwareEvent) -> FirmwareState:
        try:
            nxt = self._table[(self._state, event)]
        except KeyError:
            raise IllegalFirmwareTransitionError(
                f"no firmware transition from {self._state.name} on {event.name}; "
                f"allowed: {sorted(e.name for (s, e) in self._table if s is self._state)}"
            ) from None
        self._state = nxt
        self.history.append(nxt)
        return nxt
