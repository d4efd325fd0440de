"""The update state machine under injected faults, case by case.

Each case starts with v1 committed and serving, asks for v2, and injects one fault when
the machine enters a chosen state: an error (the step raises), a reboot (the process
dies there: the agent object is dropped and a new one starts on the same state folder),
a full disk (free space, or a state file that stops accepting writes), or a hang (the
step never returns; the step timeout, or for a trial its time window, ends it). The case
states the chain of states, and, for a reboot, the chain after the restart, and which
version serves at the end. Requests flow whenever a trial runs, and none may fail.

Peers are in memory (FakeFetcher, FakeResources); onnxruntime and the files are real.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, TrialConfig, UpdateConfig
from edge_agent.errors import StateFileError
from edge_agent.state import AgentState
from edge_agent.steps import Attempt
from edge_agent.trust.config import TrustConfig
from edge_agent.update_machine import UpdateEvent, UpdateState
from edgefleet_proto.v1 import desired_pb2, event_pb2
from tests.unit.agent.fakes import FakeFetcher, FakeResources, classifier_model, one_hot_rows, ref_for
from tests.unit.agent.harness import run

S = UpdateState
K = event_pb2.EventKind
MODELS = {kind: classifier_model(kind) for kind in ("identity", "scaled", "nan")}
REFS = {kind: ref_for(data, name="clf", version=kind) for kind, data in MODELS.items()}
TRIAL = TrialConfig(window_requests=8, window_s=10, min_requests=4)
BEFORE = [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL]
INSTALL = [*BEFORE, S.COMMITTING, S.IDLE]
RESUMED_TRIAL = [S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL, S.COMMITTING, S.IDLE]


class Reboot(BaseException):
    """The process dies here (a BaseException: no step handler may catch it)."""


@dataclass(frozen=True)
class Case:
    fault: str  # error | reboot | disk | state_file | hang
    state: UpdateState
    chain: list[UpdateState]
    serving: str
    after_reboot: list[UpdateState] | None = None
    new: str = "scaled"
    trial: TrialConfig = TRIAL
    traffic: bool = True


CASES = {
    "error while downloading": Case("error", S.DOWNLOADING, [S.IDLE, S.DOWNLOADING, S.FAILED], "identity"),
    "error while verifying": Case("error", S.VERIFYING, [*BEFORE[:3], S.FAILED], "identity"),
    "error while loading": Case("error", S.LOADING, [*BEFORE[:4], S.FAILED], "identity"),
    "error while activating": Case("error", S.ACTIVATING, [*BEFORE[:5], S.FAILED], "identity"),
    "error during the trial": Case("error", S.TRIAL, [*BEFORE, S.ROLLING_BACK, S.ROLLED_BACK], "identity"),
    "error while committing": Case(
        "error", S.COMMITTING, [*BEFORE, S.COMMITTING, S.ROLLING_BACK, S.ROLLED_BACK], "identity"
    ),
    "full disk before the download": Case(
        "disk", S.DOWNLOADING, [S.IDLE, S.DOWNLOADING, S.FAILED], "identity"
    ),
    "state file full from verifying on": Case("state_file", S.VERIFYING, [*BEFORE[:3], S.FAILED], "identity"),
    "state file full at the commit": Case(
        "state_file", S.COMMITTING, [*BEFORE, S.COMMITTING, S.ROLLING_BACK, S.ROLLED_BACK], "identity"
    ),
    "hang while verifying": Case("hang", S.VERIFYING, [*BEFORE[:3], S.FAILED], "identity"),
    "hang while loading": Case("hang", S.LOADING, [*BEFORE[:4], S.FAILED], "identity"),
    "hang while committing": Case(
        "hang", S.COMMITTING, [*BEFORE, S.COMMITTING, S.ROLLING_BACK, S.ROLLED_BACK], "identity"
    ),
    "a trial nobody calls ends on time": Case(
        "none", S.TRIAL, INSTALL, "scaled", trial=replace(TRIAL, window_s=0.2), traffic=False
    ),
    "reboot while downloading": Case(
        "reboot", S.DOWNLOADING, [S.IDLE, S.DOWNLOADING], "scaled", after_reboot=[S.IDLE, *INSTALL[1:]]
    ),
    "reboot while verifying": Case(
        "reboot", S.VERIFYING, BEFORE[:3], "scaled", after_reboot=[S.IDLE, *INSTALL[1:]]
    ),
    "reboot while loading": Case("reboot", S.LOADING, BEFORE[:4], "scaled", after_reboot=RESUMED_TRIAL),
    "reboot while activating": Case("reboot", S.ACTIVATING, BEFORE[:5], "scaled", after_reboot=RESUMED_TRIAL),
    "reboot during the trial": Case("reboot", S.TRIAL, BEFORE, "scaled", after_reboot=RESUMED_TRIAL),
    # The commit is one atomic save: before it the state file still says trial, and the trial resumes.
    "reboot while committing": Case(
        "reboot", S.COMMITTING, [*BEFORE, S.COMMITTING], "scaled", after_reboot=RESUMED_TRIAL
    ),
    "reboot while rolling back a NaN version": Case(
        "reboot",
        S.ROLLING_BACK,
        [*BEFORE, S.ROLLING_BACK],
        "identity",
        after_reboot=[S.IDLE, S.ROLLING_BACK, S.ROLLED_BACK],
        new="nan",
    ),
}


def make_agent(root: Path, case: Case, resources: FakeResources) -> Agent:
    fetcher = FakeFetcher()
    for data in MODELS.values():
        fetcher.add(data)
    config = AgentConfig.for_simulation(device_id="dev-1", fleet="f1", state_dir=root, trial=case.trial)
    config = replace(config, update=UpdateConfig(step_timeout_s=0.3), trust=TrustConfig(require_signed=False))
    return Agent(config, fetcher=fetcher, resources=resources)


def inject(agent: Agent, case: Case, resources: FakeResources, release: asyncio.Event) -> None:
    table = agent.updater._table
    step = table[case.state]

    async def faulty(attempt: Attempt) -> UpdateEvent:
        if case.fault == "error":
            raise RuntimeError(f"injected error in {case.state.name}")
        if case.fault == "reboot":
            raise Reboot
        if case.fault == "hang":
            await release.wait()
        return await step(attempt)

    if case.fault in ("error", "reboot", "hang"):
        table[case.state] = faulty
    elif case.fault == "disk":
        resources.disk = 1024
    elif case.fault == "state_file":
        refuse_from(agent, case.state)


def refuse_from(agent: Agent, state: UpdateState) -> None:
    """The state file stops accepting writes once the machine enters ``state``."""
    file = agent.state._file
    save = file.save

    def full(new: AgentState) -> None:
        if state in agent.updater.machine.history:
            raise StateFileError(f"cannot write state file {file.path}: No space left on device")
        save(new)

    file.save = full  # type: ignore[method-assign]


async def with_traffic(agent: Agent, case: Case, work: Awaitable[None], failures: list[Exception]) -> None:
    """Run ``work`` while sending a request whenever a trial is on (the requests must all succeed)."""
    task = asyncio.ensure_future(work)
    i = 0
    while not task.done():
        if case.traffic and agent.updater.trial is not None:
            try:
                agent.predict({"x": one_hot_rows([i % 4])})
            except Exception as e:  # collected: the test says there are none
                failures.append(e)
            i += 1
            await asyncio.sleep(0)  # a yield, not a wait: the updater judges what the request showed
            continue
        # No trial on: nothing to send until the machine moves into one, or the work ends.
        trial_on = asyncio.ensure_future(
            agent.updater.wait_until(lambda: agent.updater.trial is not None, timeout=60)
        )
        await asyncio.wait({task, trial_on}, return_when=asyncio.FIRST_COMPLETED)
        trial_on.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await trial_on
    await task


def finished(agent: Agent) -> bool:
    history = agent.updater.machine.history
    return len(history) > 1 and history[-1] in (S.IDLE, S.ROLLED_BACK)


async def until(agent: Agent, predicate: Callable[[], bool]) -> None:
    await agent.updater.wait_until(predicate, timeout=30)


@pytest.mark.parametrize("name", list(CASES))
def test_a_fault_in_one_state_walks_the_expected_chain(tmp_path: Path, name: str) -> None:
    case = CASES[name]

    async def scenario() -> None:
        resources = FakeResources()
        agent = make_agent(tmp_path, case, resources)
        first = desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=1, model=REFS["identity"])
        trial, agent.updater.steps.trial = (
            agent.updater.steps.trial,
            TrialConfig(window_requests=0, window_s=0),
        )
        assert await agent.updater.apply(first)
        agent.updater.steps.trial = trial
        agent.updater.machine.history[:] = [S.IDLE]
        release = asyncio.Event()
        inject(agent, case, resources, release)
        failures: list[Exception] = []
        second = desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=2, model=REFS[case.new])
        try:
            await with_traffic(agent, case, agent.updater.apply(second), failures)
        except Reboot:
            pass
        finally:
            release.set()
        assert agent.updater.machine.history == case.chain
        assert failures == []
        if case.after_reboot is not None:
            agent.outbox.close()
            agent = make_agent(tmp_path, case, FakeResources())
            await agent.restore()
            assert agent.active_model is not None and agent.active_model.ref == REFS["identity"]
            loop = asyncio.create_task(agent.updater.run())
            try:
                await with_traffic(agent, case, until(agent, lambda: finished(agent)), failures)
            finally:
                loop.cancel()
            assert agent.updater.machine.history == case.after_reboot
            assert failures == []
        assert agent.active_model is not None and agent.active_model.ref == REFS[case.serving]
        saved = agent.state.state
        if case.serving == "scaled":
            assert saved.active == REFS["scaled"] and saved.update is None and saved.trial is None
        else:
            assert saved.active == REFS["identity"]
        if S.ROLLED_BACK in (case.after_reboot or case.chain):
            assert agent.updater.last_failure.startswith(f"clf:{case.new} rolled back: ")

    run(scenario())
