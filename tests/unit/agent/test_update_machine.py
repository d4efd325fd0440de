"""The update state machine's table, case by case: each case is a chain of events and the states it visits."""

from __future__ import annotations

import pytest

from edge_agent.update_machine import (
    TRANSITIONS,
    IllegalTransitionError,
    UpdateEvent,
    UpdateMachine,
    UpdateState,
)

S, E = UpdateState, UpdateEvent

CASES = {
    "fresh download": (
        [E.FETCH, E.DONE, E.DONE, E.DONE, E.DONE],
        [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ACTIVATING, S.IDLE],
    ),
    "artifact already stored": (
        [E.CACHED, E.DONE, E.DONE, E.DONE],
        [S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.IDLE],
    ),
    "stored artifact damaged": (
        [E.CACHED, E.CACHE_CORRUPT, E.DONE, E.DONE, E.DONE, E.DONE],
        [S.IDLE, S.VERIFYING, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ACTIVATING, S.IDLE],
    ),
    "refused before any I/O": ([E.FAIL], [S.IDLE, S.FAILED]),
    "download fails": ([E.FETCH, E.FAIL], [S.IDLE, S.DOWNLOADING, S.FAILED]),
    "verification fails": ([E.FETCH, E.DONE, E.FAIL], [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.FAILED]),
    "load fails": (
        [E.FETCH, E.DONE, E.DONE, E.FAIL],
        [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.FAILED],
    ),
    "activation fails": (
        [E.CACHED, E.DONE, E.DONE, E.FAIL],
        [S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.FAILED],
    ),
    "retry after failure": (
        [E.FETCH, E.FAIL, E.RETRY, E.FETCH, E.DONE, E.DONE, E.DONE, E.DONE],
        [
            S.IDLE,
            S.DOWNLOADING,
            S.FAILED,
            S.IDLE,
            S.DOWNLOADING,
            S.VERIFYING,
            S.LOADING,
            S.ACTIVATING,
            S.IDLE,
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
    [(S.IDLE, E.DONE), (S.FAILED, E.FETCH), (S.DOWNLOADING, E.RETRY), (S.ACTIVATING, E.CACHE_CORRUPT)],
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


def test_every_working_state_can_fail_and_failure_only_retries() -> None:
    for state in (S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ACTIVATING):
        assert TRANSITIONS[(state, E.FAIL)] is S.FAILED
    assert [e for (s, e) in TRANSITIONS if s is S.FAILED] == [E.RETRY]
