"""The rollout state machine's table, case by case: a chain of events and the states it visits."""

from __future__ import annotations

import itertools

import pytest

from cloud.errors import ConflictError
from cloud.rollouts.machine import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    RolloutEvent,
    RolloutState,
    allowed_events,
    next_state,
)

S, E = RolloutState, RolloutEvent

# One stage offered, baked and promoted: RUNNING -> BAKING -> PROMOTING.
STAGE = ([E.STAGE_OFFERED, E.BAKED], [S.BAKING, S.PROMOTING])


def chain(
    *parts: tuple[list[RolloutEvent], list[RolloutState]],
) -> tuple[list[RolloutEvent], list[RolloutState]]:
    events: list[RolloutEvent] = []
    states: list[RolloutState] = []
    for part_events, part_states in parts:
        events += part_events
        states += part_states
    return events, states


START = ([E.START], [S.RUNNING])
PROMOTE = ([E.PROMOTED], [S.RUNNING])
FINISH = ([E.PROMOTED_LAST], [S.COMPLETED])
RESTORE = ([E.ROLLED_BACK], [S.ROLLED_BACK])

CASES = {
    "three stages, each baked and promoted": chain(START, STAGE, PROMOTE, STAGE, PROMOTE, STAGE, FINISH),
    "the second stage waits for an operator's approval": chain(
        START,
        STAGE,
        PROMOTE,
        ([E.STAGE_OFFERED, E.BAKED_NEEDS_APPROVAL, E.APPROVE], [S.BAKING, S.WAITING_APPROVAL, S.PROMOTING]),
        PROMOTE,
        STAGE,
        FINISH,
    ),
    "a gate fails while baking, the plan pauses, the operator resumes": chain(
        START,
        ([E.STAGE_OFFERED, E.GATES_FAILED_PAUSE, E.RESUME], [S.BAKING, S.PAUSED, S.RUNNING]),
        STAGE,
        FINISH,
    ),
    "a gate fails while baking and the plan aborts": chain(
        START, STAGE, PROMOTE, ([E.STAGE_OFFERED, E.GATES_FAILED_ABORT], [S.BAKING, S.ABORTING]), RESTORE
    ),
    "a gate fails while the stage is still being offered": chain(
        START, ([E.GATES_FAILED_ABORT], [S.ABORTING]), RESTORE
    ),
    "a gate fails while waiting for approval": chain(
        START,
        (
            [E.STAGE_OFFERED, E.BAKED_NEEDS_APPROVAL, E.GATES_FAILED_PAUSE],
            [S.BAKING, S.WAITING_APPROVAL, S.PAUSED],
        ),
    ),
    "a paused failure is rolled back by the operator": chain(
        START, ([E.GATES_FAILED_PAUSE, E.ROLLBACK], [S.PAUSED, S.ABORTING]), RESTORE
    ),
    "the operator pauses in every working state and resumes": chain(
        START,
        (
            [E.PAUSE, E.RESUME, E.STAGE_OFFERED, E.PAUSE, E.RESUME],
            [S.PAUSED, S.RUNNING, S.BAKING, S.PAUSED, S.RUNNING],
        ),
        ([E.STAGE_OFFERED, E.BAKED_NEEDS_APPROVAL, E.PAUSE], [S.BAKING, S.WAITING_APPROVAL, S.PAUSED]),
        ([E.RESUME], [S.RUNNING]),
        STAGE,
        ([E.PAUSE, E.RESUME], [S.PAUSED, S.RUNNING]),
    ),
    "the operator aborts a paused rollout": chain(
        START, ([E.PAUSE, E.ABORT], [S.PAUSED, S.ABORTING]), RESTORE
    ),
    "the operator aborts while it bakes, and again": chain(
        START, ([E.STAGE_OFFERED, E.ABORT, E.ABORT], [S.BAKING, S.ABORTING, S.ABORTING]), RESTORE
    ),
    "a draft aborted before it started": (
        [E.ABORT, E.ROLLED_BACK],
        [S.ABORTING, S.ROLLED_BACK],
    ),
    "a completed rollout is rolled back": chain(START, STAGE, FINISH, ([E.ROLLBACK], [S.ABORTING]), RESTORE),
    "a newer rollout supersedes one that is baking": chain(
        START, ([E.STAGE_OFFERED, E.SUPERSEDE], [S.BAKING, S.SUPERSEDED])
    ),
    "a newer rollout supersedes one that is rolling back": chain(
        START, ([E.ABORT, E.SUPERSEDE], [S.ABORTING, S.SUPERSEDED])
    ),
    "a newer rollout supersedes a completed one, which can no longer be rolled back": chain(
        START, STAGE, FINISH, ([E.SUPERSEDE], [S.SUPERSEDED])
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_chain_of_events_visits_the_expected_states(case: str) -> None:
    events, states = CASES[case]
    state = S.DRAFT
    visited = []
    for event in events:
        state = next_state(state, event)
        visited.append(state)
    assert visited == states


LEGAL = set(TRANSITIONS)
ILLEGAL = [pair for pair in itertools.product(RolloutState, RolloutEvent) if pair not in LEGAL]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=[f"{s}-{e}" for s, e in ILLEGAL])
def test_every_pair_without_a_row_is_refused_naming_the_state_and_what_is_allowed(
    state: RolloutState, event: RolloutEvent
) -> None:
    with pytest.raises(IllegalTransition) as caught:
        next_state(state, event)
    error = caught.value
    assert isinstance(error, ConflictError)  # the API answers 409
    assert (error.state, error.event) == (state, event)
    assert error.allowed == [e for e in RolloutEvent if (state, e) in LEGAL]
    message = str(error)
    assert f"is {state} cannot {event}" in message
    for allowed in error.allowed:
        assert str(allowed) in message


def test_the_message_lists_the_allowed_events_and_says_when_nothing_is() -> None:
    with pytest.raises(
        IllegalTransition, match=r"completed cannot approve; expected one of: rollback, supersede$"
    ):
        next_state(S.COMPLETED, E.APPROVE)
    with pytest.raises(IllegalTransition, match=r"expected one of: none \(the rollout has ended\)"):
        next_state(S.ROLLED_BACK, E.RESUME)


def test_stored_strings_are_accepted_and_unknown_names_refused() -> None:
    assert next_state("waiting_approval", "approve") is S.PROMOTING
    with pytest.raises(ValueError, match="'sleeping' is not a valid RolloutState"):
        next_state("sleeping", "start")


def test_terminal_states_have_no_way_out_and_active_ones_can_be_aborted_or_superseded() -> None:
    assert {S.ROLLED_BACK, S.SUPERSEDED} == TERMINAL
    for state in TERMINAL:
        assert allowed_events(state) == []
    assert set(RolloutState) - TERMINAL - {S.COMPLETED} == ACTIVE
    for state in ACTIVE:
        assert TRANSITIONS[(state, E.ABORT)] is S.ABORTING, state
        assert TRANSITIONS[(state, E.SUPERSEDE)] is S.SUPERSEDED, state
    # A completed rollout holds no devices but can still be undone.
    assert allowed_events(S.COMPLETED) == [E.ROLLBACK, E.SUPERSEDE]


def test_failed_gates_follow_the_plan_in_every_state_that_judges_them() -> None:
    judging = {s for (s, e) in TRANSITIONS if e in (E.GATES_FAILED_PAUSE, E.GATES_FAILED_ABORT)}
    assert judging == {S.RUNNING, S.BAKING, S.WAITING_APPROVAL}
    for state in judging:
        assert TRANSITIONS[(state, E.GATES_FAILED_PAUSE)] is S.PAUSED
        assert TRANSITIONS[(state, E.GATES_FAILED_ABORT)] is S.ABORTING


def test_operator_pause_applies_exactly_where_the_rollout_is_moving() -> None:
    assert {s for (s, e) in TRANSITIONS if e is E.PAUSE} == {
        S.RUNNING,
        S.BAKING,
        S.WAITING_APPROVAL,
        S.PROMOTING,
    }
    assert {s for (s, e) in TRANSITIONS if e is E.RESUME} == {S.PAUSED}
    assert {s for (s, e) in TRANSITIONS if e is E.ROLLBACK} == {S.PAUSED, S.COMPLETED}


def test_every_state_is_reachable_and_every_active_state_can_end() -> None:
    assert {S.DRAFT} | set(TRANSITIONS.values()) == set(RolloutState)
    for state in ACTIVE | {S.COMPLETED}:
        assert allowed_events(state), state


def test_the_table_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[(S.ROLLED_BACK, E.RESUME)] = S.RUNNING  # type: ignore[index]
