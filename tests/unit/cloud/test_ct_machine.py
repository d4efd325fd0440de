"""The training run state machine's table, case by case: a chain of events and the states it visits."""

from __future__ import annotations

import pytest

from cloud.errors import ConflictError
from cloud.training.continuous.machine import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    IllegalRunTransition,
    RunEvent,
    RunState,
    allowed_events,
    next_state,
)

S, E = RunState, RunEvent

CASES = {
    "challenger kept out: the champion stays": (
        [E.START, E.KEEP_CHAMPION],
        [S.QUEUED, S.RUNNING, S.SUCCEEDED],
    ),
    "policy approval, approved": (
        [E.START, E.AWAIT_APPROVAL, E.APPROVE, E.ROLLOUT_STARTED],
        [S.QUEUED, S.RUNNING, S.AWAITING_APPROVAL, S.APPROVED, S.ROLLED_OUT],
    ),
    "policy approval, rejected": (
        [E.START, E.AWAIT_APPROVAL, E.REJECT],
        [S.QUEUED, S.RUNNING, S.AWAITING_APPROVAL, S.REJECTED],
    ),
    "policy canary": (
        [E.START, E.PROMOTE, E.ROLLOUT_STARTED],
        [S.QUEUED, S.RUNNING, S.APPROVED, S.ROLLED_OUT],
    ),
    "canary refused by the rollout engine": (
        [E.START, E.PROMOTE, E.ROLLOUT_FAILED],
        [S.QUEUED, S.RUNNING, S.APPROVED, S.FAILED],
    ),
    "a step fails": ([E.START, E.FAIL], [S.QUEUED, S.RUNNING, S.FAILED]),
    "cancelled before it started": ([E.REJECT], [S.QUEUED, S.REJECTED]),
}


@pytest.mark.parametrize("case", CASES)
def test_chains(case: str) -> None:
    events, states = CASES[case]
    state, seen = S.QUEUED, [S.QUEUED]
    for event in events:
        state = next_state(state, event)
        seen.append(state)
    assert seen == states


ILLEGAL = [
    (S.QUEUED, E.APPROVE),  # nothing trained yet
    (S.RUNNING, E.APPROVE),  # not evaluated yet
    (S.RUNNING, E.REJECT),  # a running run is not cancelled halfway (its lease ends it if the hub dies)
    (S.AWAITING_APPROVAL, E.ROLLOUT_STARTED),  # only an approval starts the rollout
    (S.APPROVED, E.REJECT),
    (S.QUEUED, E.FAIL),
]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda v: str(v))
def test_illegal_events_are_refused_with_the_allowed_ones(state: RunState, event: RunEvent) -> None:
    with pytest.raises(IllegalRunTransition) as caught:
        next_state(state, event)
    assert isinstance(caught.value, ConflictError)  # the API answers 409
    allowed = ", ".join(allowed_events(state)) or "none (the run has ended)"
    assert str(caught.value) == f"a training run that is {state} cannot {event}; expected one of: {allowed}"


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_nothing_leaves_an_end(state: RunState) -> None:
    assert allowed_events(state) == []
    assert "none (the run has ended)" in str(IllegalRunTransition(state, E.START))


def test_every_state_is_reachable_and_every_working_state_can_end() -> None:
    reachable = {S.QUEUED} | set(TRANSITIONS.values())
    assert reachable == set(RunState)
    for state in set(RunState) - TERMINAL:
        assert allowed_events(state), state
    assert set(ACTIVE) == {S.QUEUED, S.RUNNING}


def test_stored_strings_are_accepted_and_unknown_ones_refused() -> None:
    assert next_state("queued", "start") is S.RUNNING
    with pytest.raises(ValueError, match="'finished' is not a valid RunState"):
        next_state("finished", "start")
