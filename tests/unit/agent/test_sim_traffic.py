"""Synthetic traffic of a simulated fleet: the rate grid, shift selectors, data files, fitting rows to a
model, feedback sampling, the runner over many devices on a fake clock, and switching the shifts off and
on (SIGUSR1 to a running fleet)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import logging
import os
import random
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.cli import main
from edge_agent.errors import ConfigError, InferenceError, NoModelError
from edge_agent.runtime import OnnxRuntimeModel, RuntimeOptions
from edge_agent.serving import LoadedModel
from edge_agent.sim import SHIFT_SIGNAL, Fleet
from edge_agent.sim_traffic import (
    RateSchedule,
    ShapeMismatchError,
    ShiftKind,
    ShiftRule,
    TrafficData,
    TrafficPlan,
    TrafficRunner,
    TrafficTarget,
    fit_rows,
    parse_shift,
)
from edge_agent.tensors import Array, TensorSpec
from edgefleet_proto.v1 import common_pb2
from tests.loop_turns import scheduled_callbacks_ran
from tests.unit.agent.fakes import IN_FEATURES, linear_model, ref_for

# -- the rate grid ---------------------------------------------------------------------------------


def _count(schedule: RateSchedule, steps: Sequence[float], start: float = 0.0) -> tuple[int, float]:
    """Poll ``schedule`` after each step of fake time; the requests it gave and the time reached."""
    now, sent = start, 0
    for step in steps:
        now += step
        sent += schedule.take_due(now)
    return sent, now


@pytest.mark.parametrize(("rate", "seconds"), [(1.0, 60.0), (5.0, 100.0), (0.2, 500.0), (250.0, 4.0)])
def test_n_requests_in_t_seconds_whatever_the_polling(rate: float, seconds: float) -> None:
    rng = random.Random(3)
    schedule = RateSchedule(rate, 0.0, rng=random.Random(1))
    # Irregular wake-ups, some late by most of a second (still under the skip limit).
    steps: list[float] = []
    while sum(steps) < seconds:
        steps.append(rng.uniform(0.0, 0.9))
    sent, now = _count(schedule, steps)
    assert abs(sent - rate * now) <= 1, (sent, rate * now)
    assert schedule.skipped == 0


def test_slots_keep_to_their_grid_over_a_long_run() -> None:
    rate, jitter = 2.0, 0.5
    schedule = RateSchedule(rate, 100.0, rng=random.Random(7), jitter=jitter)
    fired: list[float] = []
    # Always wake a little late (20 ms), as a busy loop does: lateness must not add up.
    for _ in range(20_000):
        at = schedule.next_at
        assert schedule.take_due(at + 0.02) == 1
        fired.append(at)
    offsets = [t - k / rate for k, t in enumerate(fired)]
    # Every slot within its own jitter window after the phase: the 20,000th as close as the first.
    assert max(offsets) - min(offsets) < jitter / rate
    assert min(offsets) >= 100.0 and max(offsets) < 100.0 + (1 + jitter) / rate
    assert fired == sorted(fired)


def test_a_stalled_loop_skips_what_it_missed_instead_of_a_burst() -> None:
    schedule = RateSchedule(10.0, 0.0, rng=random.Random(2), max_behind_s=1.0)
    assert _count(schedule, [0.5] * 10)[0] in range(49, 52)  # 5 s at 10/s
    burst = schedule.take_due(15.0)  # the loop was blocked for 10 s
    assert burst <= 11  # at most the last second's worth
    assert burst + schedule.skipped in range(99, 102)
    # Afterwards the grid goes on as before.
    sent, _ = _count(schedule, [0.25] * 20, start=15.0)
    assert sent in range(49, 52)


def test_devices_started_together_spread_over_the_first_period() -> None:
    firsts = [RateSchedule(1.0, 0.0, rng=random.Random(i)).next_at for i in range(1000)]
    assert min(firsts) >= 0.0 and max(firsts) < 2.0
    # Tenths of the first second each hold some (no thundering herd at t=0).
    assert len({int(t * 10) for t in firsts}) >= 15


@pytest.mark.parametrize(("rate", "jitter"), [(0.0, 0.5), (-1.0, 0.5), (float("inf"), 0.5), (1.0, 1.0)])
def test_a_schedule_refuses_bad_numbers(rate: float, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"^(rate|jitter) must be"):
        RateSchedule(rate, 0.0, rng=random.Random(), jitter=jitter)


# -- shift selectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("region=north:0.5", ShiftRule((("region", "north"),), ShiftKind.OFFSET, 0.5)),
        ("region=north:-1", ShiftRule((("region", "north"),), ShiftKind.OFFSET, -1.0)),
        ("region=north:scale=1.3", ShiftRule((("region", "north"),), ShiftKind.SCALE, 1.3)),
        ("region=north:offset=2", ShiftRule((("region", "north"),), ShiftKind.OFFSET, 2.0)),
        (
            "ring=canary, region=eu:0.5",
            ShiftRule((("ring", "canary"), ("region", "eu")), ShiftKind.OFFSET, 0.5),
        ),
        ("*:scale=0.5", ShiftRule((), ShiftKind.SCALE, 0.5)),
    ],
)
def test_shift_selectors_parse(text: str, rule: ShiftRule) -> None:
    assert parse_shift(text) == rule


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("region=north", "expected SELECTOR:AMOUNT"),
        (":0.5", "expected SELECTOR:AMOUNT"),
        ("region=north:", "the amount '' is not a finite number"),
        ("region=north:lots", "the amount 'lots' is not a finite number"),
        ("region=north:nan", "the amount 'nan' is not a finite number"),
        ("region=north:tilt=2", "unknown shift 'tilt': expected one of ['offset', 'scale']"),
        ("region:0.5", "the selector item 'region' is not KEY=VALUE"),
        ("=north:0.5", "has an empty key"),
        ("region=:0.5", "has an empty value"),
        ("region=no rth:0.5", "the value 'no rth' may not hold spaces"),
        ("region=a,region=b:0.5", "the selector names 'region' twice"),
    ],
)
def test_bad_shift_selectors_name_the_bad_part(text: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_shift(text)
    assert said in str(caught.value) and str(caught.value).startswith("--shift")


def test_a_selector_matches_devices_that_have_all_its_labels() -> None:
    rule = parse_shift("ring=canary,region=eu:1")
    assert rule.matches({"ring": "canary", "region": "eu", "tier": "x"})
    assert not rule.matches({"ring": "canary", "region": "us"})
    assert not rule.matches({"region": "eu"})
    assert parse_shift("*:1").matches({})


# -- data files and reshaping ----------------------------------------------------------------------


def _npz(path: Path, **arrays: npt.ArrayLike) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_a_data_file_loads_as_float32_rows_and_int_labels(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    data = TrafficData.load(_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2], np.int32)))
    assert data.x.dtype == np.float32 and data.row_shape == (4,)
    assert data.y is not None and data.y.dtype == np.int64 and data.y.tolist() == [0, 1, 2]
    assert not data.x.flags.writeable
    only_x = TrafficData.load(_npz(tmp_path / "x.npz", x=x))
    assert only_x.y is None


@pytest.mark.parametrize(
    ("arrays", "said"),
    [
        ({"rows": np.zeros((2, 2))}, "expected an array named x, found ['rows']"),
        ({"x": np.zeros(4)}, "expected x of shape (N, ...) with N >= 1, got [4]"),
        ({"x": np.zeros((0, 4))}, "expected x of shape (N, ...) with N >= 1, got [0, 4]"),
        (
            {"x": np.zeros((3, 4)), "y": np.zeros(2, np.int64)},
            "expected y of shape [3] (a label per row of x)",
        ),
        ({"x": np.zeros((2, 4)), "y": np.array([0.5, 1.0])}, "expected y to hold whole class ids"),
        ({"x": np.zeros((2, 4)), "y": np.array([1, -1])}, "expected class ids >= 0 in y, found -1"),
        ({"x": np.array([["a", "b"]])}, "expected x to hold numbers"),
    ],
)
def test_bad_data_files_say_what_was_expected(tmp_path: Path, arrays: dict[str, Array], said: str) -> None:
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError) as caught:
        TrafficData.load(path)
    assert said in str(caught.value)


def test_a_missing_or_foreign_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        TrafficData.load(tmp_path / "nope.npz")
    np.save(tmp_path / "one.npy", np.zeros((2, 2)))
    with pytest.raises(ConfigError, match=r"expected an \.npz archive"):
        TrafficData.load(tmp_path / "one.npy")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ConfigError, match=r"cannot read it as an \.npz archive"):
        TrafficData.load(tmp_path / "text.npz")


def test_shifts_move_rows_in_std_units_and_scale_in_the_order_given() -> None:
    x = np.array([[0.0, 10.0, 5.0], [2.0, 10.0, 5.0], [4.0, 10.0, 5.0]], np.float32)
    data = TrafficData(x, None)
    std = x.std(axis=0)  # feature 0: 1.633; features 1 and 2 never vary (std 0: they stay put)
    shifted = data.shifted([parse_shift("*:0.5")])
    np.testing.assert_allclose(shifted, x + 0.5 * std, rtol=1e-6)
    np.testing.assert_allclose(shifted[:, 1:], x[:, 1:])
    both = data.shifted([parse_shift("*:1"), parse_shift("*:scale=2")])
    np.testing.assert_allclose(both, (x + std) * 2, rtol=1e-6)
    np.testing.assert_allclose(data.shifted([parse_shift("*:scale=2"), parse_shift("*:1")]), x * 2 + std)
    assert data.shifted([]) is data.x


class FakeRuntime:
    """A model in memory: declared inputs; answers logits of zeros."""

    def __init__(self, *shapes: tuple[int, ...], dtype: str = "float32") -> None:
        self._inputs = tuple(TensorSpec(f"in{i}", dtype, s) for i, s in enumerate(shapes))

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return (TensorSpec("logits", "float32", (-1, 10)),)

    def predict(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        return {"logits": np.zeros((1, 10), np.float32)}


def _loaded(*shapes: tuple[int, ...], version: str = "1", dtype: str = "float32") -> LoadedModel:
    ref = common_pb2.ModelRef(name="digits", version=version, format="onnx", sha256=version * 64)
    return LoadedModel(ref=ref, runtime=FakeRuntime(*shapes, dtype=dtype))


@pytest.mark.parametrize(
    ("rows", "model", "request_shape"),
    [
        ((64,), (-1, 64), (1, 64)),
        ((64,), (-1, 1, 8, 8), (1, 1, 8, 8)),  # a flat digit into a CNN
        ((8, 8), (-1, 64), (1, 64)),
        ((64,), (1, 64), (1, 64)),
        ((5,), (-1, -1), (1, 5)),  # other dynamic dimensions take the row's
        ((3, 4), (-1, 3, -1), (1, 3, 4)),
        ((4,), (4,), (4,)),  # no batch dimension at all
    ],
)
def test_rows_are_reshaped_to_the_models_input(
    rows: tuple[int, ...], model: tuple[int, ...], request_shape: tuple[int, ...]
) -> None:
    spec, shape = fit_rows(rows, _loaded(model))
    assert shape == request_shape and spec.shape == model


@pytest.mark.parametrize(
    ("rows", "model", "said"),
    [
        (
            (10,),
            (-1, 64),
            "rows have shape [10] (10 values), but model digits:1 takes input 'in0' of shape [-1, 64]",
        ),
        ((64,), (-1, 1, 9, 9), "rows have shape [64] (64 values)"),
        ((6,), (-1, 3, -1, -1), "takes input 'in0' of shape [-1, 3, -1, -1]"),
    ],
)
def test_rows_that_cannot_fit_name_both_shapes(
    rows: tuple[int, ...], model: tuple[int, ...], said: str
) -> None:
    with pytest.raises(ShapeMismatchError) as caught:
        fit_rows(rows, _loaded(model))
    assert said in str(caught.value)


def test_a_model_with_two_inputs_is_refused() -> None:
    with pytest.raises(ShapeMismatchError, match=r"takes 2 inputs \['in0', 'in1'\]: traffic feeds one"):
        fit_rows((4,), _loaded((-1, 4), (-1, 4)))


# -- the runner ------------------------------------------------------------------------------------


class FakeTime:
    """The loop's clock for the runner: ``sleep`` moves fake time on instead of waiting, and parks the
    runner for good once ``until`` is reached (the test then cancels it)."""

    def __init__(self, until: float, start: float = 1000.0) -> None:
        self.now = start
        self.until = start + until
        self.wakeups = 0
        self.reached = asyncio.Event()
        self._marks: dict[float, asyncio.Event] = {}

    async def passed(self, mark: float, timeout: float = 5.0) -> None:
        """Returns once a sleep has moved the fake time to ``mark`` or past it."""
        if self.now < mark:
            await asyncio.wait_for(self._marks.setdefault(mark, asyncio.Event()).wait(), timeout)

    def __call__(self) -> float:
        return self.now

    def extend(self, seconds: float) -> None:
        """Let a runner that reached the end run on for ``seconds`` more (in a fresh event loop)."""
        self.until = self.now + seconds
        self.reached = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.wakeups += 1
        if self.now + seconds >= self.until:
            self.now = self.until
            self.reached.set()
            await asyncio.Future()  # until cancelled
        self.now += seconds
        for mark, passed in list(self._marks.items()):
            if self.now >= mark:
                passed.set()
                del self._marks[mark]
        await scheduled_callbacks_ran()  # a fake sleep still hands the loop a turn, as a real one does


@dataclass(frozen=True)
class FakeAnswer:
    id: str


@dataclass
class FakeDevice:
    """A device in memory: serves ``model`` (None: nothing yet), records what it was asked and told."""

    device_id: str
    model: LoadedModel | None = None
    asked: list[Array] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    refuse_labels: bool = False
    ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def active_model(self) -> LoadedModel | None:
        return self.model

    def predict(self, inputs: Mapping[str, npt.ArrayLike]) -> FakeAnswer:
        if self.model is None:
            raise NoModelError("no model is serving yet")
        self.asked.append(np.asarray(inputs[""]))
        return FakeAnswer(f"{self.device_id}-{next(self.ids)}")

    def feedback(self, prediction_id: str, label: int) -> None:
        if self.refuse_labels:
            raise InferenceError("refused")  # an AgentError, as the agent raises
        self.labels[prediction_id] = label


def _rows(n: int = 50, features: int = 64) -> TrafficData:
    """Row i holds i in every feature (so a request tells which row it was); label i % 10."""
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], features, axis=1)
    return TrafficData(x, np.arange(n, dtype=np.int64) % 10)


def _run(runner: TrafficRunner, clock: FakeTime) -> None:
    async def go() -> None:
        task = asyncio.create_task(runner.run())
        done, _ = await asyncio.wait([task, asyncio.ensure_future(clock.reached.wait())], timeout=60,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        assert done, "the fake clock never reached its end"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(go())


def _always(device: TrafficTarget) -> Callable[[], TrafficTarget]:
    return lambda: device


def _runner(
    devices: Sequence[TrafficTarget],
    plan: TrafficPlan,
    clock: FakeTime,
    labels: Sequence[dict[str, str]] = (),
) -> TrafficRunner:
    return TrafficRunner(
        plan,
        [_always(d) for d in devices],
        list(labels) or [{} for _ in devices],
        now=clock,
        sleep=clock.sleep,
    )


def test_a_thousand_devices_at_one_request_a_second_cost_few_wakeups() -> None:
    devices = [FakeDevice(f"sim-{i:04d}", _loaded((-1, 64))) for i in range(1000)]
    clock = FakeTime(until=20.0)
    runner = _runner(devices, TrafficPlan(rate=1.0, data=_rows(), feedback_rate=0.0), clock)
    _run(runner, clock)
    sent = [len(d.asked) for d in devices]
    assert all(19 <= s <= 21 for s in sent), sorted(set(sent))
    assert runner.stats.sent == sum(sent) and runner.stats.failed == 0
    # One wake-up per 10 ms at most, however many devices: not one per request.
    assert clock.wakeups <= 20.0 / 0.01 + 10
    assert all(a.shape == (1, 64) and a.dtype == np.float32 for a in devices[0].asked)


def test_requests_before_a_model_serves_are_counted_not_raised() -> None:
    device = FakeDevice("sim-0001")
    clock = FakeTime(until=10.0)
    runner = _runner([device], TrafficPlan(rate=5.0, data=_rows()), clock)
    _run(runner, clock)
    assert 49 <= runner.stats.sent <= 51
    assert runner.stats.failed == runner.stats.no_model == runner.stats.sent
    assert runner.stats.labelled == 0
    summary = runner.summary()
    assert f"{runner.stats.sent} requests sent, {runner.stats.sent} failed" in summary
    assert "0 labelled" in summary and "by 1 device in 10.0 s" in summary


def test_rows_that_do_not_fit_stop_that_device_once_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = [FakeDevice(f"sim-000{i}", _loaded((-1, 10))) for i in (1, 2, 3)]
    right = FakeDevice("sim-0004", _loaded((-1, 1, 8, 8)))
    clock = FakeTime(until=10.0)
    runner = _runner([*wrong, right], TrafficPlan(rate=2.0, data=_rows()), clock)
    with caplog.at_level(logging.ERROR, logger="edge_agent.sim_traffic"):
        _run(runner, clock)
    assert all(d.asked == [] for d in wrong)
    assert 19 <= len(right.asked) <= 21 and right.asked[0].shape == (1, 1, 8, 8)
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and "traffic stopped" in errors[0]
    assert "rows have shape [64]" in errors[0] and "shape [-1, 10]" in errors[0]
    assert list(runner.stats.stopped.values()) == [3]
    assert "3 devices stopped: the traffic data's rows have shape [64]" in runner.summary()


def test_a_new_model_with_another_shape_gets_the_rows_reshaped() -> None:
    device = FakeDevice("sim-0001", _loaded((-1, 64)))
    clock = FakeTime(until=10.0)
    runner = _runner([device], TrafficPlan(rate=4.0, data=_rows()), clock)

    async def swap_midway() -> None:
        task = asyncio.create_task(runner.run())
        await clock.passed(clock.until - 5.0)
        device.model = _loaded((-1, 1, 8, 8), version="2")
        await clock.reached.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(swap_midway(), 60))
    shapes = [a.shape for a in device.asked]
    first_new = shapes.index((1, 1, 8, 8))
    assert (
        first_new > 0 and set(shapes[:first_new]) == {(1, 64)} and set(shapes[first_new:]) == {(1, 1, 8, 8)}
    )


def test_shifted_devices_see_shifted_rows_and_the_others_the_file() -> None:
    data = TrafficData(np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32), None)
    north = FakeDevice("sim-0001", _loaded((-1, 64)))
    south = FakeDevice("sim-0002", _loaded((-1, 64)))
    clock = FakeTime(until=5.0)
    plan = TrafficPlan(rate=10.0, data=data, shifts=(parse_shift("region=north:0.5"),))
    runner = _runner([north, south], plan, clock, labels=[{"region": "north"}, {"region": "south"}])
    _run(runner, clock)
    expected_north = data.x + 0.5 * data.x.std(axis=0)
    rows = {tuple(r) for r in data.x}
    assert south.asked and all(tuple(a[0]) in rows for a in south.asked)
    for asked in north.asked:
        assert any(np.allclose(asked[0], r) for r in expected_north)
        assert tuple(asked[0]) not in rows
    assert runner.unmatched_shifts() == []


def test_a_shift_that_selects_no_device_is_reported() -> None:
    plan = TrafficPlan(rate=1.0, data=_rows(), shifts=(parse_shift("region=nowhere:1"),))
    runner = _runner([FakeDevice("sim-0001")], plan, FakeTime(until=1.0), labels=[{"region": "north"}])
    assert [r.describe() for r in runner.unmatched_shifts()] == ["region=nowhere:+1 std"]


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 1.0])
def test_a_share_of_answers_gets_its_true_label_back(rate: float) -> None:
    device = FakeDevice("sim-0001", _loaded((-1, 64)))
    clock = FakeTime(until=200.0)
    runner = _runner([device], TrafficPlan(rate=10.0, data=_rows(), feedback_rate=rate), clock)
    _run(runner, clock)
    sent = len(device.asked)
    labelled = len(device.labels)
    assert runner.stats.labelled == labelled
    # Binomial(2000, rate): 5 standard deviations either way.
    spread = 5 * (sent * rate * (1 - rate)) ** 0.5
    assert abs(labelled - rate * sent) <= spread + 1, (labelled, rate * sent)
    # Each label is the one of the row that was sent (row i holds i, its label is i % 10).
    for prediction_id, label in device.labels.items():
        index = int(prediction_id.rsplit("-", 1)[1])
        assert label == int(device.asked[index][0, 0]) % 10


def test_no_labels_without_y_and_refused_labels_are_counted() -> None:
    unlabelled = TrafficData(_rows().x, None)
    device = FakeDevice("sim-0001", _loaded((-1, 64)))
    clock = FakeTime(until=5.0)
    runner = _runner([device], TrafficPlan(rate=10.0, data=unlabelled, feedback_rate=1.0), clock)
    _run(runner, clock)
    assert device.asked and device.labels == {} and runner.stats.labelled == 0

    refusing = FakeDevice("sim-0002", _loaded((-1, 64)), refuse_labels=True)
    clock = FakeTime(until=5.0)
    runner = _runner([refusing], TrafficPlan(rate=10.0, data=_rows(), feedback_rate=1.0), clock)
    _run(runner, clock)
    assert runner.stats.feedback_failed == len(refusing.asked) > 0
    assert f"{runner.stats.feedback_failed} labels refused" in runner.summary()


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"rate": 0.0}, "expected requests per second > 0"),
        ({"rate": 1.0, "feedback_rate": 1.5}, "expected a share from 0 to 1"),
        ({"rate": 1.0, "jitter": 1.0}, "expected a share of one period in [0, 1)"),
    ],
)
def test_a_plan_refuses_bad_numbers(kwargs: dict[str, float], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrafficPlan(data=_rows(), **kwargs)  # type: ignore[arg-type]
    assert said in str(caught.value)


# -- real agents -----------------------------------------------------------------------------------


def test_real_agents_of_a_fleet_serve_the_traffic_and_count_it(tmp_path: Path) -> None:
    from edge_agent.sim_labels import parse_label_mix

    x = np.random.default_rng(1).normal(size=(30, IN_FEATURES)).astype(np.float32)
    y = np.arange(30, dtype=np.int64) % 2  # the linear model answers two classes
    plan = TrafficPlan(
        rate=20.0, data=TrafficData(x, y), shifts=(parse_shift("region=eu:1"),), feedback_rate=1.0
    )
    fleet = Fleet(
        2,
        tmp_path,
        "lab",
        local_api_devices=0,
        label_mix=parse_label_mix("region=eu:50,region=us:50"),
        traffic=plan,
    )
    assert fleet.traffic is not None
    onnx_bytes = linear_model(1.0)
    (tmp_path / "m.onnx").write_bytes(onnx_bytes)
    runtime = OnnxRuntimeModel.load(tmp_path / "m.onnx", RuntimeOptions())
    fleet.agents[0].serving.swap(
        LoadedModel(ref=ref_for(onnx_bytes), runtime=runtime)
    )  # the second serves none
    clock = FakeTime(until=2.0)
    fleet.traffic._now, fleet.traffic._sleep = clock, clock.sleep  # the fake clock, after the real wiring
    _run(fleet.traffic, clock)
    first, second = (a.telemetry.requests for a in fleet.agents)
    assert 39 <= first <= 41 and 39 <= second <= 41
    assert fleet.agents[0].telemetry.errors == 0 and fleet.agents[1].telemetry.errors == second
    stats = fleet.traffic.stats
    assert stats.sent == first + second and stats.no_model == second
    # Every answer was labelled through the agent's own feedback (feedback_rate 1).
    assert stats.labelled == first and stats.feedback_failed == 0
    for agent in fleet.agents:
        agent.outbox.close()


# -- the command line ------------------------------------------------------------------------------


def test_simulate_checks_its_traffic_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["simulate", "--fleet", "f", "--state-root", str(tmp_path / "fleet"), "--check"]
    data = _npz(tmp_path / "d.npz", x=np.zeros((3, 64), np.float32), y=np.zeros(3, np.int64))
    assert (
        main([*base, "--traffic-rate", "1", "--traffic-data", str(data), "--shift", "region=eu:scale=2"]) == 0
    )
    cases = [
        (["--traffic-rate", "1"], "--traffic-rate needs --traffic-data PATH.npz"),
        (["--traffic-data", str(data)], "take effect with --traffic-rate R > 0"),
        (["--traffic-rate", "1", "--traffic-data", str(tmp_path / "no.npz")], "no such file"),
        (["--traffic-rate", "-2"], "expected requests per second >= 0, got '-2'"),
        (["--feedback-rate", "1.5"], "expected a share from 0 to 1, got '1.5'"),
        (["--shift", "region:1"], "the selector item 'region' is not KEY=VALUE"),
    ]
    for args, said in cases:
        with pytest.raises(SystemExit) as exited:
            main([*base, *args])
        assert exited.value.code == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "fleet").exists()


def test_the_summary_line_goes_to_stderr_when_the_fleet_stops(tmp_path: Path) -> None:
    plan = TrafficPlan(rate=1.0, data=_rows(4, IN_FEATURES))
    fleet = Fleet(1, tmp_path, "lab", local_api_devices=0, mqtt_port=9, traffic=plan)
    err = io.StringIO()

    async def go() -> None:
        stop = asyncio.Event()
        stop.set()  # stopped at once: the summary still comes
        await fleet.run(stop, out=io.StringIO(), err=err)

    asyncio.run(asyncio.wait_for(go(), 30))
    assert err.getvalue().startswith("traffic: ") and "requests sent" in err.getvalue()
    assert err.getvalue().count("\n") == 1


# -- switching the shifts off and on ---------------------------------------------------------------


def _kinds(asked: Sequence[Array], rows: set[tuple[float, ...]], moved: set[tuple[float, ...]]) -> set[str]:
    """Which rows a device was sent: the file's own, the shifted ones, or something else."""
    return {"file" if tuple(a[0]) in rows else "shifted" if tuple(a[0]) in moved else "other" for a in asked}


