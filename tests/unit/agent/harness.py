"""An updater wired to in-memory peers (FakeFetcher, FakeClock, FakeResources) and real onnxruntime.

``Harness`` records every reported event; ``desired`` builds a desired state for its device.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.backoff import Backoff
from edge_agent.config import LimitsConfig, TrialConfig, UpdateConfig
from edge_agent.errors import StateFileError
from edge_agent.runtime import RuntimeOptions, RuntimeRegistry
from edge_agent.serving import ServingSlot
from edge_agent.state import AgentState, PersistentState, StateFile
from edge_agent.store import ArtifactStore
from edge_agent.updater import Updater
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2
from tests.unit.agent.fakes import NO_TRIAL, FakeClock, FakeFetcher, FakeResources, linear_model, ref_for

V1, V2 = linear_model(1.0), linear_model(2.0)
REF1, REF2 = ref_for(V1, version="1"), ref_for(V2, version="2")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


@dataclass
class Reported:
    kind: int
    reason: str
    model: common_pb2.ModelRef | None
    generation: int
    details: dict[str, str]


class FlakyStateFile(StateFile):
    """A state file whose disk can be made to refuse writes."""

    refuse = False

    def save(self, state: AgentState) -> None:
        if self.refuse:
            raise StateFileError(f"cannot write state file {self.path}: No space left on device")
        super().save(state)


@dataclass
class Harness:
    root: Path
    backoff_s: float = 0.01
    trial: TrialConfig = NO_TRIAL
    update: UpdateConfig = field(default_factory=UpdateConfig)
    runtimes: RuntimeRegistry = field(default_factory=RuntimeRegistry)
    fetcher: FakeFetcher = field(default_factory=FakeFetcher)
    resources: FakeResources = field(default_factory=FakeResources)
    events: list[Reported] = field(default_factory=list)
    changes: int = 0

    def __post_init__(self) -> None:
        self.clock = FakeClock()
        self.store = ArtifactStore(self.root / "artifacts")
        self.state_file = FlakyStateFile(self.root / "state.json")
        self.state = PersistentState(self.state_file, self.clock)
        self.serving = ServingSlot()
        self._reported = asyncio.Event()
        self.updater = Updater(
            device_id="dev-1",
            fleet="f1",
            store=self.store,
            fetcher=self.fetcher,
            runtimes=self.runtimes,
            runtime_options=RuntimeOptions(),
            state=self.state,
            serving=self.serving,
            report=self.report,
            backoff=Backoff(initial_s=self.backoff_s, max_s=self.backoff_s * 4, rng=random.Random(0)),
            limits=LimitsConfig(max_artifact_bytes=1 << 20),
            trial=self.trial,
            update=self.update,
            resources=self.resources,
            clock=self.clock,
            on_change=self.changed,
        )

    def report(
        self,
        kind: event_pb2.EventKind.ValueType,
        reason: str = "",
        *,
        model: common_pb2.ModelRef | None = None,
        generation: int = 0,
        details: Mapping[str, str] | None = None,
    ) -> None:
        self.events.append(Reported(kind, reason, model, generation, dict(details or {})))
        self._reported.set()

    async def reported(self, kind: int, timeout: float = 5.0) -> None:
        """Return once an event of ``kind`` was reported."""
        async with asyncio.timeout(timeout):
            while kind not in self.kinds():
                self._reported.clear()
                await self._reported.wait()

    def changed(self) -> None:
        self.changes += 1

    def kinds(self) -> list[int]:
        return [e.kind for e in self.events]

    def stored(self, data: bytes) -> Path:
        ref = ref_for(data)
        self.store.partial_path(ref.sha256).write_bytes(data)
        return self.store.install_partial(ref)

    async def serve_v1(self) -> None:
        """Start from v1 serving at generation 1, with a clean event log and machine history."""
        self.fetcher.add(V1)
        assert await self.updater.apply(desired(REF1, 1))
        self.events.clear()
        self.fetcher.calls.clear()
        self.updater.machine.history[:] = [self.updater.machine.state]

    def serving_version(self) -> str | None:
        current = self.serving.current
        return current.ref.version if current is not None else None


def desired(ref: common_pb2.ModelRef | None, generation: int, **kw: Any) -> desired_pb2.DesiredState:
    fields: dict[str, Any] = {"device_id": "dev-1", "fleet": "f1", "generation": generation, **kw}
    if ref is not None:
        fields["model"] = ref
    return desired_pb2.DesiredState(**fields)
