"""The one state-machine engine of the agent; each machine is an Enum of states, an Enum of events, a table.

Two tables drive it: model updates (:mod:`edge_agent.update_machine`) and firmware slots
(:mod:`edge_agent.firmware.machine`). Steps do the work and post an event; only the
engine picks the next state, from the table; an event the current state has no row for
is a bug in whoever posted it and raises :class:`IllegalTransitionError`, listing what
that state allows. Pure: no I/O, so each table is tested case by case.

The engine has a module of its own rather than living in ``update_machine`` because
firmware slots are not a kind of model update: both machines import this, neither
imports the other.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar, Generic, TypeVar

__all__ = ["IllegalTransitionError", "StateMachine", "Table", "freeze_table"]

StateT = TypeVar("StateT", bound=enum.Enum)
EventT = TypeVar("EventT", bound=enum.Enum)

Table = Mapping[tuple[StateT, EventT], StateT]


class IllegalTransitionError(RuntimeError):
    """A step posted an event its state has no row for: a bug in the caller, not bad input."""


def freeze_table(
    states: type[StateT], events: type[EventT], rows: Table[StateT, EventT]
) -> Table[StateT, EventT]:
    """``rows`` as a read-only table, refusing a row that mixes in another machine's states or events."""
    for (state, event), target in rows.items():
        if not (isinstance(state, states) and isinstance(target, states) and isinstance(event, events)):
            raise TypeError(
                f"row ({state!r}, {event!r}) -> {target!r}: expected ({states.__name__}, "
                f"{events.__name__}) -> {states.__name__}"
            )
    return MappingProxyType(dict(rows))


class StateMachine(Generic[StateT, EventT]):
    """Holds the current state and the chain of states entered; moves only by the table."""

    # Names the machine in the error message ("no firmware transition from ...").
    label: ClassVar[str] = ""
    error: ClassVar[type[IllegalTransitionError]] = IllegalTransitionError

    def __init__(self, state: StateT, table: Table[StateT, EventT]) -> None:
        self._state = state
        self._table = table
        self.history: list[StateT] = [state]
        self._listeners: list[Callable[[StateT], None]] = []

    def add_listener(self, listener: Callable[[StateT], None]) -> None:
        """Call ``listener`` with the new state after every transition (no I/O: it must be quick)."""
        self._listeners.append(listener)

    @property
    def state(self) -> StateT:
        return self._state

    def can(self, event: EventT) -> bool:
        return (self._state, event) in self._table

    def allowed(self) -> list[str]:
        """Names of the events the current state has a row for, sorted."""
        return sorted(e.name for (s, e) in self._table if s is self._state)

    def post(self, event: EventT) -> StateT:
        """Move to the state the table names for (state, event) and return it."""
        try:
            nxt = self._table[(self._state, event)]
        except KeyError:
            what = f"{self.label} transition" if self.label else "transition"
            raise self.error(
                f"no {what} from {self._state.name} on {event.name}; allowed: {self.allowed()}"
            ) from None
        self._state = nxt
        self.history.append(nxt)
        for listener in self._listeners:
            listener(nxt)
        return nxt
