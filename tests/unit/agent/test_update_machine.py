"""The update state machine's table, case by case: each case is a chain of events and the states it visits."""

from __future__ import annotations

import pytest

from edge_agent.update_machine import (
    RESTING,
    TRANSITIONS,
    WORKING,
    IllegalTransitionError,
    UpdateEvent,
    UpdateMachine,
    UpdateState,
)

S, E = UpdateState, UpdateEvent
TO_TRIAL = [S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL]

CASES = {
    "fresh download, trial passes": (
        [E.FETCH, E.DONE, E.DONE, E.DONE, E.DONE, E.PASS, E.DONE],
        [S.IDLE, *TO_TRIAL, S.COMMITTING, S.IDLE],
    ),
    "artifact already stored": (
        [E.CACHED, E.DONE, E.DONE, E.DONE, E.PASS, E.DONE],
        [S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL, S.COMMITTING, S.IDLE],
    ),
    "stored artifact damaged": (
        [E.CACHED, E.CACHE_CORRUPT, E.DONE, E.DONE, E.DONE, E.DONE, E.PASS, E.DONE],
        [S.IDLE, S.VERIFYING, *TO_TRIAL, S.COMMITTING, S.IDLE],
    ),
    "trial fails a gate": (
        [E.FETCH, E.DONE, E.DONE, E.DONE, E.DONE, E.REJECT, E.DONE],
        [S.IDLE, *TO_TRIAL, S.ROLLING_BACK, S.ROLLED_BACK],
    ),
    "unexpected error while judging rolls back": (
        [E.CACHED, E.DONE, E.DONE, E.DONE, E.FAIL, E.DONE],
        [S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL, S.ROLLING_BACK, S.ROLLED_BACK],
    ),
    "commit cannot be saved": (
        [E.CACHED, E.DONE, E.DONE, E.DONE, E.PASS, E.FAIL, E.DONE],
        [S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL, S.COMMITTING, S.ROLLING_BACK, S.ROLLED_BACK],
    ),
    "rollback whose record cannot be saved still ends the attempt": (
        [E.CACHED, E.DONE, E.DONE, E.DONE, E.REJECT, E.FAIL],
        [S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL, S.ROLLING_BACK, S.ROLLED_BACK],
    ),
    "restart finds a crash-looping trial": ([E.REJECT, E.DONE], [S.IDLE, S.ROLLING_BACK, S.ROLLED_BACK]),
    "state looping detected while downloading": (
        [E.FETCH, E.LOOP, E.DONE],
        [S.IDLE, S.DOWNLOADING, S.ROLLING_BACK, S.ROLLED_BACK],
    ),
    "refused before any I/O": ([E.FAIL], [S.IDLE, S.FAILED]),
    "download fails": ([E.FETCH, E.FAIL], [S.IDLE, S.DOWNLOADING, S.FAILED]),
    "verification fails": ([E.FETCH, E.DONE, E.FAIL], [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.FAILED]),
    "load fails": (
        [E.FETCH, E.DONE, E.DONE, E.FAIL],
        [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.FAILED],
    ),
    "trial slot cannot be saved before the swap": (
        [E.CACHED, E.DONE, E.DONE, E.FAIL],
        [S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.FAILED],
    ),
    "retry after failure, a newer version after a rollback": (
        [E.FETCH, E.FAIL, E.RETRY, E.CACHED, E.DONE, E.DONE, E.DONE, E.REJECT, E.DONE, E.RETRY, E.FETCH],
        [
            S.IDLE,
            S.DOWNLOADING,
            S.FAILED,
            S.IDLE,
            S.VERIFYING,
            S.LOADING,
            S.ACTIVATING,
            S.TRIAL,
            S.ROLLING_BACK,
            S.ROLLED_BACK,
            S.IDLE,
            S.DOWNLOADING,
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_chain_of_events_visits_the_expected_states(case: str) -> None:
    events, states = CASES[case]
    machine = UpdateMachine()
    for event in events:
        machine.post(event)
    assert machine.history == states
    assert machine.state is states[-1]


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.IDLE, E.DONE),
        (S.FAILED, E.FETCH),
        (S.DOWNLOADING, E.RETRY),
        (S.ACTIVATING, E.CACHE_CORRUPT),
        (S.LOADING, E.PASS),
        (S.ROLLED_BACK, E.DONE),
    ],
)
def test_an_event_without_a_row_is_a_bug_and_says_what_is_allowed(
    state: UpdateState, event: UpdateEvent
) -> None:
    machine = UpdateMachine(state)
    with pytest.raises(
        IllegalTransitionError, match=f"no transition from {state.name} on {event.name}; allowed"
    ):
        machine.post(event)
    assert machine.state is state


def test_before_the_swap_failure_retries_and_from_the_swap_on_it_rolls_back() -> None:
    for state in (S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ACTIVATING):
        assert TRANSITIONS[(state, E.FAIL)] is S.FAILED
    for state in (S.TRIAL, S.COMMITTING):
        assert TRANSITIONS[(state, E.FAIL)] is S.ROLLING_BACK
    assert [e for (s, e) in TRANSITIONS if s is S.FAILED] == [E.RETRY]
    assert [e for (s, e) in TRANSITIONS if s is S.ROLLED_BACK] == [E.RETRY]


def test_the_loop_guard_rolls_back_from_every_working_state_but_the_last_two() -> None:
    for state in WORKING - {S.COMMITTING, S.ROLLING_BACK}:
        assert TRANSITIONS[(state, E.LOOP)] is S.ROLLING_BACK, state
    # A rollback always ends, whatever happens while it runs.
    assert {TRANSITIONS[(S.ROLLING_BACK, e)] for e in (E.DONE, E.FAIL)} == {S.ROLLED_BACK}


def test_every_state_is_reachable_and_every_working_state_can_end() -> None:
    reachable = {S.IDLE} | set(TRANSITIONS.values())
    assert reachable == set(UpdateState)
    for state in WORKING:
        assert any(s is state for s, _ in TRANSITIONS), state
    assert RESTING.isdisjoint(WORKING)


def test_listeners_hear_every_transition_in_order() -> None:
    machine = UpdateMachine()
    heard: list[UpdateState] = []
    machine.add_listener(heard.append)
    machine.post(UpdateEvent.FETCH)
    machine.post(UpdateEvent.DONE)
    assert heard == [UpdateState.DOWNLOADING, UpdateState.VERIFYING]
    assert machine.history[1:] == heard