def test_paused_shifts_apply_only_while_switched_on() -> None:
    data = TrafficData(np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32), None)
    shift = parse_shift("region=north:0.5")
    rows, moved = {tuple(r) for r in data.x}, {tuple(r) for r in data.shifted([shift])}
    assert not rows & moved
    north = FakeDevice("sim-0001", _loaded((-1, 64)))
    south = FakeDevice("sim-0002", _loaded((-1, 64)))
    clock = FakeTime(until=5.0)
    plan = TrafficPlan(rate=10.0, data=data, shifts=(shift,), shift_paused=True)
    runner = _runner([north, south], plan, clock, labels=[{"region": "north"}, {"region": "south"}])
    assert (runner.shift_on, runner.shifted_devices()) == (False, 0)

    seen: list[tuple[set[str], set[str]]] = []
    for switch in (None, runner.toggle_shift, runner.toggle_shift):
        if switch is not None:
            switch()
            clock.extend(5.0)
        n, s = len(north.asked), len(south.asked)
        _run(runner, clock)
        assert len(north.asked) > n and len(south.asked) > s
        seen.append((_kinds(north.asked[n:], rows, moved), _kinds(south.asked[s:], rows, moved)))
    # Paused, switched on, switched off: only the selected device's rows move, and only while on.
    assert seen == [({"file"}, {"file"}), ({"shifted"}, {"file"}), ({"file"}, {"file"})]
    assert (runner.shift_on, runner.shifted_devices()) == (False, 0)


