"""The update state machine: states, the events steps post, and the one table between them.

Steps do the work and post an event; only :class:`UpdateMachine` picks the next
state, from :data:`TRANSITIONS`. Pure: no I/O, so the table can be tested case
by case. One machine serves every kind of update: model versions today, and the
signed-channel work plugs its checks into the VERIFYING step (see
``edge_agent.verify``) rather than adding a second machine.

The flow of one update::

    IDLE -> DOWNLOADING -> VERIFYING -> LOADING -> ACTIVATING -> TRIAL -> COMMITTING -> IDLE
                                                                  |
                                                                  +-> ROLLING_BACK -> ROLLED_BACK

Before the swap (ACTIVATING) a failure leaves the serving model alone and rests
in FAILED, to be retried with back-off. From the swap on, anything that goes
wrong rolls back to the model that served before and rests in ROLLED_BACK: that
version is refused until the hub assigns another one. The updater saves the
state it is about to enter before every working state (see ``Updater``); a save
count past the limit posts LOOP ("state looping detected"), which rolls back.

The engine that walks the table is :class:`edge_agent.machine.StateMachine`, shared
with the firmware slots' machine; this module holds the update's states, events and table.
"""

from __future__ import annotations

import enum
from typing import Final

from edge_agent.machine import IllegalTransitionError, StateMachine, Table, freeze_table

__all__ = [
    "RESTING",
    "TRANSITIONS",
    "WORKING",
    "IllegalTransitionError",
    "UpdateEvent",
    "UpdateMachine",
    "UpdateState",
]


class UpdateState(enum.Enum):
    IDLE = "idle"  # serving whatever is committed; nothing to do
    DOWNLOADING = "downloading"  # fetching the artifact (and its data profile) into .part files
    VERIFYING = "verifying"  # the verifiers judge the bytes; then into the content-addressed store
    LOADING = "loading"  # opening the verified file in a runtime beside the serving model (staging)
    ACTIVATING = "activating"  # trial slot saved, then the new version serves or shadows
    TRIAL = "trial"  # judged on live traffic while the previous version stays loaded
    COMMITTING = "committing"  # the trial passed: the new version becomes the committed one
    ROLLING_BACK = "rolling_back"  # back to the committed version at once; the attempt is refused
    FAILED = "failed"  # failed before the swap; the committed model never stopped serving
    ROLLED_BACK = "rolled_back"  # the new version was judged bad and is refused


class UpdateEvent(enum.Enum):
    """What a step tells the machine (not the Event messages the agent reports to the hub)."""

    FETCH = "fetch"  # a desired artifact is not in the store
    CACHED = "cached"  # a desired artifact is in the store already: verify it again
    DONE = "done"  # the current step succeeded
    FAIL = "fail"  # the current step failed
    CACHE_CORRUPT = "cache_corrupt"  # a stored artifact failed verification: fetch it again
    PASS = "pass"  # every trial gate passed  # noqa: S105 (not a password)
    REJECT = "reject"  # a trial gate failed, or a restart found the trial crash-looping
    LOOP = "loop"  # the loop guard tripped: too many saves for one update
    RETRY = "retry"  # back-off elapsed, or a newer desired state came


S, E = UpdateState, UpdateEvent

TRANSITIONS: Final[Table[UpdateState, UpdateEvent]] = freeze_table(
    UpdateState,
    UpdateEvent,
    {
        (S.IDLE, E.FETCH): S.DOWNLOADING,
        (S.IDLE, E.CACHED): S.VERIFYING,
        # Refused before any I/O, e.g. a format no runtime here loads.
        (S.IDLE, E.FAIL): S.FAILED,
        # A restart found a trial that crashed the agent too often, or a rollback cut short.
        (S.IDLE, E.REJECT): S.ROLLING_BACK,
        (S.DOWNLOADING, E.DONE): S.VERIFYING,
        (S.DOWNLOADING, E.FAIL): S.FAILED,
        (S.DOWNLOADING, E.LOOP): S.ROLLING_BACK,
        (S.VERIFYING, E.DONE): S.LOADING,
        (S.VERIFYING, E.FAIL): S.FAILED,
        (S.VERIFYING, E.CACHE_CORRUPT): S.DOWNLOADING,
        (S.VERIFYING, E.LOOP): S.ROLLING_BACK,
        (S.LOADING, E.DONE): S.ACTIVATING,
        (S.LOADING, E.FAIL): S.FAILED,
        (S.LOADING, E.LOOP): S.ROLLING_BACK,
        (S.ACTIVATING, E.DONE): S.TRIAL,
        # Nothing was swapped yet (the trial slot could not be saved): the old model serves.
        (S.ACTIVATING, E.FAIL): S.FAILED,
        (S.ACTIVATING, E.LOOP): S.ROLLING_BACK,
        (S.TRIAL, E.PASS): S.COMMITTING,
        (S.TRIAL, E.REJECT): S.ROLLING_BACK,
        # An unexpected error while judging: the safe side is the version that served before.
        (S.TRIAL, E.FAIL): S.ROLLING_BACK,
        (S.TRIAL, E.LOOP): S.ROLLING_BACK,
        (S.COMMITTING, E.DONE): S.IDLE,
        # The commit could not be saved: a restart would not know the new version is good.
        (S.COMMITTING, E.FAIL): S.ROLLING_BACK,
        # Rolling back ends the attempt whatever happens; the committed model serves either way.
        (S.ROLLING_BACK, E.DONE): S.ROLLED_BACK,
        (S.ROLLING_BACK, E.FAIL): S.ROLLED_BACK,
        (S.FAILED, E.RETRY): S.IDLE,
        (S.ROLLED_BACK, E.RETRY): S.IDLE,
    },
)

# Where an attempt ends; every other state has a step to run.
RESTING: Final = frozenset({UpdateState.IDLE, UpdateState.FAILED, UpdateState.ROLLED_BACK})
WORKING: Final = frozenset(set(UpdateState) - RESTING)
# Working states a restart resumes by starting the attempt over (nothing was swapped yet).
BEFORE_SWAP: Final = frozenset({UpdateState.DOWNLOADING, UpdateState.VERIFYING, UpdateState.LOADING})


class UpdateMachine(StateMachine[UpdateState, UpdateEvent]):
    """The update's table on the shared engine; starts IDLE unless told where a restart resumes."""

    def __init__(
        self,
        state: UpdateState = UpdateState.IDLE,
        table: Table[UpdateState, UpdateEvent] = TRANSITIONS,
    ) -> None:
        super().__init__(state, table)
