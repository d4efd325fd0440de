"""The rollout state machine: states, the events the engine and operators post, and the one table.

The engine and the operator commands do the work and post an event; only
:func:`next_state` picks the next state, from :data:`TRANSITIONS`. Pure: no I/O,
so the table can be tested case by case, and a hub that restarts resumes a
rollout from the state stored in its row.

The flow of one rollout::

    DRAFT -> RUNNING -> BAKING -> PROMOTING -> RUNNING (next stage) ... -> PROMOTING -> COMPLETED
                          |  \\                    ^
                          |   +-> WAITING_APPROVAL +  (approve)
                          +-> PAUSED / ABORTING   (a gate failed, per the plan's on_failure)

    ABORTING -> ROLLED_BACK   once every offered device runs its previous version again
    any ACTIVE state -> SUPERSEDED   a newer rollout took its devices over

RUNNING offers the current stage's devices (rate-limited, inside the maintenance
window); BAKING waits for the bake time and the gates; PROMOTING moves on to the
next stage. A COMPLETED rollout no longer holds its devices but can still be
rolled back; ROLLED_BACK and SUPERSEDED are the ends.
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
    "IllegalTransition",
    "RolloutEvent",
    "RolloutState",
    "allowed_events",
    "next_state",
]


class RolloutState(enum.StrEnum):
    DRAFT = "draft"  # created, nothing offered yet
    RUNNING = "running"  # offering the current stage's devices
    BAKING = "baking"  # every device of the stage offered; waiting for bake time and gates
    WAITING_APPROVAL = "waiting_approval"  # baked and passed; the plan wants an operator to approve
    PAUSED = "paused"  # held by an operator or a failed gate; devices keep what they run
    PROMOTING = "promoting"  # moving on to the next stage (or completing after the last)
    COMPLETED = "completed"  # every stage done; can still be rolled back
    ABORTING = "aborting"  # giving every offered device its previous version back
    ROLLED_BACK = "rolled_back"  # every offered device runs its previous version again
    SUPERSEDED = "superseded"  # a newer rollout took its devices over


class RolloutEvent(enum.StrEnum):
    START = "start"  # the engine picked up a new rollout
    STAGE_OFFERED = "stage_offered"  # every device of the current stage was offered the target
    BAKED = "baked"  # bake time passed and the gates passed
    BAKED_NEEDS_APPROVAL = "baked_needs_approval"  # the same, on a stage whose plan wants approval
    APPROVE = "approve"  # an operator approved the stage
    PROMOTED = "promoted"  # the next stage became current
    PROMOTED_LAST = "promoted_last"  # the last stage was promoted: nothing left to offer
    GATES_FAILED_PAUSE = "gates_failed_pause"  # a gate failed and the plan says on_failure: pause
    GATES_FAILED_ABORT = "gates_failed_abort"  # a gate failed and the plan says on_failure: abort
    PAUSE = "pause"  # an operator paused
    RESUME = "resume"  # an operator resumed
    ABORT = "abort"  # an operator aborted
    ROLLED_BACK = "rolled_back"  # every offered device was given its previous version back
    ROLLBACK = "rollback"  # an operator asked to undo a paused or completed rollout
    SUPERSEDE = "supersede"  # a newer rollout of the same target kind took the devices over


S, E = RolloutState, RolloutEvent

TRANSITIONS: Final[Mapping[tuple[RolloutState, RolloutEvent], RolloutState]] = MappingProxyType(
    {
        (S.DRAFT, E.START): S.RUNNING,
        # Nothing was offered yet, so aborting ends at once on the engine's next tick.
        (S.DRAFT, E.ABORT): S.ABORTING,
        (S.DRAFT, E.SUPERSEDE): S.SUPERSEDED,
        (S.RUNNING, E.STAGE_OFFERED): S.BAKING,
        # Devices offered first may already fail while the rest of the stage is still being offered.
        (S.RUNNING, E.GATES_FAILED_PAUSE): S.PAUSED,
        (S.RUNNING, E.GATES_FAILED_ABORT): S.ABORTING,
        (S.RUNNING, E.PAUSE): S.PAUSED,
        (S.RUNNING, E.ABORT): S.ABORTING,
        (S.RUNNING, E.SUPERSEDE): S.SUPERSEDED,
        (S.BAKING, E.BAKED): S.PROMOTING,
        (S.BAKING, E.BAKED_NEEDS_APPROVAL): S.WAITING_APPROVAL,
        (S.BAKING, E.GATES_FAILED_PAUSE): S.PAUSED,
        (S.BAKING, E.GATES_FAILED_ABORT): S.ABORTING,
        (S.BAKING, E.PAUSE): S.PAUSED,
        (S.BAKING, E.ABORT): S.ABORTING,
        (S.BAKING, E.SUPERSEDE): S.SUPERSEDED,
        (S.WAITING_APPROVAL, E.APPROVE): S.PROMOTING,
        # The stage's devices keep serving the target while nobody approves: gates still watch them.
        (S.WAITING_APPROVAL, E.GATES_FAILED_PAUSE): S.PAUSED,
        (S.WAITING_APPROVAL, E.GATES_FAILED_ABORT): S.ABORTING,
        (S.WAITING_APPROVAL, E.PAUSE): S.PAUSED,
        (S.WAITING_APPROVAL, E.ABORT): S.ABORTING,
        (S.WAITING_APPROVAL, E.SUPERSEDE): S.SUPERSEDED,
        (S.PROMOTING, E.PROMOTED): S.RUNNING,
        (S.PROMOTING, E.PROMOTED_LAST): S.COMPLETED,
        (S.PROMOTING, E.PAUSE): S.PAUSED,
        (S.PROMOTING, E.ABORT): S.ABORTING,
        (S.PROMOTING, E.SUPERSEDE): S.SUPERSEDED,
        # Resuming offers again from where the stage stopped; a stage fully offered re-posts
        # STAGE_OFFERED at once and bakes again, so a paused failure is judged afresh.
        (S.PAUSED, E.RESUME): S.RUNNING,
        (S.PAUSED, E.ABORT): S.ABORTING,
        # The operator's word for "undo this": the same as aborting a paused rollout.
        (S.PAUSED, E.ROLLBACK): S.ABORTING,
        (S.PAUSED, E.SUPERSEDE): S.SUPERSEDED,
        # A completed rollout holds no devices, yet its previous versions are known: undo it all.
        (S.COMPLETED, E.ROLLBACK): S.ABORTING,
        # A newer rollout replaced the target on its devices: rolling this one back would undo that one.
        (S.COMPLETED, E.SUPERSEDE): S.SUPERSEDED,
        (S.ABORTING, E.ROLLED_BACK): S.ROLLED_BACK,
        # A repeated abort (a retried request) changes nothing: the rollback is already under way.
        (S.ABORTING, E.ABORT): S.ABORTING,
        # The newer rollout assigns the devices itself; restoring them here would race it.
        (S.ABORTING, E.SUPERSEDE): S.SUPERSEDED,
    }
)

# Where a rollout ends: no event leaves these.
TERMINAL: Final = frozenset({RolloutState.ROLLED_BACK, RolloutState.SUPERSEDED})
# States in which the rollout holds its devices: no other rollout of the same target kind may take them.
ACTIVE: Final = frozenset(set(RolloutState) - TERMINAL - {RolloutState.COMPLETED})


class IllegalTransition(ConflictError):  # noqa: N818 (the contract's name; it is an error)
    """An event that the rollout's current state has no row for (e.g. approving a running rollout)."""

    def __init__(self, state: RolloutState, event: RolloutEvent) -> None:
        self.state = state
        self.event = event
        self.allowed = allowed_events(state)
        allowed = ", ".join(self.allowed) if self.allowed else "none (the rollout has ended)"
        super().__init__(f"a rollout that is {state} cannot {event}; expected one of: {allowed}")


def allowed_events(state: RolloutState | str) -> list[RolloutEvent]:
    """The events the table accepts in ``state``, in the order the enum declares them."""
    state = RolloutState(state)
    return [event for event in RolloutEvent if (state, event) in TRANSITIONS]


def next_state(state: RolloutState | str, event: RolloutEvent | str) -> RolloutState:
    """The state the table names for (``state``, ``event``); stored strings are accepted too.

    Raises:
        IllegalTransition: the table has no row for the pair.
        ValueError: ``state`` or ``event`` is not a known name.
    """
    state, event = RolloutState(state), RolloutEvent(event)
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None
