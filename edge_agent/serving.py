"""The serving slot: which loaded model answers predictions right now, and the trial beside it.

Activation is a reference swap. A prediction reads the slot once and runs on
what it got, so requests in flight finish on the old session while new ones
start on the new session; nothing is locked on the serving path. While a new
version is on trial the slot also holds the :class:`TrialRoute` that decides,
request by request, which version answers and which one is judged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.runtime import ModelRuntime
from edge_agent.tensors import Array, InputCheck
from edgefleet_proto.v1 import common_pb2

__all__ = ["LoadedModel", "Prediction", "ServingSlot", "TrialRoute"]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    ref: common_pb2.ModelRef
    runtime: ModelRuntime
    # The input check for this model, prepared once (the serving path runs it on every request).
    check: InputCheck = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "check", InputCheck(self.runtime.inputs))


@dataclass(frozen=True, slots=True)
class Prediction:
    """One answer and the model that gave it (which matters while versions change).

    ``id`` names the prediction for label feedback (``Agent.feedback``); the agent sets it.
    """

    outputs: dict[str, Array]
    model: common_pb2.ModelRef
    latency_ms: float
    id: str = ""


class TrialRoute(Protocol):
    """Answers predictions while a version is on trial (``edge_agent.trial.TrialSession``)."""

    def predict(self, inputs: Mapping[str, Array]) -> Prediction: ...


SwapListener = Callable[[LoadedModel | None, LoadedModel | None], None]


class ServingSlot:
    """Holds the active :class:`LoadedModel`; :meth:`wait_for` lets callers await a given one."""

    def __init__(self) -> None:
        self._current: LoadedModel | None = None
        self.trial: TrialRoute | None = None
        self._changed = asyncio.Event()
        self._listeners: list[SwapListener] = []

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def add_listener(self, listener: SwapListener) -> None:
        """Call ``listener(old, new)`` just before each swap (e.g. to close a telemetry window)."""
        self._listeners.append(listener)

    def swap(self, new: LoadedModel | None) -> LoadedModel | None:
        """Serve ``new`` from now on (None: serve nothing); return what served before."""
        old = self._current
        for listener in self._listeners:
            listener(old, new)
        self._current = new
        # Wake every waiter, then give later waiters a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()
        return old

    def begin_trial(self, route: TrialRoute) -> None:
        self.trial = route

    def end_trial(self, route: TrialRoute) -> None:
        """Stop routing through ``route`` (a no-op when another trial took its place)."""
        if self.trial is route:
            self.trial = None

    async def wait_for(self, sha256: str, timeout: float) -> LoadedModel:
        """Return once the model with ``sha256`` serves; raise TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while True:
                current = self._current
                if current is not None and current.ref.sha256 == sha256:
                    return current
                await self._changed.wait()
