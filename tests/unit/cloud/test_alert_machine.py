"""The alert and delivery state machines' tables, case by case: chains of events and the states they visit."""

from __future__ import annotations

import pytest

from cloud.alerts.machine import (
    ACTIVE,
    DELIVERY_TRANSITIONS,
    ENDED,
    NOTIFY,
    TRANSITIONS,
    AlertEvent,
    AlertState,
    DeliveryEvent,
    DeliveryState,
    IllegalTransitionError,
    allowed_events,
    next_state,
)

S, E = AlertState, AlertEvent


def run(events: list[AlertEvent], start: AlertState = S.INACTIVE) -> list[AlertState]:
    states = [start]
    for event in events:
        states.append(next_state(TRANSITIONS, states[-1], event))
    return states


CASES = {
    "breach held for the duration fires, then clears": (
        [E.BREACH, E.BREACH, E.HELD, E.HELD, E.CLEAR],
        [S.INACTIVE, S.PENDING, S.PENDING, S.FIRING, S.FIRING, S.RESOLVED],
    ),
    "clears before the duration: pending ends inactive": (
        [E.BREACH, E.CLEAR],
        [S.INACTIVE, S.PENDING, S.INACTIVE],
    ),
    "no duration fires at once": ([E.HELD, E.CLEAR], [S.INACTIVE, S.FIRING, S.RESOLVED]),
    "data stops while pending": ([E.BREACH, E.NO_DATA], [S.INACTIVE, S.PENDING, S.INACTIVE]),
    "data stops while firing resolves": (
        [E.BREACH, E.HELD, E.NO_DATA],
        [S.INACTIVE, S.PENDING, S.FIRING, S.RESOLVED],
    ),
    "a gap in the data does not unfire": (
        [E.HELD, E.BREACH, E.HELD, E.CLEAR],
        [S.INACTIVE, S.FIRING, S.FIRING, S.FIRING, S.RESOLVED],
    ),
    "rule disabled while firing": ([E.HELD, E.DISABLE], [S.INACTIVE, S.FIRING, S.RESOLVED]),
    "rule disabled while pending": ([E.BREACH, E.DISABLE], [S.INACTIVE, S.PENDING, S.INACTIVE]),
    "nothing breaches: nothing happens": ([E.CLEAR, E.NO_DATA, E.DISABLE], [S.INACTIVE] * 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_chain_of_events_visits_the_expected_states(case: str) -> None:
    events, states = CASES[case]
    assert run(events) == states


@pytest.mark.parametrize(
    ("state", "event"), [(S.RESOLVED, E.BREACH), (S.RESOLVED, E.CLEAR), (S.RESOLVED, E.HELD)]
)
def test_a_resolved_alert_takes_no_event_and_says_so(state: AlertState, event: AlertEvent) -> None:
    with pytest.raises(
        IllegalTransitionError, match=f"no transition from {state.name} on {event.name}; allowed: none"
    ):
        next_state(TRANSITIONS, state, event)


def test_an_illegal_event_lists_the_allowed_ones() -> None:
    with pytest.raises(IllegalTransitionError, match=r"no transition from DELIVERED on SENT; allowed: none"):
        next_state(DELIVERY_TRANSITIONS, DeliveryState.DELIVERED, DeliveryEvent.SENT)
    assert allowed_events(DELIVERY_TRANSITIONS, DeliveryState.PENDING) == list(DeliveryEvent)


def test_every_event_has_a_row_in_every_state_that_can_be_open() -> None:
    # Evaluation posts whatever it judged: a missing row would be an exception in the hub's cycle.
    for state in {S.INACTIVE} | ACTIVE:
        assert set(allowed_events(TRANSITIONS, state)) == set(AlertEvent), state
    assert allowed_events(TRANSITIONS, S.RESOLVED) == []


def test_notifications_go_out_on_firing_and_resolving_only() -> None:
    # What moves into a NOTIFY state: held breaches (FIRING), and the end of a firing alert (RESOLVED).
    into_notify = {(s, e) for (s, e), nxt in TRANSITIONS.items() if nxt in NOTIFY and nxt is not s}
    assert into_notify == {
        (S.INACTIVE, E.HELD),
        (S.PENDING, E.HELD),
        (S.FIRING, E.CLEAR),
        (S.FIRING, E.NO_DATA),
        (S.FIRING, E.DISABLE),
    }
    # A pending alert that ends was never announced, so its end is not either.
    assert all(TRANSITIONS[(S.PENDING, e)] is S.INACTIVE for e in (E.CLEAR, E.NO_DATA, E.DISABLE))


def test_every_state_is_reachable_and_the_sets_partition_them() -> None:
    assert {S.INACTIVE} | set(TRANSITIONS.values()) == set(AlertState)
    assert set(AlertState) == ACTIVE | ENDED and not ACTIVE & ENDED


@pytest.mark.parametrize(
    ("events", "states"),
    [
        ([DeliveryEvent.SENT], [DeliveryState.PENDING, DeliveryState.DELIVERED]),
        (
            [DeliveryEvent.RETRY, DeliveryEvent.RETRY, DeliveryEvent.SENT],
            [DeliveryState.PENDING, DeliveryState.PENDING, DeliveryState.PENDING, DeliveryState.DELIVERED],
        ),
        ([DeliveryEvent.RETRY, DeliveryEvent.GIVE_UP], [DeliveryState.PENDING] * 2 + [DeliveryState.FAILED]),
    ],
)
def test_delivery_chains(events: list[DeliveryEvent], states: list[DeliveryState]) -> None:
    seen = [DeliveryState.PENDING]
    for event in events:
        seen.append(next_state(DELIVERY_TRANSITIONS, seen[-1], event))
    assert seen == states
