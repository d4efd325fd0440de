"""The training run state machine: states, the events the worker and operators post, and the one table.

The pipeline and the operator's actions do the work and post an event; only :func:`next_state`
picks the next state, from :data:`TRANSITIONS`. Pure: no I/O, so the table is tested case by
case, and a hub that restarts reads a run's state from its row.

The flow of one run::

    QUEUED -> RUNNING -> SUCCEEDED              the challenger did not beat the champion: kept out
                |    \\-> FAILED                 a step failed; ``error`` says why
                |
                +-> AWAITING_APPROVAL -> APPROVED -> ROLLED_OUT     (policy "approval")
                |          \\-> REJECTED
                +-> APPROVED -> ROLLED_OUT                          (policy "canary")
                       \\-> FAILED                 the canary rollout could not be created

SUCCEEDED, FAILED, ROLLED_OUT and REJECTED are the ends. A challenger that was registered stays
registered whatever the run's end: an operator may still roll it out by hand.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from cloud.errors import ConflictError

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "TRANSITIONS",
    "IllegalRunTransition",
    "RunEvent",
    "RunState",
    "allowed_events",
    "next_state",
]


class RunState(enum.StrEnum):
    QUEUED = "queued"  # a trigger fired; waiting for the fleet's worker
    RUNNING = "running"  # train -> optimize -> evaluate -> register, on one hub replica's worker
    SUCCEEDED = "succeeded"  # finished; the challenger did not beat the champion, so nothing rolls out
    FAILED = "failed"  # a step failed (``error`` says which and why)
    AWAITING_APPROVAL = "awaiting_approval"  # the challenger won; an operator approves or rejects it
    APPROVED = "approved"  # approved (by an operator or the canary policy); its rollout is being created
    ROLLED_OUT = "rolled_out"  # a rollout of the challenger was created (``rollout_id``)
    REJECTED = "rejected"  # an operator turned the challenger down, or cancelled the queued run


class RunEvent(enum.StrEnum):
    START = "start"  # a worker claimed the queued run
    FAIL = "fail"  # a step raised, or the replica running it stopped answering
    KEEP_CHAMPION = "keep_champion"  # the challenger neither beat nor matched the champion
    AWAIT_APPROVAL = "await_approval"  # the challenger won and the policy is "approval"
    PROMOTE = "promote"  # the challenger won and the policy is "canary": approved by the policy
    APPROVE = "approve"  # an operator approved the challenger
    REJECT = "reject"  # an operator rejected the challenger, or cancelled the run before it started
    ROLLOUT_STARTED = "rollout_started"  # the challenger's rollout was created
    ROLLOUT_FAILED = "rollout_failed"  # the rollout engine refused the challenger's rollout


S, E = RunState, RunEvent

TRANSITIONS: Final[Mapping[tuple[RunState, RunEvent], RunState]] = MappingProxyType(
    {
        (S.QUEUED, E.START): S.RUNNING,
        # An operator may cancel a run that has not started; nothing was trained yet.
        (S.QUEUED, E.REJECT): S.REJECTED,
        (S.RUNNING, E.FAIL): S.FAILED,
        (S.RUNNING, E.KEEP_CHAMPION): S.SUCCEEDED,
        (S.RUNNING, E.AWAIT_APPROVAL): S.AWAITING_APPROVAL,
        (S.RUNNING, E.PROMOTE): S.APPROVED,
        (S.AWAITING_APPROVAL, E.APPROVE): S.APPROVED,
        (S.AWAITING_APPROVAL, E.REJECT): S.REJECTED,
        (S.APPROVED, E.ROLLOUT_STARTED): S.ROLLED_OUT,
        # Only the canary policy gets here: an operator's approval that the rollout engine refuses
        # (devices held by another rollout) is not stored, so the run still awaits approval.
        (S.APPROVED, E.ROLLOUT_FAILED): S.FAILED,
    }
)

# Where a run ends: no event leaves these.
TERMINAL: Final = frozenset({S.SUCCEEDED, S.FAILED, S.ROLLED_OUT, S.REJECTED})
# A model has at most one run in these states at a time (triggers and manual starts are deduplicated).
ACTIVE: Final = frozenset({S.QUEUED, S.RUNNING})


class IllegalRunTransition(ConflictError):  # noqa: N818 (named like the rollout machine's)
    """An event that the run's current state has no row for (e.g. approving a run still training)."""

    def __init__(self, state: RunState, event: RunEvent) -> None:
        self.state = state
        self.event = event
        self.allowed = allowed_events(state)
        allowed = ", ".join(self.allowed) if self.allowed else "none (the run has ended)"
        super().__init__(f"a training run that is {state} cannot {event}; expected one of: {allowed}")


def allowed_events(state: RunState | str) -> list[RunEvent]:
    """The events the table accepts in ``state``, in the order the enum declares them."""
    state = RunState(state)
    return [event for event in RunEvent if (state, event) in TRANSITIONS]


def next_state(state: RunState | str, event: RunEvent | str) -> RunState:
    """The state the table names for (``state``, ``event``); stored strings are accepted too.

    Raises:
        IllegalRunTransition: the table has no row for the pair.
        ValueError: ``state`` or ``event`` is not a known name.
    """
    state, event = RunState(state), RunEvent(event)
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalRunTransition(state, event) from None
