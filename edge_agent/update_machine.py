"""The update state machine: states, the events steps post, and the one table between them.

Steps do the work and post an event; only :class:`UpdateMachine` picks the next
state, from :data:`TRANSITIONS`. Adding a step (a trial window, a rollback) is a
new state, its events and their rows here, plus the step in the updater. Pure:
no I/O, so the table can be tested case by case.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["TRANSITIONS", "IllegalTransitionError", "UpdateEvent", "UpdateMachine", "UpdateState"]


class UpdateState(enum.Enum):
    IDLE = "idle"  # serving whatever is active; nothing to do
    DOWNLOADING = "downloading"  # fetching the artifact into a .part file
    VERIFYING = "verifying"  # exact length and sha256, then into the store
    LOADING = "loading"  # opening the verified file in a runtime
    ACTIVATING = "activating"  # state file saved, serving reference swapped
    FAILED = "failed"  # the last attempt failed; the current model keeps serving


class UpdateEvent(enum.Enum):
    """What a step tells the machine (not the Event messages the agent reports to the hub)."""

    FETCH = "fetch"  # a desired artifact is not in the store
    CACHED = "cached"  # a desired artifact is in the store already: verify it again
    DONE = "done"  # the current step succeeded
    FAIL = "fail"  # the current step failed
    CACHE_CORRUPT = "cache_corrupt"  # a stored artifact failed verification: fetch it again
    RETRY = "retry"  # back-off elapsed, or a newer desired state came


S, E = UpdateState, UpdateEvent

TRANSITIONS: Final[Mapping[tuple[UpdateState, UpdateEvent], UpdateState]] = MappingProxyType(
    {
        (S.IDLE, E.FETCH): S.DOWNLOADING,
        (S.IDLE, E.CACHED): S.VERIFYING,
        # Refused before any I/O, e.g. a format no runtime here loads.
        (S.IDLE, E.FAIL): S.FAILED,
        (S.DOWNLOADING, E.DONE): S.VERIFYING,
        (S.DOWNLOADING, E.FAIL): S.FAILED,
        (S.VERIFYING, E.DONE): S.LOADING,
        (S.VERIFYING, E.FAIL): S.FAILED,
        (S.VERIFYING, E.CACHE_CORRUPT): S.DOWNLOADING,
        (S.LOADING, E.DONE): S.ACTIVATING,
        (S.LOADING, E.FAIL): S.FAILED,
        (S.ACTIVATING, E.DONE): S.IDLE,
        (S.ACTIVATING, E.FAIL): S.FAILED,
        (S.FAILED, E.RETRY): S.IDLE,
    }
)

# Where an attempt ends; every other state has a step to run.
RESTING: Final = frozenset({UpdateState.IDLE, UpdateState.FAILED})


class IllegalTransitionError(RuntimeError):
    """A step posted an event its state has no row for: a bug in the updater, not bad input."""


class UpdateMachine:
    """Holds the current state and the chain of states entered."""

    def __init__(
        self,
        state: UpdateState = UpdateState.IDLE,
        table: Mapping[tuple[UpdateState, UpdateEvent], UpdateState] = TRANSITIONS,
    ) -> None:
        self._state = state
        self._table = table
        self.history: list[UpdateState] = [state]

    @property
    def state(self) -> UpdateState:
        return self._state

    def can(self, event: UpdateEvent) -> bool:
        return (self._state, event) in self._table

    def post(self, event: UpdateEvent) -> UpdateState:
        """Move to the state the table names for (state, event) and return it."""
        try:
            nxt = self._table[(self._state, event)]
        except KeyError:
            raise IllegalTransitionError(
                f"no transition from {self._state.name} on {event.name}; "
                f"allowed: {sorted(e.name for (s, e) in self._table if s is self._state)}"
            ) from None
        self._state = nxt
        self.history.append(nxt)
        return nxt
