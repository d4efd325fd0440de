"""Trials through the agent: a new version is judged on live requests and kept or rolled back on its own.

In-process predictions drive the trial (real onnxruntime, tiny 4-class models); the fake hub
and the fake clock are in memory. Every request gets an answer: a version that fails a gate is
replaced inside the request that tripped it, and the rollback is reported with its figures.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, TrialConfig, TrialMode
from edge_agent.trust.config import TrustConfig
from edge_agent.update_machine import UpdateState
from edgefleet_proto.v1 import desired_pb2, device_pb2, event_pb2
from tests.unit.agent.fakes import FakeClock, FakeFetcher, classifier_model, one_hot_rows, ref_for
from tests.unit.agent.harness import run

K = event_pb2.EventKind
S = UpdateState
MODELS = {kind: classifier_model(kind) for kind in ("identity", "scaled", "constant", "shifted", "nan")}
REFS = {kind: ref_for(data, name="clf", version=kind) for kind, data in MODELS.items()}
TRIAL = TrialConfig(window_requests=48, window_s=600, min_requests=16)

UNSIGNED = TrustConfig(require_signed=False)


def make_agent(root: Path, trial: TrialConfig = TRIAL, clock: FakeClock | None = None) -> Agent:
    fetcher = FakeFetcher()
    for data in MODELS.values():
        fetcher.add(data)
    # Bare desired states here; tests/adversarial covers signed ones.
    config = AgentConfig.for_simulation(
        device_id="dev-1", fleet="f1", state_dir=root, trial=trial, trust=UNSIGNED
    )
    return Agent(config, clock=clock or FakeClock(), fetcher=fetcher)


def desired(kind: str, generation: int) -> desired_pb2.DesiredState:
    return desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=generation, model=REFS[kind])


def events(agent: Agent) -> list[event_pb2.Event]:
    out = []
    while (message := agent.outbox.peek()) is not None:
        if message.topic == agent.topics.events:
            out.append(event_pb2.Event.FromString(message.payload))
        agent.outbox.ack(message)
    return out


async def serve_first(agent: Agent) -> None:
    """Commit the identity model (no trial: nothing to compare with) and forget its events."""
    updater = agent.updater
    trial, updater.steps.trial = updater.steps.trial, TrialConfig(window_requests=0, window_s=0)
    try:
        assert await updater.apply(desired("identity", 1))
    finally:
        updater.steps.trial = trial
    events(agent)
    updater.machine.history[:] = [updater.machine.state]


class Traffic:
    """Predictions through the agent while it is on trial; records who answered and any failure."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.answered_by: list[str] = []
        self.failures: list[Exception] = []

    def send(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            x = one_hot_rows([i % 4])
            try:
                result = self.agent.predict({"x": x})
            except Exception as e:  # counted: the test says there must be none
                self.failures.append(e)
                continue
            assert np.isfinite(result.outputs["y"]).all()
            self.answered_by.append(result.model.version)


async def start_trial(agent: Agent, kind: str, generation: int = 2) -> asyncio.Task[bool]:
    history = agent.updater.machine.history
    seen = len(history)
    task = asyncio.create_task(agent.updater.apply(desired(kind, generation)))
    # This attempt either reaches its trial or comes to rest without one.
    await agent.updater.wait_until(
        lambda: any(st in (S.TRIAL, S.FAILED, S.ROLLED_BACK) for st in history[seen:]), timeout=10
    )
    assert agent.updater.machine.state is S.TRIAL, [e.reason for e in events(agent)]
    return task


def test_a_good_version_serves_during_its_trial_and_is_committed(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        task = await start_trial(agent, "scaled")
        status = agent.status(device_pb2.DEVICE_STATE_ONLINE)
        assert [(s.name, s.model.version) for s in status.slots] == [
            ("active", "scaled"),
            ("previous", "identity"),
            ("trial", "scaled"),
        ]
        assert status.trial.mode == "serve" and status.trial.window_requests == 48
        assert agent.health() == "trial: clf:scaled (serve, 0/48 requests)"
        traffic = Traffic(agent)
        traffic.send(48)
        assert await task
        assert traffic.failures == [] and set(traffic.answered_by) == {"scaled"}
        assert agent.updater.machine.history == [
            S.IDLE, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL, S.COMMITTING, S.IDLE,
        ]  # fmt: skip
        got = events(agent)
        assert [e.kind for e in got][-3:] == [
            K.EVENT_KIND_ACTIVATED,
            K.EVENT_KIND_TRIAL_STARTED,
            K.EVENT_KIND_COMMITTED,
        ]
        committed = got[-1]
        assert committed.details["requests"] == "48" and committed.details["js_divergence"] == "0"
        assert committed.details["baseline"] == "previous"
        saved = agent.state.state
        assert (saved.active, saved.previous, saved.trial, saved.update) == (
            REFS["scaled"],
            REFS["identity"],
            None,
            None,
        )
        assert agent.health() == "serving" and agent.updater.trial is None

    run(scenario())


@pytest.mark.parametrize(
    ("kind", "gate", "reason", "failing_request"),
    [
        ("nan", "nonfinite", "returned NaN or inf", 1),
        ("constant", "divergence", "predicted-class distribution diverges", 16),
    ],
)
def test_a_bad_version_is_rolled_back_inside_the_request_that_tripped_the_gate(
    tmp_path: Path, kind: str, gate: str, reason: str, failing_request: int
) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        task = await start_trial(agent, kind)
        traffic = Traffic(agent)
        traffic.send(failing_request)
        # The swap back happened in the request itself, before the updater ran again.
        assert agent.active_model is not None and agent.active_model.ref == REFS["identity"]
        assert traffic.answered_by[-1] == "identity"
        traffic.send(10, start=failing_request)
        assert await task is False
        assert traffic.failures == []
        assert set(traffic.answered_by[failing_request - 1 :]) == {"identity"}
        assert agent.updater.machine.state is S.ROLLED_BACK
        rolled = [e for e in events(agent) if e.kind == K.EVENT_KIND_ROLLED_BACK]
        assert len(rolled) == 1 and rolled[0].model == REFS[kind] and rolled[0].generation == 2
        assert reason in rolled[0].reason and rolled[0].reason.startswith(f"clf:{kind} rolled back: ")
        details = rolled[0].details
        assert (
            details["gate"] == gate and details["refused"] == "true" and details["serving"] == "clf:identity"
        )
        assert float(details["swap_ms"]) < 50
        assert details["requests"] == str(failing_request)
        saved = agent.state.state
        assert saved.active == REFS["identity"] and saved.trial is None and saved.update is None
        assert [r.sha256 for r in saved.refused] == [REFS[kind].sha256] and saved.applied_generation == 2
        assert agent.health().startswith(f"degraded: clf:{kind} rolled back: ")
        # The refused artifact is gone from the disk.
        assert not agent.store.has(REFS[kind].sha256) and agent.store.has(REFS["identity"].sha256)

    run(scenario())


def test_a_rolled_back_version_is_refused_until_another_one_is_assigned(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        task = await start_trial(agent, "nan")
        Traffic(agent).send(1)
        assert await task is False
        events(agent)
        agent.on_desired(desired("nan", 2).SerializeToString())  # the retained copy on reconnect
        assert events(agent) == []
        agent.on_desired(desired("nan", 3).SerializeToString())  # assigned again: refused, said why
        (refused,) = events(agent)
        assert refused.kind == K.EVENT_KIND_DESIRED_REJECTED and refused.generation == 3
        assert "was rolled back on this device at generation 2" in refused.reason
        assert "refusing it until the hub assigns another version" in refused.reason
        assert agent.state.state.applied_generation == 3
        # Another version goes through.
        task = await start_trial(agent, "scaled", generation=4)
        Traffic(agent).send(48)
        assert await task

    run(scenario())


def test_shadow_mode_keeps_the_previous_version_answering_and_catches_disagreement(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path, replace(TRIAL, mode=TrialMode.SHADOW))
        await serve_first(agent)
        task = await start_trial(agent, "shifted")
        status = agent.status(device_pb2.DEVICE_STATE_ONLINE)
        assert [(s.name, s.model.version) for s in status.slots] == [
            ("active", "identity"),
            ("previous", "identity"),
            ("trial", "shifted"),
        ]
        traffic = Traffic(agent)
        traffic.send(24)
        assert await task is False
        assert traffic.failures == [] and set(traffic.answered_by) == {"identity"}
        (rolled,) = [e for e in events(agent) if e.kind == K.EVENT_KIND_ROLLED_BACK]
        assert rolled.details["gate"] == "disagreement" and rolled.details["disagreement"] == "1"
        # Same class shares: the distribution gate alone would not have seen it.
        assert rolled.details["js_divergence"] == "0"

    run(scenario())


def test_shadow_mode_commit_swaps_the_new_version_in_only_then(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path, replace(TRIAL, mode=TrialMode.SHADOW))
        await serve_first(agent)
        task = await start_trial(agent, "scaled")
        traffic = Traffic(agent)
        traffic.send(48)
        assert await task
        assert set(traffic.answered_by) == {"identity"}
        assert agent.active_model is not None and agent.active_model.ref == REFS["scaled"]
        kinds = [e.kind for e in events(agent)]
        assert kinds.index(K.EVENT_KIND_TRIAL_STARTED) < kinds.index(K.EVENT_KIND_ACTIVATED)

    run(scenario())


def test_a_trial_without_traffic_ends_on_time_and_says_it_judged_little(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        agent = make_agent(tmp_path, replace(TRIAL, window_s=30), clock)
        await serve_first(agent)
        task = await start_trial(agent, "scaled")
        Traffic(agent).send(3)
        clock.advance(31)
        agent.updater.poke()
        assert await task
        (committed,) = [e for e in events(agent) if e.kind == K.EVENT_KIND_COMMITTED]
        assert committed.details["judged"] == "false" and "only 3 request(s)" in committed.reason

    run(scenario())


def test_a_newer_desired_state_naming_the_previous_version_withdraws_the_trial(tmp_path: Path) -> None:
    """The hub restores what served before (an aborted rollout): the candidate is set aside unjudged,
    never kept, never refused, and the previous version serves again without a trial of its own."""

    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        loop = asyncio.create_task(agent.updater.run())
        try:
            agent.on_desired(desired("scaled", 2).SerializeToString())
            await agent.updater.wait_until(lambda: agent.updater.trial is not None, timeout=10)
            Traffic(agent).send(5)
            agent.on_desired(desired("identity", 3).SerializeToString())
            await agent.wait_serving(REFS["identity"].sha256, timeout=5)
            await agent.updater.wait_until(lambda: agent.state.state.applied_generation == 3, timeout=10)
        finally:
            loop.cancel()
        got = events(agent)
        (withdrawn,) = [e for e in got if e.kind == K.EVENT_KIND_TRIAL_WITHDRAWN]
        assert withdrawn.generation == 2 and withdrawn.model.sha256 == REFS["scaled"].sha256
        assert "withdrawn by generation 3, which names clf:identity" in withdrawn.reason
        assert not [e for e in got if e.kind in (K.EVENT_KIND_COMMITTED, K.EVENT_KIND_ROLLED_BACK)]
        assert not [e for e in got if e.kind == K.EVENT_KIND_TRIAL_STARTED and e.generation == 3]
        assert agent.state.state.active == REFS["identity"]
        assert agent.state.state.refused == ()
        assert agent.updater.trial is None and not agent.updater.last_failure

    run(scenario())


def test_a_third_version_is_judged_against_the_version_that_served_before_the_withdrawn_one(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        loop = asyncio.create_task(agent.updater.run())
        try:
            agent.on_desired(desired("scaled", 2).SerializeToString())
            await agent.updater.wait_until(lambda: agent.updater.trial is not None, timeout=10)
            agent.on_desired(desired("shifted", 3).SerializeToString())
            await agent.updater.wait_until(
                lambda: (
                    agent.updater.trial is not None and agent.updater.trial.candidate.ref == REFS["shifted"]
                ),
                timeout=10,
            )
            trial = agent.updater.trial
            assert trial is not None and trial.previous is not None
            assert trial.previous.ref == REFS["identity"]
        finally:
            loop.cancel()
        kinds = [(e.kind, e.generation) for e in events(agent)]
        assert (K.EVENT_KIND_TRIAL_WITHDRAWN, 2) in kinds and (K.EVENT_KIND_COMMITTED, 2) not in kinds

    run(scenario())


def test_a_newer_generation_of_the_same_version_lets_the_trial_run_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        loop = asyncio.create_task(agent.updater.run())
        try:
            agent.on_desired(desired("scaled", 2).SerializeToString())
            await agent.updater.wait_until(lambda: agent.updater.trial is not None, timeout=10)
            agent.on_desired(desired("scaled", 3).SerializeToString())
            Traffic(agent).send(TRIAL.window_requests)
            await agent.updater.wait_until(lambda: agent.state.state.applied_generation == 3, timeout=10)
        finally:
            loop.cancel()
        got = events(agent)
        (committed,) = [e for e in got if e.kind == K.EVENT_KIND_COMMITTED]
        assert committed.generation == 2
        assert not [e for e in got if e.kind == K.EVENT_KIND_TRIAL_WITHDRAWN]
        assert agent.state.state.active == REFS["scaled"]

    run(scenario())


def test_metrics_endpoint_describes_the_trial(tmp_path: Path) -> None:
    from edge_agent.metrics import render

    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        task = await start_trial(agent, "scaled")
        Traffic(agent).send(5)
        text = render(agent).decode()
        assert 'edgefleet_agent_trial_active{device="dev-1",fleet="f1"} 1.0' in text
        assert 'edgefleet_agent_trial_requests{device="dev-1",fleet="f1"} 5.0' in text
        assert 'edgefleet_agent_update_state{device="dev-1",fleet="f1",state="trial"} 1.0' in text
        assert 'slot="trial",version="scaled"' in text
        assert 'edgefleet_agent_requests_total{device="dev-1",fleet="f1"} 5.0' in text
        Traffic(agent).send(43)
        assert await task

    run(scenario())
