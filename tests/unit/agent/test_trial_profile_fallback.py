"""A new architecture without a data profile of its own is judged against the previous version's profile.

A new graph is never judged against the previous model's answers (its p95 or its disagreement), but
with the same outputs it serves the same task, so the class distribution the previous version's data
profile measured is still the baseline: a new graph that always gives one answer must not pass on
latency and errors alone. Real onnxruntime with tiny 4-class models; fake hub and clock in memory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, TrialConfig
from edge_agent.trust.config import TrustConfig
from edge_agent.update_machine import UpdateState
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2
from model_tools.profile import PROFILE_MEDIA_TYPE, build_profile
from tests.unit.agent.fakes import CLASSES, FakeClock, FakeFetcher, classifier_model, one_hot_rows, ref_for

K = event_pb2.EventKind
S = UpdateState
TRIAL = TrialConfig(window_requests=48, window_s=600, min_requests=16)


def two_layer_model(kind: str) -> bytes:
    """Another graph with the same input and output as ``classifier_model``: x -> Relu -> MatMul -> Add.

    ``honest``: the class is the argmax of the input (what the previous version answers);
    ``constant``: always class 2.
    """
    eye = np.eye(CLASSES, dtype=np.float32)
    w, b = (eye, np.zeros(CLASSES, np.float32)) if kind == "honest" else (0 * eye, 10 * eye[2])
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("MatMul", ["r", "W"], ["rw"]),
            helper.make_node("Add", ["rw", "b"], ["y"]),
        ],
        f"two_layer_{kind}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", CLASSES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def run_trial(root: Path, kind: str, *, previous_profile: bool) -> tuple[bool, list[event_pb2.Event]]:
    fetcher = FakeFetcher()
    first = classifier_model("identity")
    fetcher.add(first)
    ref1 = ref_for(first, name="clf", version="1")
    if previous_profile:
        x = one_hot_rows([i % CLASSES for i in range(400)])
        profile = build_profile(
            model_name="clf", model_version="1", dataset_hash="0" * 64,
            x=x, predicted=x.argmax(axis=1), num_classes=CLASSES,
        )  # fmt: skip
        blob = profile.SerializeToString()
        sha = fetcher.add(blob)
        ref1.profile.CopyFrom(
            common_pb2.ArtifactRef(sha256=sha, length=len(blob), media_type=PROFILE_MEDIA_TYPE)
        )
    second = two_layer_model(kind)
    fetcher.add(second)
    ref2 = ref_for(second, name="clf", version=f"2-{kind}")  # no profile of its own
    config = AgentConfig.for_simulation(
        device_id="dev-1", fleet="f1", state_dir=root, trial=TRIAL, trust=TrustConfig(require_signed=False)
    )
    agent = Agent(config, clock=FakeClock(), fetcher=fetcher)

    async def scenario() -> bool:
        updater = agent.updater
        # The first version is committed without a trial: there is nothing to compare it with.
        trial, updater.steps.trial = updater.steps.trial, TrialConfig(window_requests=0, window_s=0)
        try:
            first_state = desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=1, model=ref1)
            assert await asyncio.wait_for(updater.apply(first_state), 10)
        finally:
            updater.steps.trial = trial
        seen = len(updater.machine.history)
        task = asyncio.create_task(
            updater.apply(desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=2, model=ref2))
        )
        await updater.wait_until(lambda: S.TRIAL in updater.machine.history[seen:], timeout=10)
        for i in range(48):
            agent.predict({"x": one_hot_rows([i % CLASSES])})
            if task.done():
                break
        return await asyncio.wait_for(task, 10)

    kept = asyncio.run(scenario())
    events = []
    while (message := agent.outbox.peek()) is not None:
        if message.topic == agent.topics.events:
            events.append(event_pb2.Event.FromString(message.payload))
        agent.outbox.ack(message)
    return kept, [e for e in events if e.model.version == ref2.version]


def _started(events: list[event_pb2.Event]) -> event_pb2.Event:
    return next(e for e in events if e.kind == K.EVENT_KIND_TRIAL_STARTED)


def test_a_new_graph_that_always_gives_one_answer_is_rolled_back_on_the_previous_profile(
    tmp_path: Path,
) -> None:
    kept, events = run_trial(tmp_path, "constant", previous_profile=True)
    assert not kept
    started = _started(events)
    assert started.details["architecture"] == "changed"
    assert started.details["baseline"] == "profile"
    assert "clf:1's profile" in started.details["profile"]
    rolled = [e for e in events if e.kind == K.EVENT_KIND_ROLLED_BACK]
    assert len(rolled) == 1 and "distribution" in rolled[0].reason, rolled[0].reason


def test_an_honest_new_graph_passes_against_the_previous_profile(tmp_path: Path) -> None:
    kept, events = run_trial(tmp_path, "honest", previous_profile=True)
    assert kept, [e.reason for e in events]
    assert "clf:1's profile" in _started(events).details["profile"]


def test_without_any_profile_a_new_graph_is_judged_on_its_own(tmp_path: Path) -> None:
    kept, events = run_trial(tmp_path, "constant", previous_profile=False)
    assert kept, "no baseline to judge its answers by: latency, errors and finite outputs only"
    assert "profile" not in _started(events).details
