"""Drift sketches: one SketchWindow per closed telemetry window, built in bulk off the request path.

The agent tests run a real agent (FakeFetcher, FakeClock, real onnxruntime) on a 4-class
classifier whose bundle carries a real DataProfile; the recorder tests drive
SketchRecorder directly with a fixed feature spec.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datasketches import kll_floats_sketch  # type: ignore[import-untyped]

import edge_agent.sketching as sketching
import edge_agent.window_sketch as window_sketch
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, SketchConfig, load_config
from edge_agent.errors import ConfigError
from edge_agent.feedback import FeedbackStore
from edge_agent.sketching import SketchRecorder
from edge_agent.store import ArtifactStore
from edge_agent.trust.config import TrustConfig
from edge_agent.window_sketch import FeatureSpec, ProfileSpecs, default_spec, top1
from edgefleet_proto.v1 import common_pb2, desired_pb2, profile_pb2, sketch_pb2, telemetry_pb2
from model_tools.profile import PROFILE_MEDIA_TYPE, build_profile
from tests.loop_turns import scheduled_callbacks_ran
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
MODEL = classifier_model("identity")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def make_profile(reduction: str, image_shape: tuple[int, ...] | None) -> profile_pb2.DataProfile:
    x = np.random.default_rng(0).random((200, CLASSES), dtype=np.float32)
    return build_profile(
        model_name="linear",
        model_version="1",
        dataset_hash="h",
        x=x,
        predicted=x.argmax(axis=1),
        num_classes=CLASSES,
        image_shape=image_shape,
        reduction=reduction,
    )


async def agent_serving(
    root: Path, profile: profile_pb2.DataProfile | None = None, sketch: SketchConfig | None = None
) -> Agent:
    """An agent serving the identity classifier (with ``profile`` in its bundle, if given)."""
    fetcher = FakeFetcher()
    fetcher.add(MODEL)
    ref = ref_for(MODEL)
    if profile is not None:
        blob = profile.SerializeToString()
        sha = fetcher.add(blob)
        ref.profile.CopyFrom(
            common_pb2.ArtifactRef(sha256=sha, length=len(blob), media_type=PROFILE_MEDIA_TYPE)
        )
    config = AgentConfig.for_simulation(
        device_id="dev-1", fleet="f1", state_dir=root, trial=NO_TRIAL, trust=UNSIGNED
    )
    if sketch is not None:
        config = replace(config, sketch=sketch)
    agent = Agent(config, clock=FakeClock(), fetcher=fetcher)
    desired = desired_pb2.DesiredState(device_id="dev-1", fleet="f1", generation=1, model=ref)
    assert await agent.updater.apply(desired)
    return agent


def published(agent: Agent) -> tuple[list[telemetry_pb2.TelemetryWindow], list[sketch_pb2.SketchWindow]]:
    telemetry: list[telemetry_pb2.TelemetryWindow] = []
    sketches: list[sketch_pb2.SketchWindow] = []
    while (message := agent.outbox.peek()) is not None:
        if message.topic == agent.topics.telemetry:
            telemetry.extend(telemetry_pb2.TelemetryBatch.FromString(message.payload).windows)
        elif message.topic == agent.topics.sketch:
            batch = sketch_pb2.SketchBatch.FromString(message.payload)
            assert batch.device_id == "dev-1"
            sketches.extend(batch.windows)
        agent.outbox.ack(message)
    return telemetry, sketches


@pytest.mark.parametrize(
    ("reduction", "image_shape"),
    [("columns", None), ("image_summary", (1, 2, 2)), ("channel_means", (2, 2))],
)
def test_a_closed_window_yields_a_sketch_with_its_seq_and_model_and_the_profiles_features(
    tmp_path: Path, reduction: str, image_shape: tuple[int, ...] | None
) -> None:
    profile = make_profile(reduction, image_shape)

    async def scenario() -> None:
        agent = await agent_serving(tmp_path, profile)
        classes = [0, 1, 2, 3, 3, 3] * 50
        for c in classes:
            agent.predict({"x": one_hot_rows([c])})
        agent._queue_window()
        agent.sketches.flush()
        (window,), (sketch,) = published(agent)
        assert (sketch.seq, sketch.window_start_ms, sketch.window_end_ms) == (
            window.seq,
            window.window_start_ms,
            window.window_end_ms,
        )
        assert (
            (sketch.model_name, sketch.model_version)
            == ("linear", "1")
            == (
                window.model_name,
                window.model_version,
            )
        )
        assert sketch.reduction == reduction and sketch.samples == len(classes)
        assert [f.name for f in sketch.features] == [f.name for f in profile.features]
        assert all(f.count == len(classes) for f in sketch.features)
        assert list(sketch.class_counts) == [50, 50, 50, 150]
        confidence = kll_floats_sketch.deserialize(sketch.confidence_kll)
        assert confidence.n == len(classes) and 0.25 < confidence.get_min_value() <= 1.0

    run(scenario())


def test_the_config_reduction_wins_over_the_profiles(tmp_path: Path) -> None:
    profile = make_profile("image_summary", (1, 2, 2))

    async def scenario() -> None:
        agent = await agent_serving(tmp_path, profile, SketchConfig(reduction="columns"))
        agent.predict({"x": one_hot_rows([1, 2])})
        agent._queue_window()
        agent.sketches.flush()
        _, (sketch,) = published(agent)
        assert sketch.reduction == "columns"
        assert [f.name for f in sketch.features] == ["f0", "f1", "f2", "f3"]

    run(scenario())


def test_a_window_that_sketched_nothing_sends_no_sketch(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = await agent_serving(tmp_path)
        published(agent)
        agent._queue_window()
        agent.sketches.flush()
        telemetry, sketches = published(agent)
        assert len(telemetry) == 1 and telemetry[0].requests == 0
        assert sketches == []

    run(scenario())


def test_a_swap_closes_the_sketch_window_of_the_old_model_and_sends_it_from_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = await agent_serving(tmp_path)
        agent.predict({"x": one_hot_rows([2])})
        published(agent)
        agent.serving.swap(None)  # what a rollback does, possibly inside a request
        _, sketches = published(agent)
        assert sketches == []  # sealed only: the sketching waits for the event loop
        await scheduled_callbacks_ran()  # the loop runs the scheduled flush
        _, (sketch,) = published(agent)
        assert (sketch.model_version, sketch.samples) == ("1", 1)

    run(scenario())


class SpyKll:
    """Stands in for kll_floats_sketch in edge_agent.window_sketch and records every update."""

    updates: list[int] = []

    def __init__(self, k: int) -> None:
        self._real = kll_floats_sketch(k)

    def update(self, values: np.ndarray) -> None:
        SpyKll.updates.append(len(values))
        self._real.update(values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_the_request_path_never_calls_datasketches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(window_sketch, "kll_floats_sketch", SpyKll)
    monkeypatch.setattr(sketching, "WAKE_ROWS", 48)  # wake the loop after three full buffers
    SpyKll.updates = []

    async def scenario() -> None:
        agent = await agent_serving(tmp_path, sketch=SketchConfig(buffer_rows=16))
        for c in range(100):  # six buffers fill on the way; their bulk work waits for the loop
            agent.predict({"x": one_hot_rows([c % CLASSES])})
        assert SpyKll.updates == []
        await scheduled_callbacks_ran()  # the drain scheduled at the third buffer runs between requests
        # In bulk: the confidences of all six full buffers in one update (the features wait in a sample).
        assert SpyKll.updates == [96]
        agent._queue_window()
        agent.sketches.flush()
        # At the close: the last rows' confidences, then each feature's whole column at once.
        assert SpyKll.updates == [96, 4] + [100] * CLASSES
        _, (sketch,) = published(agent)
        assert sketch.samples == 100 and all(f.count == 100 for f in sketch.features)

    run(scenario())


# -- SketchRecorder on its own ---------------------------------------------------------------------

REF = ref_for(b"some model", version="7")


def recorder(out: list[sketch_pb2.SketchWindow], **kwargs: Any) -> SketchRecorder:
    return SketchRecorder(specs=lambda model, row: default_spec(row), publish=out.append, **kwargs)


def close(rec: SketchRecorder, seq: int = 5) -> None:
    rec.seal(telemetry_pb2.TelemetryWindow(seq=seq, window_start_ms=1, window_end_ms=2, model_version="7"))


def scores_for(classes: np.ndarray) -> np.ndarray:
    scores: np.ndarray = np.eye(CLASSES, dtype=np.float32)[classes] * 4.0
    return scores


def test_full_buffers_and_large_batches_are_sketched_in_bulk_and_nothing_is_lost() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = recorder(out, buffer_rows=8)
    rng = np.random.default_rng(3)
    x = rng.random((100, 3), dtype=np.float32)
    classes = rng.integers(0, CLASSES, 100)
    for i in range(20):  # one row at a time: two full buffers and a partial one
        rec.record(REF, x[i : i + 1], scores_for(classes[i : i + 1]))
    rec.record(REF, x[20:50], scores_for(classes[20:50]))  # a batch larger than a buffer
    for i in range(50, 100, 5):
        rec.record(REF, x[i : i + 5], scores_for(classes[i : i + 5]))
    rec.drain()
    close(rec)
    assert rec.flush() == 1
    (sketch,) = out
    assert (sketch.seq, sketch.samples, sketch.reduction) == (5, 100, "columns")
    assert list(sketch.class_counts) == list(np.bincount(classes, minlength=CLASSES))
    for index, feature in enumerate(sketch.features):
        column = x[:, index]
        assert feature.count == 100 and (feature.min, feature.max) == (column.min(), column.max())
        assert kll_floats_sketch.deserialize(feature.kll_floats).get_quantile(0.5) == pytest.approx(
            float(np.median(column)), abs=0.02
        )
    assert rec.dropped_rows == 0


def test_when_bulk_work_falls_behind_the_oldest_buffer_is_dropped_and_counted() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = recorder(out, buffer_rows=4, max_pending=2)
    x = np.ones((1, 3), np.float32)
    for _ in range(20):  # five full buffers with no event loop to sketch them
        rec.record(REF, x, scores_for(np.array([1])))
    assert rec.dropped_rows == 8
    close(rec)
    rec.flush()
    assert out[0].samples == 12 and list(out[0].class_counts) == [0, 12, 0, 0]


def test_image_inputs_default_to_one_feature_per_channel() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = recorder(out)
    x = np.zeros((2, 3, 4, 4), np.float32)
    x[:, 1] = 0.5
    x[:, 2] = 1.0
    rec.record(REF, x, scores_for(np.array([0, 1])))
    close(rec)
    rec.flush()
    (sketch,) = out
    assert sketch.reduction == "channel_means"
    assert [(f.name, f.min, f.max) for f in sketch.features] == [
        ("ch0", 0.0, 0.0),
        ("ch1", 0.5, 0.5),
        ("ch2", 1.0, 1.0),
    ]


def test_a_spec_that_does_not_fit_the_inputs_falls_back_to_the_default() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = SketchRecorder(specs=lambda model, row: FeatureSpec("image_summary", (1, 3, 3)), publish=out.append)
    rec.record(REF, np.ones((1, 4), np.float32), scores_for(np.array([0])))
    close(rec)
    rec.flush()
    assert out[0].reduction == "columns" and len(out[0].features) == 4


def test_a_sketch_window_of_100000_samples_takes_at_most_3_kb_per_feature() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = recorder(out, sample_rows=100_000)  # every row into the feature sketches
    rng = np.random.default_rng(4)
    for _ in range(100):
        x = rng.standard_normal((1000, 4)).astype(np.float32)
        rec.record(REF, x, rng.standard_normal((1000, 10)).astype(np.float32))
        rec.drain()
    close(rec)
    rec.flush()
    (sketch,) = out
    assert sketch.samples == 100_000 and len(sketch.features) == 4
    assert all(f.count == 100_000 for f in sketch.features)
    assert max(f.ByteSize() for f in sketch.features) <= 3 * 1024
    # The whole window, with class counts and the confidence sketch, stays within 3 KB a feature.
    assert len(sketch.SerializeToString()) <= 3 * 1024 * len(sketch.features)


def test_a_busy_window_sketches_features_of_a_uniform_sample_and_classes_of_every_row() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = recorder(out, sample_rows=256, buffer_rows=100)
    values = np.arange(10_000, dtype=np.float32)
    classes = np.arange(10_000) % CLASSES
    for i in range(10_000):
        rec.record(REF, values[i : i + 1, None], scores_for(classes[i : i + 1]))
        if i % 100 == 99:
            rec.drain()  # what the event loop does between requests
    # Once the sample is full, rows whose key cannot enter it are not even copied.
    assert rec._threshold < 0.2
    close(rec)
    rec.flush()
    (sketch,) = out
    assert sketch.samples == 10_000 and list(sketch.class_counts) == [2500] * CLASSES
    (feature,) = sketch.features
    assert feature.count == 256
    # A uniform sample of 0..9999: its median lies near the middle (5 sigma either side).
    median = kll_floats_sketch.deserialize(feature.kll_floats).get_quantile(0.5)
    assert 3500 < median < 6500 and feature.min < 1000 and feature.max > 9000


def test_with_sketching_off_only_labels_are_reported() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = recorder(out, sketch_inputs=False)
    scores, index, rows = rec.record(REF, np.ones((1, 3), np.float32), scores_for(np.array([2])))
    assert (int(scores.row(index).argmax()), rows) == (2, 1)  # kept for feedback
    close(rec, seq=1)
    rec.flush()
    assert out == []
    rec.count_label("7", actual=1, predicted=2)
    close(rec, seq=2)
    rec.flush()
    (sketch,) = out
    assert (sketch.seq, sketch.samples, list(sketch.features)) == (2, 0, [])
    ((version, labelled, cells),) = [(lc.model_version, lc.labelled, list(lc.cells)) for lc in sketch.labels]
    assert (version, labelled) == ("7", 1)
    assert [(c.actual, c.predicted, c.count) for c in cells] == [(1, 2, 1)]


def test_top1_takes_probabilities_as_they_are_and_softmaxes_logits() -> None:
    probabilities = np.array([[0.1, 0.7, 0.2]], np.float32)
    logits = np.array([[0.0, np.log(3.0), 0.0]], np.float32)  # softmax: 0.2, 0.6, 0.2
    negative = np.array([[-1.0, 2.0, 0.0]], np.float32)  # sums to 1 but is not a probability vector
    classes, confidence = top1(np.concatenate([probabilities, logits, negative]))
    assert list(classes) == [1, 1, 1]
    expected_negative = 1 / (np.exp(-3.0) + 1 + np.exp(-2.0))
    np.testing.assert_allclose(confidence, [0.7, 0.6, expected_negative], rtol=1e-5)


# -- configuration ----------------------------------------------------------------------------------

MINIMAL = 'device_id = "dev-1"\nfleet = "f1"\nstate_dir = "state"\n'


def test_the_sketch_section_defaults_and_the_example_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL)
    assert load_config(path).sketch == SketchConfig(
        enabled=True, k=200, reduction="", buffer_rows=256, feedback_capacity=10_000, feedback_ttl_s=3600.0
    )
    example = load_config(Path(__file__).resolve().parents[3] / "deploy" / "agent.example.toml")
    assert example.sketch == SketchConfig()
    path.write_text(MINIMAL + '[sketch]\nenabled = false\nk = 400\nreduction = "channel_means"\n')
    loaded = load_config(path).sketch
    assert (loaded.enabled, loaded.k, loaded.reduction) == (False, 400, "channel_means")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("k = 100", "sketch.k: expected 200..65535 (KLL's accuracy parameter), got 100"),
        (
            'reduction = "pixels"',
            "sketch.reduction: expected \"\" (the data profile's) or one of ['columns', ",
        ),
        ("buffer_rows = 0", "sketch.buffer_rows: expected 1..65536, got 0"),
        ("feedback_capacity = 0", "sketch.feedback_capacity: expected >= 1, got 0"),
        ("feedback_ttl_s = 0", "sketch.feedback_ttl_s: expected > 0 seconds, got 0.0"),
        ('enabled = "yes"', "sketch.enabled: expected true or false, got str 'yes'"),
        ("window = 3", "unknown key 'sketch.window' in [sketch]"),
    ],
)
def test_bad_sketch_settings_name_the_key_and_what_came(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL + "[sketch]\n" + section + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_requests_from_many_threads_each_own_their_slot() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = recorder(out, buffer_rows=64)
    clock = FakeClock()
    store = FeedbackStore(capacity=10_000, ttl_s=60.0, clock=clock)
    ids: list[tuple[str, int]] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(1000):
            c = int(rng.integers(0, CLASSES))
            slot = rec.record(REF, np.full((1, 3), c, np.float32), scores_for(np.array([c])))
            pid = store.remember(REF, slot, clock.monotonic())
            with lock:
                ids.append((pid, c))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Every prediction reads back its own answer: no two requests shared a slot.
    assert len({pid for pid, _ in ids}) == 4000
    assert all(store.label(pid, c).correct for pid, c in ids)
    close(rec)
    rec.flush()
    assert out[0].samples == 4000 and sum(out[0].class_counts) == 4000


def test_a_missing_or_damaged_profile_falls_back_to_the_default_features(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    blob = make_profile("image_summary", (1, 2, 2)).SerializeToString()
    good = ref_for(MODEL)
    good.profile.CopyFrom(common_pb2.ArtifactRef(sha256=hashlib.sha256(blob).hexdigest(), length=len(blob)))
    specs = ProfileSpecs(store, override=None)
    assert specs(good, (4,)) == FeatureSpec("columns")  # not in the store (yet): the default
    store.path_for(good.profile.sha256).write_bytes(blob)
    assert ProfileSpecs(store, override=None)(good, (4,)) == FeatureSpec("image_summary", (1, 2, 2))
    assert ProfileSpecs(store, override="channel_means")(good, (4,)) == FeatureSpec(
        "channel_means", (1, 2, 2)
    )
    store.path_for(good.profile.sha256).write_bytes(blob[:-1] + b"\x00")  # the disk rotted
    assert ProfileSpecs(store, override=None)(good, (4,)) == FeatureSpec("columns")
    assert ProfileSpecs(store, override=None)(good, (3, 8, 8)) == FeatureSpec("channel_means")


def test_inputs_without_a_batch_dimension_are_one_row_each() -> None:
    out: list[sketch_pb2.SketchWindow] = []
    rec = recorder(out, buffer_rows=4)
    for c in range(10):
        scores, index, rows = rec.record(
            REF, np.full(3, c, np.float32), scores_for(np.array([c % CLASSES]))[0]
        )
        assert rows == 1 and int(scores.row(index).argmax()) == c % CLASSES
    close(rec)
    rec.flush()
    (sketch,) = out
    assert sketch.samples == 10 and [f.count for f in sketch.features] == [10, 10, 10]
    assert sketch.features[0].max == 9.0