def test_shifts_that_start_on_switch_off_first() -> None:
    plan = TrafficPlan(rate=1.0, data=_rows(), shifts=(parse_shift("region=north:1"),))
    devices = [FakeDevice(f"sim-000{i}") for i in (1, 2, 3)]
    labels = [{"region": "north"}, {"region": "north"}, {"region": "south"}]
    runner = _runner(devices, plan, FakeTime(until=1.0), labels=labels)
    assert (runner.shift_on, runner.shifted_devices()) == (True, 2)
    assert (runner.toggle_shift(), runner.shift_on) == (0, False)
    assert (runner.toggle_shift(), runner.shift_on) == (2, True)
    assert (runner.set_shift(True), runner.shift_on) == (2, True)  # setting what is set changes nothing


def _north_south_fleet(base: Path, plan: TrafficPlan, devices: int = 4) -> Fleet:
    from edge_agent.sim_labels import parse_label_mix

    mix = parse_label_mix("region=north:50,region=south:50")
    return Fleet(devices, base, "lab", local_api_devices=0, mqtt_port=9, label_mix=mix, traffic=plan)


def test_the_fleet_says_each_switch_in_the_log_and_as_a_json_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    north = (parse_shift("region=north:1"),)
    plan = TrafficPlan(rate=1.0, data=_rows(4, IN_FEATURES), shifts=north, shift_paused=True)
    fleet = _north_south_fleet(tmp_path / "a", plan)
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="edge_agent.sim"):
        fleet.toggle_shift(out)
        fleet.toggle_shift(out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"event": "shift", "on": True, "devices": 2},
        {"event": "shift", "on": False, "devices": 0},
    ]
    said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.sim"]
    assert said == ["input shift on: 2 devices shifted", "input shift off"]

    # With no shift to switch, the signal is refused in the log and nothing is printed.
    caplog.clear()
    unshifted = _north_south_fleet(tmp_path / "b", TrafficPlan(rate=1.0, data=_rows(4, IN_FEATURES)), 1)
    quiet = io.StringIO()
    with caplog.at_level(logging.INFO, logger="edge_agent.sim"):
        unshifted.toggle_shift(quiet)
    assert quiet.getvalue() == ""
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "edge_agent.sim"] == [
        (logging.WARNING, "SIGUSR1 ignored: the fleet runs no --shift to switch")
    ]
    for agent in [*fleet.agents, *unshifted.agents]:
        agent.outbox.close()


