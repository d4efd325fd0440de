"""The alert and delivery state machines: states, the events evaluation posts, and one table each.

Evaluation judges a rule's series and posts an event; only :func:`next_state` picks the next
state, from the machine's table. Pure: no I/O, so each table is tested case by case, and a hub
that restarts resumes every alert from the state stored in its row.

One alert row is one episode of a rule's condition on one cohort and model version::

    (no row) INACTIVE -BREACH-> PENDING -HELD-> FIRING -CLEAR/NO_DATA/DISABLE-> RESOLVED
                 |                  |
                 +------HELD--------|------------^   (the condition already held long enough)
                                    +-CLEAR/NO_DATA/DISABLE-> INACTIVE

INACTIVE and RESOLVED end an episode; the next breach opens a new row. A notification is
queued for every move into FIRING and into RESOLVED (:data:`NOTIFY`).

A notification's delivery to one receiver::

    PENDING -SENT-> DELIVERED
    PENDING -RETRY-> PENDING   (back-off, attempts left)
    PENDING -GIVE_UP-> FAILED  (attempts spent, or the receiver was removed or disabled)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeVar

__all__ = [
    "ACTIVE",
    "DELIVERY_TRANSITIONS",
    "ENDED",
    "NOTIFY",
    "TRANSITIONS",
    "AlertEvent",
    "AlertState",
    "DeliveryEvent",
    "DeliveryState",
    "IllegalTransitionError",
    "allowed_events",
    "next_state",
]


class AlertState(enum.StrEnum):
    INACTIVE = "inactive"  # the condition does not hold (or cleared before the duration passed)
    PENDING = "pending"  # the condition holds, not yet for the rule's duration
    FIRING = "firing"  # the condition has held for the rule's duration
    RESOLVED = "resolved"  # a firing alert whose condition stopped holding


class AlertEvent(enum.StrEnum):
    """What evaluation found for one alert's series at one instant."""

    BREACH = "breach"  # the latest bucket breaches, for less than the rule's duration so far
    HELD = "held"  # the latest buckets have breached, back to back, for at least the duration
    CLEAR = "clear"  # the latest bucket does not breach
    NO_DATA = "no_data"  # no recent bucket: the devices stopped reporting, or the series ended
    DISABLE = "disable"  # the rule was disabled or deleted


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed, or the receiver went away


class DeliveryEvent(enum.StrEnum):
    SENT = "sent"  # the receiver answered 2xx
    RETRY = "retry"  # an attempt failed and attempts are left
    GIVE_UP = "give_up"  # an attempt failed and none are left, or the receiver was removed or disabled


S, E = AlertState, AlertEvent

TRANSITIONS: Final[Mapping[tuple[AlertState, AlertEvent], AlertState]] = MappingProxyType(
    {
        (S.INACTIVE, E.BREACH): S.PENDING,
        # A rule with no duration, or one whose data already breached long enough when first judged
        # (a new rule over old buckets, a hub that was down): no pending stop on the way.
        (S.INACTIVE, E.HELD): S.FIRING,
        (S.INACTIVE, E.CLEAR): S.INACTIVE,
        (S.INACTIVE, E.NO_DATA): S.INACTIVE,
        (S.INACTIVE, E.DISABLE): S.INACTIVE,
        (S.PENDING, E.BREACH): S.PENDING,
        (S.PENDING, E.HELD): S.FIRING,
        # Cleared before the duration passed: nobody was told, so nobody is told it ended.
        (S.PENDING, E.CLEAR): S.INACTIVE,
        (S.PENDING, E.NO_DATA): S.INACTIVE,
        (S.PENDING, E.DISABLE): S.INACTIVE,
        # Once firing, an alert fires while the latest bucket breaches, even if a gap in the data cut
        # the run of breaching buckets short (Prometheus keeps a firing alert the same way).
        (S.FIRING, E.BREACH): S.FIRING,
        (S.FIRING, E.HELD): S.FIRING,
        (S.FIRING, E.CLEAR): S.RESOLVED,
        # Devices that stop reporting must not keep an alert firing forever; receivers hear it ended.
        (S.FIRING, E.NO_DATA): S.RESOLVED,
        (S.FIRING, E.DISABLE): S.RESOLVED,
    }
)

# States of an alert whose episode is under way; the others end it (the next breach opens a new row).
ACTIVE: Final = frozenset({AlertState.PENDING, AlertState.FIRING})
ENDED: Final = frozenset({AlertState.INACTIVE, AlertState.RESOLVED})
# Moves into these states queue a notification to every enabled receiver.
NOTIFY: Final = frozenset({AlertState.FIRING, AlertState.RESOLVED})

D, DE = DeliveryState, DeliveryEvent

DELIVERY_TRANSITIONS: Final[Mapping[tuple[DeliveryState, DeliveryEvent], DeliveryState]] = MappingProxyType(
    {
        (D.PENDING, DE.SENT): D.DELIVERED,
        (D.PENDING, DE.RETRY): D.PENDING,
        (D.PENDING, DE.GIVE_UP): D.FAILED,
    }
)

StateT = TypeVar("StateT", bound=enum.Enum)
EventT = TypeVar("EventT", bound=enum.Enum)


class IllegalTransitionError(RuntimeError):
    """An event the state has no row for: a bug in the caller, not bad input."""


def next_state(table: Mapping[tuple[StateT, EventT], StateT], state: StateT, event: EventT) -> StateT:
    """The state ``table`` names for (``state``, ``event``)."""
    try:
        return table[(state, event)]
    except KeyError:
        allowed = sorted(e.name for e in allowed_events(table, state))
        raise IllegalTransitionError(
            f"no transition from {state.name} on {event.name}; allowed: {allowed or 'none (it has ended)'}"
        ) from None


def allowed_events(table: Mapping[tuple[StateT, EventT], StateT], state: StateT) -> list[EventT]:
    """The events ``table`` accepts in ``state``, in the order the table lists them."""
    return [event for (s, event) in table if s is state]
