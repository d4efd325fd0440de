"""Label feedback: ids on predictions, one label each, bounded and expiring, counted per window.

FeedbackStore runs on a FakeClock; the agent tests use a real agent (FakeFetcher, real
onnxruntime) on the 4-class identity classifier. The gRPC side is in test_local_api.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, SketchConfig, TrialConfig
from edge_agent.errors import (
    DuplicateLabelError,
    FeedbackError,
    LabelError,
    UnknownPredictionError,
)
from edge_agent.feedback import FeedbackStore
from edge_agent.sketching import OutputSlot, RowBuffer
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import desired_pb2, sketch_pb2
from tests.unit.agent.fakes import (
    CLASSES,
    NO_TRIAL,
    FakeClock,
    FakeFetcher,
    classifier_model,
    one_hot_rows,
    ref_for,
)

UNSIGNED = TrustConfig(require_signed=False)
IDENTITY, SCALED = classifier_model("identity"), classifier_model("scaled")
REF = ref_for(IDENTITY, version="1")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def slot(scores: list[float]) -> OutputSlot:
    return RowBuffer.of(np.array([scores], np.float32)), 0, 1


def store(clock: FakeClock, capacity: int = 8, ttl_s: float = 60.0) -> FeedbackStore:
    return FeedbackStore(capacity=capacity, ttl_s=ttl_s, clock=clock, prefix="run1-")


def test_a_label_says_whether_the_prediction_was_right() -> None:
    clock = FakeClock()
    s = store(clock)
    right = s.remember(REF, slot([0.1, 0.2, 3.0, 0.0]), clock.monotonic())
    wrong = s.remember(REF, slot([5.0, 0.2, 3.0, 0.0]), clock.monotonic())
    assert right != wrong and right.startswith("run1-")
    result = s.label(right, 2)
    assert (result.model, result.correct, result.predicted, result.label) == (REF, True, 2, 2)
    result = s.label(wrong, np.int64(2))  # type: ignore[arg-type]  # numpy integers are class ids too
    assert (result.correct, result.predicted, result.label) == (False, 0, 2)


@pytest.mark.parametrize(
    "prediction_id", ["", "run1-", "run1-x", "run1-0", "run1-99", "run0-1", "1", "run1-²"]
)
def test_ids_never_issued_are_not_found(prediction_id: str) -> None:
    clock = FakeClock()
    s = store(clock)
    s.remember(REF, slot([1.0, 0.0]), clock.monotonic())
    with pytest.raises(UnknownPredictionError, match="unknown prediction id"):
        s.label(prediction_id, 0)


def test_the_oldest_prediction_is_forgotten_first() -> None:
    clock = FakeClock()
    s = store(clock, capacity=3)
    ids = [s.remember(REF, slot([1.0, 0.0]), clock.monotonic()) for _ in range(4)]
    with pytest.raises(UnknownPredictionError, match="among its last 3 predictions"):
        s.label(ids[0], 0)
    assert all(s.label(i, 0).correct for i in ids[1:])


def test_a_prediction_older_than_the_ttl_is_expired() -> None:
    clock = FakeClock()
    s = store(clock, ttl_s=60.0)
    old = s.remember(REF, slot([1.0, 0.0]), clock.monotonic())
    clock.advance(30)
    fresh = s.remember(REF, slot([1.0, 0.0]), clock.monotonic())
    clock.advance(31)
    with pytest.raises(UnknownPredictionError, match=f"prediction {old} expired: labels are taken for 60 s"):
        s.label(old, 0)
    assert s.label(fresh, 0).correct


def test_a_second_label_is_refused_and_keeps_the_first() -> None:
    clock = FakeClock()
    s = store(clock)
    pid = s.remember(REF, slot([1.0, 0.0]), clock.monotonic())
    assert s.label(pid, 1).correct is False
    with pytest.raises(DuplicateLabelError, match=f"prediction {pid} already has label 1"):
        s.label(pid, 0)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (4, r"label 4 is not a class of linear:1: expected a class id in 0\.\.3"),
        (-1, r"label -1 is not a class of linear:1"),
        (1.0, "expected an integer class id as the label, got float 1.0"),
        (True, "expected an integer class id as the label, got bool True"),
    ],
)
def test_a_label_outside_the_models_classes_is_refused(label: Any, message: str) -> None:
    clock = FakeClock()
    s = store(clock)
    pid = s.remember(REF, slot([1.0, 0.0, 0.0, 0.0]), clock.monotonic())
    with pytest.raises(LabelError, match=message):
        s.label(pid, label)
    assert s.label(pid, 0).correct  # a refused label does not use the prediction up


def test_predictions_without_one_row_of_class_scores_take_no_label() -> None:
    clock = FakeClock()
    s = store(clock)
    batch = s.remember(REF, (RowBuffer.of(np.zeros((2, 4), np.float32)), 0, 2), clock.monotonic())
    with pytest.raises(LabelError, match="answered 2 rows: expected a one-row prediction"):
        s.label(batch, 0)
    scalar = s.remember(REF, (RowBuffer.of(np.zeros((1, 1), np.float32)), 0, 1), clock.monotonic())
    with pytest.raises(LabelError, match="has no class scores"):
        s.label(scalar, 0)


def test_feedback_errors_share_a_root() -> None:
    for error in (UnknownPredictionError, DuplicateLabelError, LabelError):
        assert issubclass(error, FeedbackError)


# -- through the agent ------------------------------------------------------------------------------


async def agent_serving(root: Path, clock: FakeClock, trial: TrialConfig = NO_TRIAL) -> Agent:
    fetcher = FakeFetcher()
    fetcher.add(IDENTITY)
    fetcher.add(SCALED)
    config = AgentConfig.for_simulation(
        device_id="dev-1", fleet="f1", state_dir=root, trial=NO_TRIAL, trust=UNSIGNED
    )
    config = replace(config, sketch=SketchConfig(feedback_capacity=100, feedback_ttl_s=600.0))
    agent = Agent(config, clock=clock, fetcher=fetcher)
    assert await agent.updater.apply(
        desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=1, model=REF)
    )
    agent.updater.steps.trial = trial  # the first version commits at once; later ones take this trial
    return agent


def sketch_windows(agent: Agent) -> list[sketch_pb2.SketchWindow]:
    out: list[sketch_pb2.SketchWindow] = []
    while (message := agent.outbox.peek()) is not None:
        if message.topic == agent.topics.sketch:
            out.extend(sketch_pb2.SketchBatch.FromString(message.payload).windows)
        agent.outbox.ack(message)
    return out


def test_labels_count_into_the_open_windows_confusion_cells(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        agent = await agent_serving(tmp_path, clock)
        predictions = [agent.predict({"x": one_hot_rows([c])}) for c in (0, 1, 2, 3, 3)]
        assert len({p.id for p in predictions}) == 5 and all(p.id for p in predictions)
        results = [agent.feedback(p.id, label) for p, label in zip(predictions, (0, 1, 2, 2, 3), strict=True)]
        assert [r.correct for r in results] == [True, True, True, False, True]
        assert all(r.model == REF for r in results)
        with pytest.raises(DuplicateLabelError):
            agent.feedback(predictions[0].id, 0)
        clock.advance(601)
        with pytest.raises(UnknownPredictionError, match="expired"):
            agent.feedback(predictions[4].id, 3)  # labelled already, but expiry is checked first
        agent._queue_window()
        agent.sketches.flush()
        (window,) = sketch_windows(agent)
        ((labels),) = window.labels
        assert (labels.model_version, labels.labelled) == ("1", 5)
        cells = {(c.actual, c.predicted): c.count for c in labels.cells}
        assert cells == {(0, 0): 1, (1, 1): 1, (2, 2): 1, (2, 3): 1, (3, 3): 1}
        # The next window starts from zero.
        agent.predict({"x": one_hot_rows([1])})
        agent._queue_window()
        agent.sketches.flush()
        (later,) = sketch_windows(agent)
        assert list(later.labels) == []

    run(scenario())


def test_a_label_that_arrives_after_the_window_closed_goes_into_the_next_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = await agent_serving(tmp_path, FakeClock())
        prediction = agent.predict({"x": one_hot_rows([2])})
        agent._queue_window()
        agent.sketches.flush()
        (first,) = sketch_windows(agent)
        assert list(first.labels) == []
        agent.feedback(prediction.id, 1)
        agent._queue_window(final=True)  # a shutdown with no request since still reports the label
        agent.sketches.flush()
        (second,) = sketch_windows(agent)
        assert second.seq == first.seq + 1 and second.samples == 0
        assert [(c.actual, c.predicted) for c in second.labels[0].cells] == [(1, 2)]

    run(scenario())


def test_predictions_during_a_trial_carry_ids_of_the_version_that_answered(tmp_path: Path) -> None:
    async def scenario() -> None:
        trial = TrialConfig(window_requests=3, window_s=0, min_requests=1)
        agent = await agent_serving(tmp_path, FakeClock(), trial)
        v2 = ref_for(SCALED, version="2")
        apply = asyncio.create_task(
            agent.updater.apply(
                desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=2, model=v2)
            )
        )
        await agent.wait_serving(v2.sha256, timeout=10)  # serve mode: the new version answers
        assert agent.serving.trial is not None
        prediction = agent.predict({"x": one_hot_rows([3])})
        assert prediction.model.version == "2" and prediction.id
        result = agent.feedback(prediction.id, 3)
        assert (result.model.version, result.correct) == ("2", True)
        for c in (0, 1):  # the rest of the trial window: the version is committed
            agent.predict({"x": one_hot_rows([c])})
        assert await apply
        assert agent.feedback(agent.predict({"x": one_hot_rows([1])}).id, 1).model == v2

    run(scenario())


def test_every_class_id_of_the_model_is_a_valid_label(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = await agent_serving(tmp_path, FakeClock())
        for label in range(CLASSES):
            assert agent.feedback(agent.predict({"x": one_hot_rows([0])}).id, label).correct == (label == 0)
        with pytest.raises(LabelError, match=r"expected a class id in 0\.\.3"):
            agent.feedback(agent.predict({"x": one_hot_rows([0])}).id, CLASSES)

    run(scenario())