class LineQueue(io.StringIO):
    """A stand-in for stdout that hands each complete line to a queue, as a script reading the pipe
    gets them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self._partial = ""

    def write(self, text: str) -> int:
        *complete, self._partial = (self._partial + text).split("\n")
        for line in complete:
            self.lines.put_nowait(line)
        return len(text)


def test_sigusr1_switches_the_shift_of_a_running_fleet(tmp_path: Path) -> None:
    north = (parse_shift("region=north:1"),)
    plan = TrafficPlan(rate=1.0, data=_rows(4, IN_FEATURES), shifts=north, shift_paused=True)
    fleet = _north_south_fleet(tmp_path, plan)  # no broker on port 9: the agents keep trying, the fleet runs
    assert fleet.traffic is not None
    out = LineQueue()
    got: list[dict[str, object]] = []

    async def go() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(fleet.run(stop, out=out, err=io.StringIO()))
        await scheduled_callbacks_ran()  # run() puts its handler in place before it first yields
        # Checked before sending: with the default action the signal would end the test process.
        assert signal.getsignal(SHIFT_SIGNAL) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        try:
            for _ in range(2):
                os.kill(os.getpid(), SHIFT_SIGNAL)
                got.append(json.loads(await asyncio.wait_for(out.lines.get(), 10)))
                assert fleet.traffic is not None and fleet.traffic.shift_on is got[-1]["on"]
        finally:
            stop.set()
            await running

    asyncio.run(asyncio.wait_for(go(), 60))
    assert got == [
        {"event": "shift", "on": True, "devices": 2},
        {"event": "shift", "on": False, "devices": 0},
    ]
    assert signal.getsignal(SHIFT_SIGNAL) == signal.SIG_DFL  # handed back once the fleet stopped


def test_shift_paused_is_checked_and_reaches_the_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _npz(tmp_path / "d.npz", x=np.zeros((3, 64), np.float32))
    base = ["simulate", "--fleet", "f", "--state-root", str(tmp_path / "fleet"), "--unsigned"]
    traffic = ["--traffic-rate", "1", "--traffic-data", str(data)]
    assert main([*base, *traffic, "--shift", "region=eu:1", "--shift-paused", "--check"]) == 0
    cases = [
        (
            [*traffic, "--shift-paused"],
            "--shift-paused holds back --shift rules: expected at least one --shift",
        ),
        (["--shift", "region=eu:1", "--shift-paused"], "take effect with --traffic-rate R > 0"),
    ]
    for args, said in cases:
        with pytest.raises(SystemExit) as exited:
            main([*base, *args, "--check"])
        assert exited.value.code == 2
        assert said in capsys.readouterr().err

    # Run for real, with a fake fleet in place of the agents: the plan it gets starts unshifted.
    plans: list[TrafficPlan | None] = []

    async def fake_run_fleet(*args: object, traffic: TrafficPlan | None = None, **kwargs: object) -> None:
        plans.append(traffic)

    monkeypatch.setattr("edge_agent.sim.run_fleet", fake_run_fleet)
    monkeypatch.setattr("edge_agent.cli.configure_logging", lambda level: None)  # leave pytest's logging be
    for paused in (["--shift-paused"], []):
        assert main([*base, *traffic, "--shift", "region=eu:1", *paused]) == 0
    assert [(p.shifts, p.shift_paused) for p in plans if p is not None] == [
        ((parse_shift("region=eu:1"),), True),
        ((parse_shift("region=eu:1"),), False),
    ]
    assert len(plans) == 2
