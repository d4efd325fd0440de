"""Restarts in the middle of an update: the committed model serves first, then resume or roll back.

A "crash" here is an agent object abandoned mid-update (no clean stop, nothing flushed), and a
new agent started on the same state folder, exactly as after kill -9 or a power cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from edge_agent.agent import Agent
from edge_agent.state import UpdateRecord
from edge_agent.update_machine import UpdateState
from edgefleet_proto.v1 import event_pb2
from tests.unit.agent.harness import run
from tests.unit.agent.test_trial import (
    REFS,
    TRIAL,
    Traffic,
    desired,
    events,
    make_agent,
    serve_first,
    start_trial,
)

K = event_pb2.EventKind
S = UpdateState


async def crash_during_trial(root: Path, kind: str = "scaled") -> None:
    agent = make_agent(root)
    await serve_first(agent)
    task = await start_trial(agent, kind)
    Traffic(agent).send(5)
    task.cancel()  # the process dies here: nothing else runs, nothing is flushed
    await asyncio.gather(task, return_exceptions=True)


async def restarted(root: Path, **kw: object) -> tuple[Agent, asyncio.Task[None]]:
    agent = make_agent(root, **kw)  # type: ignore[arg-type]
    await agent.restore()
    return agent, asyncio.create_task(agent.updater.run())


async def until(predicate: Callable[[], bool], agent: Agent) -> None:
    await agent.updater.wait_until(predicate, timeout=10)


def test_a_crash_during_the_trial_restarts_on_the_committed_model_and_resumes_the_trial(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        await crash_during_trial(tmp_path)
        assert tmp_path.joinpath("state.json").read_text().count('"state": "trial"') == 1
        agent, loop = await restarted(tmp_path)
        try:
            # Serving the verified, committed model before anything else.
            await until(lambda: agent.updater.machine.state is S.TRIAL, agent)
            assert agent.state.state.update is not None and agent.state.state.update.restarts == 1
            traffic = Traffic(agent)
            traffic.send(48)
            await agent.wait_serving(REFS["scaled"].sha256, timeout=5)
            await until(lambda: agent.updater.machine.history[-1] is S.IDLE, agent)
        finally:
            loop.cancel()
        assert traffic.failures == []
        assert agent.state.state.active == REFS["scaled"] and agent.state.state.previous == REFS["identity"]
        assert agent.updater.machine.history == [
            S.IDLE, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL, S.COMMITTING, S.IDLE,
        ]  # fmt: skip

    run(scenario())


def test_the_restored_model_is_the_committed_one_not_the_trial(tmp_path: Path) -> None:
    async def scenario() -> None:
        await crash_during_trial(tmp_path)
        agent = make_agent(tmp_path)
        await agent.restore()
        assert agent.active_model is not None and agent.active_model.ref == REFS["identity"]

    run(scenario())


def test_a_crash_loop_during_a_trial_counts_as_a_failed_trial(tmp_path: Path) -> None:
    async def scenario() -> None:
        await crash_during_trial(tmp_path)
        for _ in range(TRIAL.max_restarts):
            agent, loop = await restarted(tmp_path)
            await until(lambda a=agent: a.updater.machine.state is S.TRIAL, agent)
            loop.cancel()  # it crashes again during the trial
            await asyncio.gather(loop, return_exceptions=True)
        agent, loop = await restarted(tmp_path)
        try:
            await until(lambda: agent.updater.machine.state is S.ROLLED_BACK, agent)
        finally:
            loop.cancel()
        assert agent.updater.machine.history == [S.IDLE, S.ROLLING_BACK, S.ROLLED_BACK]
        (rolled,) = [e for e in events(agent) if e.kind == K.EVENT_KIND_ROLLED_BACK]
        assert rolled.details["gate"] == "crash_loop" and rolled.details["restarts"] == "3"
        assert "restarted 3 times during the trial of clf:scaled (limit 2)" in rolled.reason
        saved = agent.state.state
        assert saved.active == REFS["identity"] and saved.trial is None and saved.update is None
        assert saved.refusal(REFS["scaled"].sha256) is not None
        assert agent.active_model is not None and agent.active_model.ref == REFS["identity"]

    run(scenario())


def test_a_clean_stop_during_a_trial_is_not_a_crash(tmp_path: Path) -> None:
    async def scenario() -> None:
        await crash_during_trial(tmp_path)
        for _ in range(TRIAL.max_restarts + 2):
            agent, loop = await restarted(tmp_path)
            await until(lambda a=agent: a.updater.machine.state is S.TRIAL, agent)
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            agent.updater.mark_clean_stop()  # what Agent.run does on SIGTERM
        record = agent.state.state.update
        assert record is not None and record.restarts == 1 and record.clean_stop

    run(scenario())


def test_state_looping_is_detected_and_rolls_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        # An update that keeps the device restarting in LOADING, near the end of its saves.
        record = UpdateRecord(state="loading", desired=desired("scaled", 2), saves=28, restarts=9)
        agent.state.update(update=record)
        events(agent)
        agent, loop = await restarted(tmp_path)
        try:
            await until(lambda: agent.updater.machine.state is S.ROLLED_BACK, agent)
        finally:
            loop.cancel()
        assert agent.updater.machine.history == [
            S.IDLE, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ROLLING_BACK, S.ROLLED_BACK,
        ]  # fmt: skip
        (rolled,) = [e for e in events(agent) if e.kind == K.EVENT_KIND_ROLLED_BACK]
        assert (
            "state looping detected: generation 2 saved its update state 31 times (limit 30), "
            "the last time entering LOADING" in rolled.reason
        )
        assert rolled.details["gate"] == "state_loop"
        assert agent.state.state.refusal(REFS["scaled"].sha256) is not None
        assert agent.active_model is not None and agent.active_model.ref == REFS["identity"]

    run(scenario())


def test_an_interrupted_rollback_is_finished_with_its_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        record = UpdateRecord(
            state="rolling_back",
            desired=desired("constant", 2),
            saves=6,
            reason="predicted-class distribution diverges",
            details=(("gate", "divergence"), ("js_divergence", "0.7")),
        )
        agent.state.update(update=record, trial=REFS["constant"])
        agent, loop = await restarted(tmp_path)
        try:
            await until(lambda: agent.updater.machine.state is S.ROLLED_BACK, agent)
        finally:
            loop.cancel()
        (rolled,) = [e for e in events(agent) if e.kind == K.EVENT_KIND_ROLLED_BACK]
        assert rolled.details["gate"] == "divergence" and rolled.details["js_divergence"] == "0.7"
        assert agent.state.state.trial is None

    run(scenario())


def test_a_download_cut_by_a_crash_resumes_from_its_bytes_without_the_broker(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        fetcher = agent.updater.steps.fetcher
        fetcher.break_at[REFS["scaled"].sha256] = 100  # type: ignore[attr-defined]
        assert not await agent.updater.apply(desired("scaled", 2))
        # The failed attempt cleared its record; a crash while downloading leaves one behind.
        agent.state.update(update=UpdateRecord(state="downloading", desired=desired("scaled", 2), saves=1))
        agent, loop = await restarted(tmp_path)
        try:
            await until(lambda: agent.updater.machine.state is S.TRIAL, agent)
        finally:
            loop.cancel()
        assert [offset for _, offset, _ in agent.updater.steps.fetcher.calls] == [128]  # type: ignore[attr-defined]

    run(scenario())
